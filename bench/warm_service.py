"""Warm queries through the whole service on videos whose features are generated and stored directly.

Encoding a 40 min video on this CPU would take many minutes and is measured elsewhere (the cold section), so
these measurements put random float16 features of the right shape into Redis as a worker would have stored
them, with a ready video record, and then ask the service:

* :func:`long_video`: HTTP latency of one warm query (new text) on a long video next to the engine's own
  ``Grounder.ground`` on the same features in this process (``http_over_engine_40min``);
* :func:`affinity`: API + 2 workers, several videos queried again and again: how often a query reached the
  worker already holding the video's adapter state (``affinity_hit_rate_2workers``), and how many feature
  entries were read from Redis.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
import torch

from bench.load import REQUEST_TIMEOUT_S, service_processes
from bench.timing import summary_ms
from models.video import VideoInfo
from service.contract.keys import Keys
from service.contract.schemas import Status, VideoRecord
from service.contract.settings import Settings
from service.store.features import CachedFeatures, FeatureCache
from service.store.redis_chunks import RedisChunkStore
from service.store.redis_records import RedisRecords

TTL_S = 3600


def random_features(clips: int, k: int, tokens: int, width: int, seed: int) -> torch.Tensor:
    """(K, T, P, C) float16 with the spread of real CLIP activations (only shapes matter for the timings)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(k, clips, tokens, width, generator=generator).half()


def store_video(client: redis.Redis, prefix: str, video_id: str, model: str, feature_id: str,
                features: torch.Tensor, fps: float) -> None:
    """A ready video as a worker leaves it: the features entry and the record (no uploaded bytes needed)."""
    keys = Keys(prefix)
    clips = features.shape[1]
    info = VideoInfo(num_frames=clips * 30, avg_fps=30 * fps, width=1280, height=720, duration=clips / fps)
    array = features.contiguous().numpy()
    cache = FeatureCache(RedisChunkStore(client, Settings().chunk_bytes), keys, TTL_S)
    cache.put(video_id, feature_id, CachedFeatures(str(array.dtype), tuple(array.shape), array.tobytes(),
                                                   dataclasses.asdict(info)))
    RedisRecords(client, keys).create_video(
        VideoRecord(video_id=video_id, model=model, size_bytes=0, status=Status.ready, progress=1.0,
                    duration=info.duration, num_clips=clips, clip_seconds=1 / fps), TTL_S)


def feature_id_of(client: redis.Redis, prefix: str, model: str) -> str:
    """The feature id the live workers use for the model (from their heartbeats)."""
    ids = {w.models[model].feature_id for w in RedisRecords(client, Keys(prefix)).live_workers() if model in w.models}
    ids.discard(None)
    if len(ids) != 1:
        raise RuntimeError(f"expected one feature id for {model!r} among the live workers, got {ids}")
    return str(ids.pop())


def _ask(http: httpx.Client, video_id: str, query: str) -> tuple[float, str]:
    started = time.perf_counter()
    r = http.post(f"/v1/videos/{video_id}/moments", json={"queries": [query], "top_k": 5})
    seconds = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"query failed: {r.status_code} {r.text[:300]}")
    return seconds, query


def long_video(*, registry: Path, redis_url: str, prefix: str, folder: Path, device: str, clips: int,
               queries: Any, requests: int, engine_ground: Callable[[torch.Tensor, list[str]], float],
               log: Callable[[str], None]) -> dict[str, Any]:
    """HTTP p50 of one warm query on a ``clips``-clip video vs the engine's own ground() p50 on it."""
    folder = folder / "long"
    folder.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(redis_url, socket_timeout=120)
    features = random_features(clips, 4, 50, 768, seed=40)
    video_id = "4" * 64
    with service_processes(registry, redis_url, prefix, folder, device) as (base, _):
        store_video(client, prefix, video_id, "bench", feature_id_of(client, prefix, "bench"), features, 0.5)
        log(f"long video: {clips} clips ({features.numel() * 2 / 1e6:.0f} MB of features) stored")
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as http:
            first, _ = _ask(http, video_id, queries.new(1)[0])  # reads the features, builds the adapter state
            engine_ground(features, queries.new(1))  # the engine's own copy of the state, built once
            latencies, engine = [], []
            for q in queries.new(requests):  # interleaved, so a change of machine load hits both alike
                latencies.append(_ask(http, video_id, q)[0])
                engine.append(engine_ground(features, queries.new(1)))
    client.close()
    return dict(clips=clips, video_seconds=clips * 2, feature_mb=features.numel() * 2 / 1e6,
                first_query_s=first, http=summary_ms(latencies), engine_ground=summary_ms(engine),
                http_over_engine=statistics.median(latencies) / statistics.median(engine))


def affinity(*, registry: Path, redis_url: str, prefix: str, folder: Path, device: str, videos: int, clips: int,
             rounds: int, queries: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """API + 2 workers; each video queried ``rounds`` times (new texts). Counts, from the workers' metrics, how
    many answers came from a worker that already held the video (no Redis read) after each video's first query."""
    folder = folder / "affinity"
    folder.mkdir(parents=True, exist_ok=True)
    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    with service_processes(registry, redis_url, prefix, folder, device, workers=2) as (base, _):
        feature_id = feature_id_of(client, prefix, "bench")
        ids = [f"{i:x}".rjust(64, "a") for i in range(videos)]
        for n, video_id in enumerate(ids):
            store_video(client, prefix, video_id, "bench", feature_id, random_features(clips, 4, 50, 768, n), 0.5)
        with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as http:
            for video_id in ids:  # first query per video: nobody holds it yet
                _ask(http, video_id, queries.new(1)[0])
            before = _metrics(http)
            for _ in range(rounds - 1):
                for video_id in ids:
                    _ask(http, video_id, queries.new(1)[0])
            after = _metrics(http)
    client.close()
    repeated = videos * (rounds - 1)
    held = after["held"] - before["held"]
    return dict(workers=2, videos=videos, clips=clips, rounds=rounds, repeated_queries=repeated, held_hits=held,
                hit_rate=held / repeated if repeated else None,
                feature_reads_first_round=before["reads"], feature_reads_repeated=after["reads"] - before["reads"])


def _metrics(http: httpx.Client) -> dict[str, float]:
    text = http.get("/metrics").text
    values = {}
    for line in text.splitlines():
        for key, name in (("held", "r2_adapter_cache_hits_total"), ("reads", "r2_feature_cache_hits_total")):
            if line.startswith(name + " "):
                values[key] = float(line.split()[1])
    return {"held": values.get("held", 0.0), "reads": values.get("reads", 0.0)}
