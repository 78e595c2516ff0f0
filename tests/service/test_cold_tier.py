"""Redis with ``maxmemory`` below the library's feature size: every ready video still answers, from the cold tier.

A Redis of its own (``maxmemory-policy volatile-lru``, as docs/scaling.md prescribes) whose memory limit is set
below the encoded features of the videos uploaded to it, so Redis evicts hot copies while they are written. A
fresh worker (no adapter state in memory) then answers a query on every video; ``/metrics`` shows where the
features came from: Redis (hot hits), the cold tier (cold hits), or decoding again (feature-cache misses).
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis

from service_helpers import (
    api_process,
    assert_same_answers,
    direct_answers,
    make_video,
    metric,
    redis_server,
    service_env,
    wait_until,
    worker_process,
    write_registry,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

VIDEOS = 8
SECONDS = 120  # 60 clips of the tiny model: about 300 KB of features per video


def test_with_maxmemory_below_the_features_every_ready_video_answers_from_the_cold_tier(tmp_path) -> None:
    registry = write_registry(tmp_path)
    cold = tmp_path / "cold"
    videos = [make_video(tmp_path / f"v{i}.mp4", seconds=SECONDS, fps=1, seed=20 + i) for i in range(VIDEOS)]
    with redis_server(tmp_path / "redis", "--maxmemory-policy", "volatile-lru", "--maxmemory-samples", "10") as url:
        client = redis.Redis.from_url(url, socket_timeout=10)
        env = service_env(f"r2test-{uuid.uuid4().hex[:10]}", registry, cold_dir=cold)
        env["REDIS_URL"] = url
        worker = worker_process(env, tmp_path, "worker-1")
        try:
            with api_process(env, tmp_path) as (_, base), httpx.Client(base_url=base, timeout=90) as http:
                wait_until(lambda: http.get("/readyz").status_code == 200, 120, "a ready worker", 0.3)
                baseline = int(client.info("memory")["used_memory"])
                maxmemory = baseline + (800 << 10)  # room for a few videos' features, not for the library
                client.config_set("maxmemory", maxmemory)

                ids = []
                for video in videos:
                    with open(video, "rb") as f:
                        response = http.post("/v1/videos", files={"file": (video.name, f, "video/mp4")})
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["video_id"])
                for video_id in ids:
                    wait_until(lambda v=video_id: http.get(f"/v1/videos/{v}").json()["status"] == "ready", 180,
                               f"video {video_id} to be ready (log: {worker.log_path})", 0.3)
                # Features, not the clip embeddings of library search stored beside them (feat-<id>-clip).
                feature_files = [p for p in cold.rglob("feat-*.r2ck") if not p.name.endswith("-clip.r2ck")]
                library = sum(p.stat().st_size for p in feature_files)
                assert len(feature_files) == VIDEOS
                assert maxmemory < library, (maxmemory, library)  # the features cannot all be in Redis
                assert int(client.info("stats")["evicted_keys"]) > 0  # and Redis did evict
                before = http.get("/metrics").text
                assert metric(before, "r2_feature_cache_misses_total") == VIDEOS  # each video decoded once

                worker.stop()  # a fresh worker holds no adapter state: every query needs the features
                worker = worker_process(env, tmp_path, "worker-2")
                wait_until(lambda: http.get("/readyz").status_code == 200, 120, "the new worker", 0.3)  # the
                # old one removed its heartbeat when it stopped
                for i, video_id in enumerate(ids):
                    response = http.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a dog"], "top_k": 3})
                    assert response.status_code == 200, response.text
                    if i in (0, VIDEOS - 1):  # the first (surely evicted) and the last: the engine's own answer
                        assert_same_answers(response.json()["results"],
                                            direct_answers(registry, "tiny", videos[i], ["a dog"], top_k=3))
                after = http.get("/metrics").text
        finally:
            worker.stop()
            client.close()

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    hot, cold_hits = delta("r2_hot_hits_total", kind="features"), delta("r2_cold_hits_total", kind="features")
    print(f"\nmaxmemory {maxmemory} B < library features {library} B: {VIDEOS} queries, {hot:.0f} from Redis, "
          f"{cold_hits:.0f} from the cold tier, {delta('r2_feature_cache_misses_total'):.0f} decoded again")
    assert delta("r2_feature_cache_misses_total") == 0  # no video was decoded again
    assert delta("r2_feature_cache_hits_total") == VIDEOS
    assert cold_hits >= 1 and hot + cold_hits == VIDEOS
    assert delta("r2_hot_misses_total", kind="features") == cold_hits
    assert metric(after, "r2_cold_corrupt_total") == 0 and metric(after, "r2_feature_cache_corrupt_total") == 0
