"""One object bundling where everything lives: Redis (shared by every process) or memory (embedded mode)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from service.contract.keys import Keys
from service.contract.metrics import CACHE_CORRUPT
from service.contract.settings import Settings

from .features import FeatureCache
from .jobs import JobStore
from .memory import DirChunkStore, MemoryChunkStore, MemoryJobStore, MemoryRecords
from .records import Records
from .redis_chunks import RedisChunkStore
from .redis_jobs import RedisJobStore
from .redis_records import RedisRecords
from .videos import VideoBlobs

log = logging.getLogger(__name__)


@dataclass
class Backend:
    """The jobs, the records, the feature cache and the uploaded videos of one deployment."""

    kind: str  # "redis" | "memory"
    keys: Keys
    records: Records
    jobs: JobStore
    features: FeatureCache
    videos: VideoBlobs
    client: redis.Redis | None = None
    scratch: Path | None = None  # embedded mode: the folder of uploaded videos, removed on close

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    async def aclose(self) -> None:
        """Close what the event loop opened (the API's blocking waits), then everything else."""
        await self.jobs.aclose()
        self.close()


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    """A client that fails fast: Redis down must give a quick 503, not a hang or minutes of retries."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),  # one retry: a stale pooled connection reconnects
        health_check_interval=30,
        protocol=2,
    )


def open_backend(settings: Settings, *, read_timeout_s: float | None = None) -> Backend:
    """Redis when ``REDIS_URL`` is set, else memory (embedded mode). Connects lazily: never fails here."""
    keys = Keys(settings.key_prefix)
    if settings.redis_url is None:
        records = MemoryRecords()
        features_store = MemoryChunkStore(settings.chunk_bytes, settings.memory_cache_bytes,
                                          on_corrupt=lambda *_: records.add_metrics({CACHE_CORRUPT: 1}))
        # The records live in this process only, so the videos go with it: a folder of its own.
        if settings.upload_dir is not None:
            settings.upload_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="r2-videos-", dir=settings.upload_dir))
        return Backend("memory", records.keys, records, MemoryJobStore(settings.max_queue_length, records),
                       FeatureCache(features_store, records.keys, settings.feature_ttl_s),
                       VideoBlobs(DirChunkStore(root, settings.chunk_bytes), records.keys, settings.video_ttl_s),
                       scratch=root)
    timeout = read_timeout_s or settings.redis_timeout_s
    client = redis_client(settings.redis_url, timeout)
    redis_records = RedisRecords(client, keys)
    store = RedisChunkStore(client, settings.chunk_bytes,
                            on_corrupt=lambda *_: redis_records.add_metrics({CACHE_CORRUPT: 1}))
    jobs = RedisJobStore(client, keys, settings.max_queue_length, result_ttl_s=settings.result_ttl_s,
                         url=settings.redis_url, timeout_s=settings.redis_timeout_s)
    return Backend("redis", keys, redis_records, jobs, FeatureCache(store, keys, settings.feature_ttl_s),
                   VideoBlobs(store, keys, settings.video_ttl_s), client=client)
