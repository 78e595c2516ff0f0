"""The cold tier: entries written once, atomically, verified with their CRC, deleted with the video; the feature
cache and the video bytes on top of it, with Redis (single and cluster) or memory as the hot tier."""

from __future__ import annotations

import os
import time
import zlib

import pytest

from service.contract.keys import Keys
from service.contract.metrics import COLD_HITS, COLD_MISSES, HOT_HITS, HOT_MISSES, MetricsBatch, sample
from service.contract.schemas import Status, VideoRecord
from service.store.chunks import Header
from service.store.cold import DirColdStore
from service.store.cold_records import ColdBackedRecords
from service.store.features import FeatureCache
from service.store.memory import MemoryChunkStore, MemoryRecords
from service.store.redis_chunks import RedisChunkStore
from service.store.redis_records import RedisRecords
from service.store.videos import VideoBlobs

from service_helpers import CLUSTER, SINGLE, redis_client, redis_prefix, redis_server, redis_target  # noqa: F401 - fixtures
from service_helpers import sample_features as features

CHUNK = 1024
VIDEO = "ab" * 32


def cold_store(tmp_path, corrupted: list | None = None) -> DirColdStore:
    return DirColdStore(tmp_path / "cold", "p", CHUNK,
                        on_corrupt=(lambda n, why: corrupted.append(why)) if corrupted is not None else None)


def counted(batch: MetricsBatch, name: str, kind: str = "features") -> float:
    return batch.values.get(sample(name, kind=kind), 0.0)


# ---------------------------------------------------------------------------------------------------- the store


def test_an_entry_is_one_file_payload_first_with_its_header_and_crc(tmp_path) -> None:
    cold = cold_store(tmp_path)
    payload = bytes(range(256)) * 20 + b"tail"
    header = cold.put(VIDEO, "blob", [payload[:1000], payload[1000:]], {"video_id": VIDEO})
    assert header.crc32 == zlib.crc32(payload) and header.total_bytes == len(payload)
    path = cold.path(VIDEO, "blob")
    assert path.read_bytes()[:len(payload)] == payload  # the bytes as uploaded, from byte 0 (Range reads)
    assert cold.get(VIDEO, "blob") == ({"video_id": VIDEO}, payload)
    assert cold.exists(VIDEO, "blob") and cold.names(VIDEO) == {"blob"}
    assert path.parent == tmp_path / "cold" / "p" / VIDEO[:2] / VIDEO
    with open(tmp_path / "out", "wb") as f:
        assert cold.get_to_file(VIDEO, "blob", f) == {"video_id": VIDEO}
    assert (tmp_path / "out").read_bytes() == payload
    assert cold.get(VIDEO, "other") is None and cold.get("cd" * 32, "blob") is None


def test_entries_are_written_once(tmp_path) -> None:
    cold = cold_store(tmp_path)
    first = cold.put(VIDEO, "feat-x", [b"a" * 3000], {"n": 1})
    again = cold.put(VIDEO, "feat-x", [b"b" * 10], {"n": 2})  # a second writer of the same entry keeps the first
    assert again == first and cold.get(VIDEO, "feat-x") == ({"n": 1}, b"a" * 3000)


def test_a_writer_that_fails_midway_leaves_nothing(tmp_path) -> None:
    cold = cold_store(tmp_path)

    def pieces():
        yield b"x" * 5000
        raise OSError("disk full")

    with pytest.raises(OSError):
        cold.put(VIDEO, "blob", pieces(), {})
    assert not cold.exists(VIDEO, "blob") and cold.get(VIDEO, "blob") is None
    assert not [p for p in (tmp_path / "cold").rglob("*") if p.is_file()]  # no temporary file left either


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "append", "bad_trailer", "bad_magic"])
def test_a_damaged_entry_is_a_miss_reported_and_deleted(tmp_path, damage) -> None:
    corrupted: list[str] = []
    cold = cold_store(tmp_path, corrupted)
    cold.put(VIDEO, "feat-x", [bytes(range(256)) * 10], {"a": 1})
    path = cold.path(VIDEO, "feat-x")
    data = bytearray(path.read_bytes())
    if damage == "flip_byte":
        data[100] ^= 0xFF
    elif damage == "truncate":
        del data[50:60]
    elif damage == "append":
        data += b"junk"
    elif damage == "bad_trailer":
        data[-4:] = (10**6).to_bytes(4, "big")
    elif damage == "bad_magic":
        data[2560:2564] = b"XXXX"  # the header starts right after the 2560 payload bytes
    path.write_bytes(bytes(data))
    assert cold.get(VIDEO, "feat-x") is None
    assert corrupted and not cold.exists(VIDEO, "feat-x")
    cold.put(VIDEO, "feat-x", [b"fresh"], {})  # and it can be written again
    assert cold.get(VIDEO, "feat-x") == ({}, b"fresh")


def test_deleting_a_video_removes_its_folder(tmp_path) -> None:
    cold = cold_store(tmp_path)
    cold.put(VIDEO, "blob", [b"v"], {})
    cold.put(VIDEO, "feat-a", [b"f"], {})
    cold.put_record(VIDEO, {"video_id": VIDEO})
    cold.delete(VIDEO, "blob")
    assert cold.names(VIDEO) == {"feat-a"} and cold.get_record(VIDEO) == {"video_id": VIDEO}
    cold.delete_video(VIDEO)
    assert not cold.folder(VIDEO).exists() and cold.last_used(VIDEO) is None
    cold.put(VIDEO, "feat-a", [b"f"], {})
    cold.delete(VIDEO, "feat-a")  # the last entry takes the folder with it
    assert not cold.folder(VIDEO).exists()


def test_sweeping_removes_videos_unused_for_their_lifetime(tmp_path) -> None:
    cold = cold_store(tmp_path)
    old, recent = "0a" * 32, "0b" * 32
    for video in (old, recent):
        cold.put(video, "blob", [b"v"], {})
    leftover = cold.folder(recent) / "blob.r2ck.tmp-1-dead"  # a writer that died
    leftover.write_bytes(b"partial")
    long_ago = time.time() - 7200
    os.utime(leftover, (long_ago, long_ago))
    os.utime(cold.folder(old), (long_ago, long_ago))
    cold.touch(recent)
    assert cold.sweep(max_idle_s=3600) == 1
    assert cold.last_used(old) is None and cold.get(recent, "blob") == ({}, b"v") and not leftover.exists()


# ---------------------------------------------------------------------------------------------------- features


@pytest.mark.redis
@pytest.mark.parametrize("hot", ["single", "cluster", "memory"])
def test_features_missing_from_the_hot_tier_come_from_the_cold_one(redis_prefix, tmp_path, hot) -> None:  # noqa: F811
    prefix = redis_prefix
    store = (MemoryChunkStore(CHUNK, capacity_bytes=1 << 20) if hot == "memory"
             else RedisChunkStore(redis_client(CLUSTER if hot == "cluster" else SINGLE), CHUNK))
    cache = FeatureCache(store, Keys(prefix), ttl_s=60, cold=cold_store(tmp_path))
    entry = features()
    cache.put(VIDEO, "fid", entry)
    assert cache.cold.exists(VIDEO, "feat-fid")  # written to both tiers
    counts = MetricsBatch()
    assert cache.get(VIDEO, "fid", counts) == entry and counted(counts, HOT_HITS) == 1

    name = Keys(prefix).features(VIDEO, "fid")
    store.delete(name)  # evicted from the hot tier
    counts = MetricsBatch()
    assert cache.get(VIDEO, "fid", counts) == entry  # from the cold tier: no decoding
    assert (counted(counts, HOT_MISSES), counted(counts, COLD_HITS)) == (1, 1)
    assert store.exists(name)  # and hot again
    counts = MetricsBatch()
    assert cache.get(VIDEO, "fid", counts) == entry and counted(counts, HOT_HITS) == 1

    assert cache.exists(VIDEO, "fid")
    store.delete(name)
    store.index_drop(Keys(prefix).feature_ids(VIDEO))  # the hot index is gone too
    assert cache.exists(VIDEO, "fid")  # the cold copy counts
    assert cache.delete_video(VIDEO) == 1
    assert not cache.exists(VIDEO, "fid") and cache.cold.names(VIDEO) == set()
    counts = MetricsBatch()
    assert cache.get(VIDEO, "fid", counts) is None and counted(counts, COLD_MISSES) == 1


@pytest.mark.redis
def test_a_full_redis_keeps_features_in_the_cold_tier(tmp_path) -> None:
    """Redis at maxmemory with nothing it may evict refuses the hot copy: the features are still served."""
    with redis_server(tmp_path / "redis", "--maxmemory-policy", "noeviction") as url:
        client = redis_client_for(url)
        client.set("ballast", b"\0" * (3 << 20))
        client.config_set("maxmemory", 2 << 20)  # over maxmemory already: every write is refused
        cache = FeatureCache(RedisChunkStore(client, CHUNK), Keys("p"), ttl_s=60, cold=cold_store(tmp_path))
        cache.put(VIDEO, "fid", features())
        counts = MetricsBatch()
        assert cache.get(VIDEO, "fid", counts) == features() and counted(counts, COLD_HITS) == 1
        assert client.dbsize() == 1  # nothing but the ballast: no partial hot copy left behind
        client.close()


def redis_client_for(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5)


# ---------------------------------------------------------------------------------------------------- video bytes


@pytest.mark.redis
def test_with_a_cold_tier_video_bytes_stay_out_of_redis(redis_prefix, redis_target, tmp_path) -> None:  # noqa: F811
    store = RedisChunkStore(redis_client(redis_target), CHUNK)
    blobs = VideoBlobs(store, Keys(redis_prefix), ttl_s=60, cold=cold_store(tmp_path))
    source = tmp_path / "v.mp4"
    source.write_bytes(os.urandom(5000))
    blobs.put_file(VIDEO, source)
    assert blobs.exists(VIDEO) and not store.exists(Keys(redis_prefix).blob(VIDEO))
    counts = MetricsBatch()
    assert blobs.fetch_to(VIDEO, tmp_path / "out", counts) and (tmp_path / "out").read_bytes() == source.read_bytes()
    assert counted(counts, COLD_HITS, "video") == 1
    blobs.delete(VIDEO)
    assert not blobs.exists(VIDEO) and not blobs.fetch_to(VIDEO, tmp_path / "out")


# ---------------------------------------------------------------------------------------------------- records


def ready(video_id: str = VIDEO) -> VideoRecord:
    return VideoRecord(video_id=video_id, model="tiny", size_bytes=10, status=Status.ready, duration=6.0,
                       num_clips=3, clip_seconds=2.0)


@pytest.mark.redis
def test_a_record_redis_lost_is_restored_from_the_cold_tier(redis_prefix, redis_target, tmp_path) -> None:  # noqa: F811
    inner = RedisRecords(redis_client(redis_target), Keys(redis_prefix))
    cold = cold_store(tmp_path)
    records = ColdBackedRecords(inner, cold, video_ttl_s=600)
    assert records.create_video(VideoRecord(video_id=VIDEO, model="tiny", size_bytes=10), 600)
    assert cold.get_record(VIDEO)["status"] == "queued"
    inner.delete_video(VIDEO)  # evicted under maxmemory while queued
    assert records.get_video(VIDEO).status == Status.queued  # restored
    assert records.update_video(VIDEO, progress=0.5)
    assert cold.get_record(VIDEO)["progress"] == 0.0  # a progress update is not worth a cold write
    inner.delete_video(VIDEO)  # evicted again, then the worker finishes: the update lands all the same
    assert records.update_video(VIDEO, status=Status.ready, duration=6.0, num_clips=3, clip_seconds=2.0)
    assert cold.get_record(VIDEO)["status"] == "ready"

    inner.delete_video(VIDEO)
    restored = records.get_video(VIDEO)
    assert restored.status == Status.ready and restored.num_clips == 3
    assert inner.get_video(VIDEO) == restored  # back in Redis, with a TTL
    assert 0 < inner.client.ttl(Keys(redis_prefix).video(VIDEO)) <= 600
    assert records.delete_video(VIDEO) and records.get_video(VIDEO) is None and cold.get_record(VIDEO) is None
    assert not records.update_video(VIDEO, status=Status.ready)  # a deleted video is never resurrected


def test_a_cold_record_past_the_video_lifetime_is_not_restored(tmp_path) -> None:
    cold = cold_store(tmp_path)
    records = ColdBackedRecords(MemoryRecords(), cold, video_ttl_s=60)
    cold.put_record(VIDEO, ready().model_dump(mode="json"))
    long_ago = time.time() - 3600
    os.utime(cold.folder(VIDEO), (long_ago, long_ago))
    assert records.get_video(VIDEO) is None  # expired with its Redis record
    assert cold.last_used(VIDEO) is None  # and removed
    cold.put_record("cd" * 32, ready("cd" * 32).model_dump(mode="json"))
    assert records.get_video("cd" * 32).status == Status.ready  # a live one is


def test_header_trailer_layout_is_the_chunk_format(tmp_path) -> None:
    cold = cold_store(tmp_path)
    cold.put(VIDEO, "blob", [b"12345"], {"k": "v"})
    data = cold.path(VIDEO, "blob").read_bytes()
    head_len = int.from_bytes(data[-4:], "big")
    header = Header.unpack(data[5:-4])
    assert len(data) == 5 + head_len + 4 and header.meta == {"k": "v"} and header.crc32 == zlib.crc32(b"12345")


def test_embedded_mode_with_a_cold_dir_keeps_videos_across_restarts(tmp_path) -> None:
    from service.contract.settings import Settings
    from service.store.backend import open_backend

    settings = Settings(cold_dir=tmp_path / "cold", upload_dir=tmp_path / "up", key_prefix="e")
    backend = open_backend(settings)
    source = tmp_path / "v.mp4"
    source.write_bytes(b"video bytes" * 100)
    backend.videos.put_file(VIDEO, source)
    backend.records.create_video(ready(), settings.video_ttl_s)
    backend.features.put(VIDEO, "fid", features())
    backend.close()

    again = open_backend(settings)  # a new process: nothing in memory
    assert again.records.get_video(VIDEO).status == Status.ready
    assert again.features.get(VIDEO, "fid") == features()
    assert again.videos.fetch_to(VIDEO, tmp_path / "out") and (tmp_path / "out").read_bytes() == source.read_bytes()
    again.close()
    assert (tmp_path / "cold").exists()  # a configured cold dir is kept at exit


def test_embedded_mode_without_a_cold_dir_removes_its_folder_at_exit(tmp_path) -> None:
    from service.contract.settings import Settings
    from service.store.backend import open_backend

    backend = open_backend(Settings(upload_dir=tmp_path))
    backend.features.put(VIDEO, "fid", features())
    folder = backend.scratch
    assert folder is not None and any(folder.rglob("feat-*.r2ck"))
    backend.close()
    assert not folder.exists()
