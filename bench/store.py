"""The feature cache step of the cold path, on the real Redis (the service's own chunked store)."""

from __future__ import annotations

import dataclasses
import time

import redis
from torch import Tensor

from models.engine import Grounder
from models.video import VideoInfo
from service.contract.keys import Keys
from service.contract.settings import Settings
from service.store.features import CachedFeatures, FeatureCache
from service.store.redis_chunks import RedisChunkStore

CHUNK_BYTES: int = Settings.model_fields["chunk_bytes"].default  # the service's default
# Redis (jemalloc) rounds an 8 MiB value plus its ~10-byte header up to the 10 MiB size class (+25%); a chunk a
# little under a size class is stored without that overhead, and small chunks bound the rounding of the last,
# partial chunk. Measured next to the default.
ALT_CHUNK_BYTES = (8 << 20, (8 << 20) - 64)
TTL_S = 3600


def feature_cache(client: redis.Redis, prefix: str, chunk_bytes: int = CHUNK_BYTES) -> FeatureCache:
    return FeatureCache(RedisChunkStore(client, chunk_bytes), Keys(prefix), TTL_S)


def to_cached(features: Tensor, info: VideoInfo) -> CachedFeatures:
    array = features.contiguous().cpu().numpy()  # (K, T, P, C) float16
    return CachedFeatures(str(array.dtype), tuple(array.shape), array.tobytes(), dataclasses.asdict(info))


def redis_bytes(client: redis.Redis, prefix: str, video_id: str, feature_id: str) -> int:
    """Bytes Redis itself accounts for the entry (MEMORY USAGE of the header and every chunk)."""
    name = Keys(prefix).features(video_id, feature_id)
    keys = [name, *client.scan_iter(match=f"{name}:c*", count=1000)]
    return sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)


def store_features(redis_url: str, prefix: str, video_id: str, grounder: Grounder, features: Tensor,
                   info: VideoInfo, chunk_bytes: int = CHUNK_BYTES) -> dict[str, float]:
    """Serialise and store the features as the worker does; times the store and measures what Redis holds."""
    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    try:
        cache = feature_cache(client, prefix, chunk_bytes)
        started = time.perf_counter()
        cached = to_cached(features, info)
        cache.put(video_id, grounder.feature_id, cached)
        store_s = time.perf_counter() - started
        stored = redis_bytes(client, prefix, video_id, grounder.feature_id)
    finally:
        client.close()
    return dict(store_s=store_s, payload_bytes=len(cached.data), redis_bytes=stored)
