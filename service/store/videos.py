"""Uploaded video bytes, reachable by every worker: in the cold tier when there is one, else in Redis."""

from __future__ import annotations

from pathlib import Path

from service.contract.keys import Keys
from service.contract.metrics import COLD_HITS, COLD_MISSES, HOT_HITS, HOT_MISSES, MetricsBatch

from .chunks import ChunkStore
from .cold import ColdStore
from .media import Blob, chunk_blob

BLOB = "blob"  # the entry's name in the cold tier
KIND = "video"  # the ``kind`` label of the tier counters


class VideoBlobs:
    """Uploaded video bytes, reachable by every worker.

    With a cold tier they are written there only: they are read once per model to encode the video, so a hot
    copy would take Redis memory (1.4 GB per hour of 720p video) for nothing. Without one they go to ``store``
    (Redis) and expire with the video.
    """

    def __init__(self, store: ChunkStore | None, keys: Keys, ttl_s: int, cold: ColdStore | None = None) -> None:
        if store is None and cold is None:
            raise ValueError("the video bytes need a store or a cold tier")
        self.store, self.keys, self.ttl_s, self.cold = store, keys, ttl_s, cold

    def put_file(self, video_id: str, path: Path) -> None:
        with open(path, "rb") as f:
            pieces = iter(lambda: f.read(1 << 20), b"")
            if self.cold is not None:
                self.cold.put(video_id, BLOB, pieces, {"video_id": video_id})
            else:
                assert self.store is not None
                self.store.put(self.keys.blob(video_id), pieces, {"video_id": video_id}, self.ttl_s)

    def fetch_to(self, video_id: str, path: Path, counts: MetricsBatch | None = None) -> bool:
        """Write the video into ``path``; False when it is gone or failed verification."""
        counts = counts if counts is not None else MetricsBatch()
        with open(path, "wb") as f:
            if self.cold is not None:
                found = self.cold.get_to_file(video_id, BLOB, f) is not None
                counts.inc(COLD_HITS if found else COLD_MISSES, kind=KIND)
                return found
            assert self.store is not None
            found = self.store.get_to_file(self.keys.blob(video_id), f) is not None
            counts.inc(HOT_HITS if found else HOT_MISSES, kind=KIND)
            return found

    def open(self, video_id: str) -> Blob | None:
        """The uploaded bytes for ranged reads (``GET /v1/videos/{id}/content``); None when they are gone."""
        if self.cold is not None:
            cold, header = self.cold, self.cold.header(video_id, BLOB)
            if header is not None:
                return Blob(header.total_bytes, lambda a, b: cold.read_range(video_id, BLOB, a, b))
            if self.store is None:
                return None
        assert self.store is not None
        return chunk_blob(self.store, self.keys.blob(video_id))

    def exists(self, video_id: str) -> bool:
        if self.cold is not None:
            return self.cold.exists(video_id, BLOB)
        assert self.store is not None
        return self.store.exists(self.keys.blob(video_id))

    def touch(self, video_id: str) -> bool:
        if self.cold is not None:
            self.cold.touch(video_id)
            return self.cold.exists(video_id, BLOB)
        assert self.store is not None
        return self.store.touch(self.keys.blob(video_id), self.ttl_s)

    def delete(self, video_id: str) -> None:
        if self.store is not None:  # also a hot copy from before the cold tier was configured
            self.store.delete(self.keys.blob(video_id))
        if self.cold is not None:
            self.cold.delete(video_id, BLOB)
