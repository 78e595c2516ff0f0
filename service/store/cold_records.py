"""Video records that survive Redis: each video's record is also kept in the cold tier (written when it is
created and at each change of status, not at each progress update), and put back in Redis when Redis lost it
(evicted under ``maxmemory``, or Redis restarted empty) while the video lives.

A wrapper around any :class:`Records`: every other record (heartbeats, metrics) goes straight through.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import ValidationError

from service.contract.schemas import VideoRecord, WorkerInfo

from .cold import ColdStore
from .records import Records

log = logging.getLogger(__name__)


_VOLATILE_FIELDS = frozenset({"progress", "updated_at"})  # changes that are not worth a cold write


class ColdBackedRecords(Records):
    """``inner``'s records, with video records restored from ``cold`` when ``inner`` lost them."""

    def __init__(self, inner: Records, cold: ColdStore, video_ttl_s: int) -> None:
        self.inner, self.cold, self.video_ttl_s = inner, cold, video_ttl_s

    # videos
    def create_video(self, record: VideoRecord, ttl_s: int) -> bool:
        created = self.inner.create_video(record, ttl_s)
        if created:
            self.cold.put_record(record.video_id, record.model_dump(mode="json"))
        return created

    def get_video(self, video_id: str) -> VideoRecord | None:
        record = self.inner.get_video(video_id)
        return record if record is not None else self._restore(video_id)

    def _restore(self, video_id: str) -> VideoRecord | None:
        data = self.cold.get_record(video_id)
        if data is None:
            return None
        last_used = self.cold.last_used(video_id)
        if last_used is None or time.time() - last_used > self.video_ttl_s:  # expired: as its Redis record did
            self.cold.delete_video(video_id)
            return None
        try:
            record = VideoRecord.model_validate(data)
        except ValidationError as err:
            log.warning("cold record of video %s is not a video record (%s): ignored", video_id, err)
            return None
        if record.video_id != video_id:
            return None
        log.info("video %s: its record was restored from the cold tier (%s)", video_id, record.status.value)
        self.inner.create_video(record, self.video_ttl_s)
        self.cold.touch(video_id)
        return self.inner.get_video(video_id) or record

    def update_video(self, video_id: str, **fields: Any) -> bool:
        updated = self.inner.update_video(video_id, **fields)
        if not updated and self._restore(video_id) is not None:  # lost by Redis meanwhile: back, then update
            updated = self.inner.update_video(video_id, **fields)
        if updated and set(fields) - _VOLATILE_FIELDS:
            record = self.inner.get_video(video_id)
            if record is not None:
                self.cold.put_record(video_id, record.model_dump(mode="json"))
        return updated

    def delete_video(self, video_id: str) -> bool:
        deleted = self.inner.delete_video(video_id)
        had_cold = self.cold.get_record(video_id) is not None
        self.cold.delete_record(video_id)
        return deleted or had_cold

    def touch_video(self, video_id: str, ttl_s: int) -> None:
        self.inner.touch_video(video_id, ttl_s)
        self.cold.touch(video_id)

    def video_index(self, limit: int, before: tuple[float, str] | None = None) -> list[tuple[float, str]]:
        return self.inner.video_index(limit, before)  # the index has no TTL: Redis keeps it (records restore)

    def unlist_video(self, video_id: str) -> None:
        self.inner.unlist_video(video_id)

    # workers and metrics: not kept in the cold tier
    def heartbeat(self, info: WorkerInfo, ttl_s: float) -> None:
        self.inner.heartbeat(info, ttl_s)

    def remove_worker(self, worker_id: str) -> None:
        self.inner.remove_worker(worker_id)

    def live_workers(self) -> list[WorkerInfo]:
        return self.inner.live_workers()

    def add_metrics(self, increments: dict[str, float]) -> None:
        self.inner.add_metrics(increments)

    def read_metrics(self) -> dict[str, float]:
        return self.inner.read_metrics()

    def ping(self) -> None:
        self.inner.ping()

    def __getattr__(self, name: str) -> Any:  # what the wrapped store offers beyond the interface
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
