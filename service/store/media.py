"""Media kept for players and pages: ranged reads of stored entries, per-clip thumbnails and rendered reels.

Thumbnails live with the features they were made with (same video slot, same lifetime, same cold tier) and are
deleted with them; a reel is a cached answer (hot tier only, kept as long as the job's answer).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.contract.keys import Keys

from .chunks import ChunkStore
from .cold import ColdStore

THUMBS = "thumbs-"  # cold-tier entry names: thumbs-<feature id>
_COUNT = struct.Struct(">I")


@dataclass(frozen=True)
class Blob:
    """A stored payload of ``size`` bytes, read in ranges: ``read(start, end)`` yields bytes [start, end)."""

    size: int
    read: Callable[[int, int], Iterator[bytes]]

    def bytes(self, start: int, end: int) -> bytes:
        return b"".join(self.read(start, end))


def chunk_blob(store: ChunkStore, name: str) -> Blob | None:
    header = store.header(name)
    if header is None:
        return None
    return Blob(header.total_bytes, lambda a, b: store.read_range(name, header, a, b))


def pack_thumbnails(jpegs: Sequence[bytes]) -> bytes:
    """count u32 | (count + 1) u32 offsets into the JPEG data | the JPEGs back to back: one clip is read with two
    small range reads."""
    offsets, at = [], 0
    for jpeg in jpegs:
        offsets.append(at)
        at += len(jpeg)
    offsets.append(at)
    return _COUNT.pack(len(jpegs)) + struct.pack(f">{len(offsets)}I", *offsets) + b"".join(jpegs)


def thumbnail_at(blob: Blob, clip: int) -> bytes | None:
    """Clip ``clip``'s JPEG from a :func:`pack_thumbnails` payload; None when it has no such clip."""
    (count,) = _COUNT.unpack(blob.bytes(0, _COUNT.size))
    if not 0 <= clip < count:
        return None
    table = _COUNT.size + 4 * (count + 1)
    start, end = struct.unpack(">II", blob.bytes(_COUNT.size + 4 * clip, _COUNT.size + 4 * clip + 8))
    return blob.bytes(table + start, table + end)


class ThumbnailStore:
    """One JPEG per clip per feature id, hot (with the features' TTL) and cold when there is a cold tier."""

    def __init__(self, store: ChunkStore, keys: Keys, ttl_s: int, cold: ColdStore | None = None) -> None:
        self.store, self.keys, self.ttl_s, self.cold = store, keys, ttl_s, cold

    def put(self, video_id: str, feature_id: str, jpegs: Sequence[bytes]) -> None:
        payload = pack_thumbnails(jpegs)
        meta = {"video_id": video_id, "feature_id": feature_id, "count": len(jpegs)}
        if self.cold is not None:
            self.cold.put(video_id, THUMBS + feature_id, [payload], meta)
        self.store.index_add(self.keys.feature_ids(video_id), feature_id, self.ttl_s)  # deleted with the features
        self.store.put(self.keys.thumbnails(video_id, feature_id), [payload], meta, self.ttl_s)

    def get(self, video_id: str, feature_id: str, clip: int) -> bytes | None:
        """Clip ``clip``'s JPEG; None when the video has no thumbnails for these features or no such clip."""
        name = self.keys.thumbnails(video_id, feature_id)
        blob = chunk_blob(self.store, name)
        if blob is None and self.cold is not None:
            cold, header = self.cold, self.cold.header(video_id, THUMBS + feature_id)
            if header is not None:
                blob = Blob(header.total_bytes, lambda a, b: cold.read_range(video_id, THUMBS + feature_id, a, b))
        return thumbnail_at(blob, clip) if blob is not None else None

    def delete_video(self, video_id: str) -> None:
        feature_ids = self.store.index_members(self.keys.feature_ids(video_id))
        if self.cold is not None:
            feature_ids |= {n.removeprefix(THUMBS) for n in self.cold.names(video_id) if n.startswith(THUMBS)}
        for feature_id in feature_ids:
            self.store.delete(self.keys.thumbnails(video_id, feature_id))
            if self.cold is not None:
                self.cold.delete(video_id, THUMBS + feature_id)


class ReelStore:
    """Rendered highlight reels (mp4): a cache in the hot tier, kept as long as the job's answer (``ttl_s`` at
    each put) and deleted with the video (an index per video lists them)."""

    def __init__(self, store: ChunkStore, keys: Keys) -> None:
        self.store, self.keys = store, keys

    def put_file(self, video_id: str, job_id: str, path: Path, ttl_s: int) -> None:
        self.store.index_add(self.keys.reel_ids(video_id), job_id, ttl_s)
        with open(path, "rb") as f:
            self.store.put(self.keys.reel(video_id, job_id), iter(lambda: f.read(1 << 20), b""),
                           {"video_id": video_id, "job_id": job_id}, ttl_s)

    def open(self, video_id: str, job_id: str) -> Blob | None:
        return chunk_blob(self.store, self.keys.reel(video_id, job_id))

    def delete_video(self, video_id: str) -> None:
        for job_id in self.store.index_members(self.keys.reel_ids(video_id)):
            self.store.delete(self.keys.reel(video_id, job_id))
        self.store.index_drop(self.keys.reel_ids(video_id))
