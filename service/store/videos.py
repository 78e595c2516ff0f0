"""Uploaded video bytes, reachable by every worker (in Redis, or a folder in embedded mode)."""

from __future__ import annotations

from pathlib import Path

from service.contract.keys import Keys

from .chunks import ChunkStore


class VideoBlobs:
    """Uploaded video bytes, reachable by every worker (in Redis, or a folder in embedded mode)."""

    def __init__(self, store: ChunkStore, keys: Keys, ttl_s: int) -> None:
        self.store, self.keys, self.ttl_s = store, keys, ttl_s

    def put_file(self, video_id: str, path: Path) -> None:
        with open(path, "rb") as f:
            pieces = iter(lambda: f.read(self.store.chunk_bytes), b"")
            self.store.put(self.keys.blob(video_id), pieces, {"video_id": video_id}, self.ttl_s)

    def fetch_to(self, video_id: str, path: Path) -> bool:
        """Write the video into ``path``; False when it is gone or failed verification."""
        with open(path, "wb") as f:
            return self.store.get_to_file(self.keys.blob(video_id), f) is not None

    def exists(self, video_id: str) -> bool:
        return self.store.exists(self.keys.blob(video_id))

    def touch(self, video_id: str) -> bool:
        return self.store.touch(self.keys.blob(video_id), self.ttl_s)

    def delete(self, video_id: str) -> None:
        self.store.delete(self.keys.blob(video_id))
