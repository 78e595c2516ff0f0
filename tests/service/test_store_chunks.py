"""The feature cache and video store: chunked values with a verified header; damage reads as a miss."""

from __future__ import annotations

import struct
import zlib

import pytest

from service.contract.keys import Keys
from service.store.chunks import ChunkStore, Header
from service.store.features import FeatureCache
from service.store.memory import MemoryChunkStore
from service.store.redis_chunks import RedisChunkStore
from service.store.videos import VideoBlobs

from service_helpers import SINGLE, RedisTarget, redis_client, redis_prefix, redis_target  # noqa: F401 - fixtures
from service_helpers import sample_features as features

CHUNK = 1024


def redis_cache(prefix: str, corrupted: list, target: RedisTarget = SINGLE) -> tuple[FeatureCache, RedisChunkStore]:
    store = RedisChunkStore(redis_client(target), CHUNK, on_corrupt=lambda name, why: corrupted.append(why))
    return FeatureCache(store, Keys(prefix), ttl_s=60), store


@pytest.mark.redis
def test_round_trip_in_chunks_with_header_and_ttl(redis_prefix, redis_target) -> None:  # noqa: F811
    cache, store = redis_cache(redis_prefix, [], redis_target)
    entry = features()
    cache.put("vid", "fid", entry)
    assert cache.get("vid", "fid") == entry
    assert cache.get("vid", "other-feature-id") is None
    name = Keys(redis_prefix).features("vid", "fid")
    header = Header.unpack(store.client.get(name))
    assert header.num_chunks == -(-len(entry.data) // CHUNK) > 1
    assert header.crc32 == zlib.crc32(entry.data)
    assert header.meta["dtype"] == "float16" and header.meta["shape"] == list(entry.shape)
    assert 0 < store.client.ttl(name) <= 60
    assert all(store.client.ttl(Keys.chunk(name, i)) > 60 for i in range(header.num_chunks))  # outlive header


@pytest.mark.redis
@pytest.mark.parametrize("damage", ["flip_byte", "truncate_chunk", "drop_chunk", "bad_magic", "short_header",
                                    "shape_mismatch"])
def test_damaged_entry_is_a_miss_and_is_deleted(redis_prefix, redis_target, damage) -> None:  # noqa: F811
    corrupted: list[str] = []
    cache, store = redis_cache(redis_prefix, corrupted, redis_target)
    cache.put("vid", "fid", features())
    name = Keys(redis_prefix).features("vid", "fid")
    client = store.client
    if damage == "flip_byte":
        chunk = bytearray(client.get(Keys.chunk(name, 1)))
        chunk[10] ^= 0xFF
        client.set(Keys.chunk(name, 1), bytes(chunk))
    elif damage == "truncate_chunk":
        client.set(Keys.chunk(name, 2), client.get(Keys.chunk(name, 2))[:-5])
    elif damage == "drop_chunk":
        client.delete(Keys.chunk(name, 0))
    elif damage == "bad_magic":
        client.set(name, b"XXXX" + client.get(name)[4:])
    elif damage == "short_header":
        client.set(name, b"R2CK\x00")
    elif damage == "shape_mismatch":  # a valid envelope whose meta does not describe its payload
        raw = client.get(name)
        header = Header.unpack(raw)
        meta = {**header.meta, "shape": [9, 9, 9, 9]}
        client.set(name, Header(header.total_bytes, header.chunk_bytes, header.num_chunks, header.crc32,
                                meta).pack())
    assert cache.get("vid", "fid") is None
    if damage == "drop_chunk":  # what maxmemory eviction leaves behind: a miss, not corruption
        assert not corrupted, "an evicted chunk was reported as corruption"
    else:
        assert corrupted, "the damage was not reported"
    assert not list(client.scan_iter(match=f"{name}*")), "the damaged entry was not deleted"
    cache.put("vid", "fid", features())  # and the next store works again
    assert cache.get("vid", "fid") == features()


@pytest.mark.redis
def test_delete_video_removes_all_its_feature_entries(redis_prefix, redis_target) -> None:  # noqa: F811
    cache, store = redis_cache(redis_prefix, [], redis_target)
    cache.put("vid", "clip-a", features())
    cache.put("vid", "clip-b", features(seed=2))
    cache.put("other", "clip-a", features(seed=3))
    assert cache.delete_video("vid") == 2
    assert cache.get("vid", "clip-a") is None and cache.get("vid", "clip-b") is None
    assert cache.get("other", "clip-a") == features(seed=3)
    keys = Keys(redis_prefix)
    assert not list(store.client.scan_iter(match=f"{keys.feature_ids('vid').rsplit(':', 1)[0]}*"))  # no leftovers


@pytest.mark.redis
def test_video_bytes_round_trip_through_redis(redis_prefix, redis_target, tmp_path) -> None:  # noqa: F811
    store = RedisChunkStore(redis_client(redis_target), CHUNK)
    blobs = VideoBlobs(store, Keys(redis_prefix), ttl_s=60)
    source = tmp_path / "v.bin"
    source.write_bytes(bytes(range(256)) * 40 + b"tail")
    blobs.put_file("vid", source)
    assert blobs.exists("vid")
    out = tmp_path / "out.bin"
    assert blobs.fetch_to("vid", out) and out.read_bytes() == source.read_bytes()
    blobs.delete("vid")
    assert not blobs.exists("vid") and not blobs.fetch_to("vid", out)
    assert not list(store.client.scan_iter(match=f"{redis_prefix}:*"))


def test_embedded_memory_store_round_trips_and_detects_damage() -> None:
    corrupted: list[str] = []
    store: ChunkStore = MemoryChunkStore(CHUNK, capacity_bytes=1 << 20,
                                         on_corrupt=lambda name, why: corrupted.append(why))
    cache = FeatureCache(store, Keys("m"), ttl_s=60)
    entry = features()
    cache.put("vid", "fid", entry)
    assert cache.get("vid", "fid") == entry
    name = Keys("m").features("vid", "fid")
    store._chunks[name][1] = b"\x00" * CHUNK
    assert cache.get("vid", "fid") is None
    assert corrupted and not store.exists(name)


def test_memory_store_evicts_least_recently_used() -> None:
    store = MemoryChunkStore(CHUNK, capacity_bytes=5000)
    for i in range(3):
        store.put(f"e{i}", [bytes(2000)], {}, ttl_s=60)
    assert not store.exists("e0") and store.exists("e1") and store.exists("e2")


def test_header_refuses_inconsistent_counts() -> None:
    good = Header(10_000, CHUNK, 10, 0, {}).pack()
    assert Header.unpack(good).num_chunks == 10
    bad = bytearray(good)
    struct.pack_into(">I", bad, 20, 3)  # chunk count no longer covers the payload
    with pytest.raises(ValueError):
        Header.unpack(bytes(bad))
