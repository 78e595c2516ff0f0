"""Small records both processes read and write: videos, worker heartbeats, shared metrics.

Every field of a record hash is JSON-encoded (with orjson: records are read and written on every query, and
the standard library's json was a tenth of the API's time per warm query). Updates never resurrect a record
that was deleted meanwhile (a worker finishing a video the user just deleted). Job records live with the queue
(:mod:`service.store.jobs`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import orjson

from service.contract.schemas import VideoRecord, WorkerInfo


def encode_fields(fields: dict[str, Any]) -> dict[str, str]:
    return {k: orjson.dumps(v.value if hasattr(v, "value") else v).decode() for k, v in fields.items()}


def after(entries: list[tuple[float, str]], before: tuple[float, str] | None,
          limit: int) -> list[tuple[float, str]]:
    """Index entries sorted newest first (ties: larger id first) that come after ``before``."""
    ordered = sorted(entries, reverse=True)
    return [e for e in ordered if before is None or e < before][:limit]


def decode_fields(raw: dict[Any, Any]) -> dict[str, Any]:
    return {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in raw.items()}


class Records(ABC):
    """Records shared by the API and the workers."""

    # videos
    @abstractmethod
    def create_video(self, record: VideoRecord, ttl_s: int) -> bool:
        """Store a new record; False (and nothing written) when one exists already."""

    @abstractmethod
    def get_video(self, video_id: str) -> VideoRecord | None: ...

    @abstractmethod
    def update_video(self, video_id: str, **fields: Any) -> bool:
        """Change fields of an existing record; False when it does not exist (nothing written)."""

    @abstractmethod
    def delete_video(self, video_id: str) -> bool: ...

    @abstractmethod
    def touch_video(self, video_id: str, ttl_s: int) -> None: ...

    @abstractmethod
    def video_index(self, limit: int, before: tuple[float, str] | None = None) -> list[tuple[float, str]]:
        """Up to ``limit`` (upload time, video id) of the listing index, newest first, strictly after ``before``
        in that order. Entries of expired videos stay until a reader drops them (:meth:`unlist_video`)."""

    @abstractmethod
    def unlist_video(self, video_id: str) -> None: ...

    # workers
    @abstractmethod
    def heartbeat(self, info: WorkerInfo, ttl_s: float) -> None: ...

    @abstractmethod
    def remove_worker(self, worker_id: str) -> None: ...

    @abstractmethod
    def live_workers(self) -> list[WorkerInfo]: ...

    # metrics
    @abstractmethod
    def add_metrics(self, increments: dict[str, float]) -> None:
        """Add to shared counters (sample name with labels -> amount)."""

    @abstractmethod
    def read_metrics(self) -> dict[str, float]: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`BackendUnavailable` when the backend cannot be reached."""
