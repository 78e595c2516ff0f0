"""One object bundling where everything lives: Redis (shared by every process) or memory (embedded mode),
plus the cold tier (a directory) when there is one."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from service.contract.keys import Keys
from service.contract.metrics import CACHE_CORRUPT, COLD_CORRUPT
from service.contract.settings import Settings

from .cold import ColdStore, DirColdStore
from .cold_records import ColdBackedRecords
from .connect import RedisClient, redis_client
from .features import FeatureCache
from .jobs import JobStore
from .media import ReelStore, ThumbnailStore
from .memory import MemoryChunkStore, MemoryJobStore, MemoryRecords
from .records import Records
from .redis_chunks import RedisChunkStore
from .redis_jobs import RedisJobStore
from .redis_records import RedisRecords
from .videos import VideoBlobs

__all__ = ["Backend", "open_backend", "redis_client"]

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
    client: RedisClient | None = None
    scratch: Path | None = None  # embedded mode without R2_COLD_DIR: the cold tier's folder, removed on close
    cold: ColdStore | None = None
    thumbnails: ThumbnailStore = field(init=False)  # with the features: same store, lifetime and cold tier
    reels: ReelStore = field(init=False)

    def __post_init__(self) -> None:
        self.thumbnails = ThumbnailStore(self.features.store, self.keys, self.features.ttl_s, self.features.cold)
        self.reels = ReelStore(self.features.store, self.keys)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    async def aclose(self) -> None:
        """Close what the event loop opened (the API's blocking waits), then everything else."""
        await self.jobs.aclose()
        self.close()


def open_backend(settings: Settings, *, read_timeout_s: float | None = None) -> Backend:
    """Redis (one server or a cluster) when ``REDIS_URL`` is set, else memory (embedded mode); the cold tier in
    ``R2_COLD_DIR``. Connects lazily: never fails here.

    An object-store cold tier (``S3ColdStore``, see :mod:`service.store.cold`) would be chosen here, in
    :func:`_cold_store`, from an ``s3://`` value of the setting.
    """
    keys = Keys(settings.key_prefix)
    if settings.redis_url is None:
        memory = MemoryRecords()
        scratch = None
        if settings.cold_dir is None:  # the records live in this process only, so the videos go with it
            if settings.upload_dir is not None:
                settings.upload_dir.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix="r2-videos-", dir=settings.upload_dir))
        cold = _cold_store(settings, scratch or settings.cold_dir, memory.add_metrics)
        hot = MemoryChunkStore(settings.chunk_bytes, settings.memory_cache_bytes,
                               on_corrupt=lambda *_: memory.add_metrics({CACHE_CORRUPT: 1}))
        return Backend("memory", memory.keys, ColdBackedRecords(memory, cold, settings.video_ttl_s),
                       MemoryJobStore(settings.max_queue_length, memory, settings.max_stored_results),
                       FeatureCache(hot, memory.keys, settings.feature_ttl_s, cold),
                       VideoBlobs(None, memory.keys, settings.video_ttl_s, cold), scratch=scratch, cold=cold)
    timeout = read_timeout_s or settings.redis_timeout_s
    client = redis_client(settings.redis_url, timeout, cluster=settings.redis_cluster)
    redis_records = RedisRecords(client, keys)
    store = RedisChunkStore(client, settings.chunk_bytes,
                            on_corrupt=lambda *_: redis_records.add_metrics({CACHE_CORRUPT: 1}))
    jobs = RedisJobStore(client, keys, settings.max_queue_length, result_ttl_s=settings.result_ttl_s,
                         url=settings.redis_url, timeout_s=settings.redis_timeout_s, cluster=settings.redis_cluster,
                         max_results=settings.max_stored_results)
    cold_store = (_cold_store(settings, settings.cold_dir, redis_records.add_metrics)
                  if settings.cold_dir is not None else None)
    if cold_store is None:
        log.warning("R2_COLD_DIR is not set: uploads and features live in Redis only, and an entry Redis evicts "
                    "under maxmemory is lost (a video whose bytes were evicted must be uploaded again)")
    records: Records = (ColdBackedRecords(redis_records, cold_store, settings.video_ttl_s)
                        if cold_store is not None else redis_records)
    return Backend("redis", keys, records, jobs, FeatureCache(store, keys, settings.feature_ttl_s, cold_store),
                   VideoBlobs(store, keys, settings.video_ttl_s, cold_store), client=client, cold=cold_store)


def _cold_store(settings: Settings, root: Path | None, add_metrics: Callable[[dict[str, float]], None]) -> ColdStore:
    assert root is not None
    return DirColdStore(root, settings.key_prefix, settings.chunk_bytes,
                        on_corrupt=lambda *_: add_metrics({COLD_CORRUPT: 1}))
