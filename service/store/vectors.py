"""The first stage of library search: per-clip vectors of each video, searched for the videos nearest a query.

One small interface, two implementations. :class:`NumpyIndex` (the default) keeps every clip vector in the
worker's memory and scores them exactly with one matrix product: 1,000 videos of 75 clips x 512 floats is
150 MB and a few milliseconds. :class:`QdrantIndex` keeps them in Qdrant (qdrant-client): in-process
(``:memory:`` or a folder) or a server shared by every worker when a library outgrows one machine's memory.
A video scores its best clip's cosine similarity with the query (vectors are unit-norm). No torch here.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable

import numpy as np


class VectorIndex(ABC):
    """Per-video sets of unit-norm clip vectors (T, D), searched by max cosine with a query (D,)."""

    @abstractmethod
    def ids(self) -> set[str]:
        """The videos in the index."""

    @abstractmethod
    def add(self, video_id: str, vectors: np.ndarray) -> None:
        """Add (or replace) a video's clip vectors, (T, D) float32."""

    @abstractmethod
    def remove(self, video_id: str) -> None: ...

    @abstractmethod
    def search(self, query: np.ndarray, n: int, among: Iterable[str] | None = None) -> list[tuple[str, float]]:
        """The ``n`` videos (of ``among`` when given) whose best clip is nearest the query, best first."""


class NumpyIndex(VectorIndex):
    """Exact search in this process's memory; the stacked matrix is rebuilt only after a change."""

    def __init__(self) -> None:
        self._vectors: dict[str, np.ndarray] = {}
        self._stacked: tuple[list[str], np.ndarray, np.ndarray] | None = None  # ids, (N, D) rows, row offsets

    def ids(self) -> set[str]:
        return set(self._vectors)

    def add(self, video_id: str, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or not len(vectors):
            raise ValueError(f"clip vectors must be (T >= 1, D), got {vectors.shape}")
        self._vectors[video_id] = np.ascontiguousarray(vectors, dtype=np.float32)
        self._stacked = None

    def remove(self, video_id: str) -> None:
        if self._vectors.pop(video_id, None) is not None:
            self._stacked = None

    def _stack(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        if self._stacked is None:
            ids = list(self._vectors)
            rows = [self._vectors[i] for i in ids]
            offsets = np.cumsum([0] + [len(r) for r in rows[:-1]]).astype(np.int64)
            matrix = np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)
            self._stacked = (ids, matrix, offsets)
        return self._stacked

    def search(self, query: np.ndarray, n: int, among: Iterable[str] | None = None) -> list[tuple[str, float]]:
        ids, matrix, offsets = self._stack()
        if not ids:
            return []
        best = np.maximum.reduceat(matrix @ query.astype(np.float32), offsets)  # (videos,) best clip each
        if among is not None:
            wanted = set(among)
            keep = np.fromiter((i in wanted for i in ids), bool, len(ids))
            best = np.where(keep, best, -np.inf)
        n = min(n, int(np.isfinite(best).sum()))
        top = np.argpartition(-best, n - 1)[:n] if n else np.zeros(0, np.int64)
        top = top[np.argsort(-best[top], kind="stable")]
        return [(ids[i], float(best[i])) for i in top]


class QdrantIndex(VectorIndex):
    """Clip vectors as Qdrant points (one per clip, payload ``video_id``), grouped by video at query time."""

    def __init__(self, location: str, collection: str, dim: int) -> None:
        from qdrant_client import QdrantClient  # imported here: only deployments that choose Qdrant need it
        from qdrant_client import models as qm

        self._qm = qm
        if location.startswith(("http://", "https://")):
            self.client = QdrantClient(url=location)
        elif location == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            self.client = QdrantClient(path=location)
        self.collection = collection
        if not self.client.collection_exists(collection):
            self.client.create_collection(collection, vectors_config=qm.VectorParams(size=dim,
                                                                                     distance=qm.Distance.DOT))

    def _video_filter(self, video_ids: Iterable[str]) -> object:
        qm = self._qm
        return qm.Filter(must=[qm.FieldCondition(key="video_id", match=qm.MatchAny(any=list(video_ids)))])

    def ids(self) -> set[str]:
        found: set[str] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=1024, offset=offset,
                                                with_payload=["video_id"], with_vectors=False)
            found.update(str((p.payload or {})["video_id"]) for p in points)
            if offset is None:
                return found

    def add(self, video_id: str, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or not len(vectors):
            raise ValueError(f"clip vectors must be (T >= 1, D), got {vectors.shape}")
        self.remove(video_id)
        points = [self._qm.PointStruct(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{video_id}/{t}")),
                                       vector=row.astype(np.float32).tolist(), payload={"video_id": video_id})
                  for t, row in enumerate(vectors)]
        self.client.upsert(self.collection, points=points)

    def remove(self, video_id: str) -> None:
        self.client.delete(self.collection, points_selector=self._qm.FilterSelector(
            filter=self._video_filter([video_id])))

    def search(self, query: np.ndarray, n: int, among: Iterable[str] | None = None) -> list[tuple[str, float]]:
        groups = self.client.query_points_groups(
            self.collection, query=query.astype(np.float32).tolist(), group_by="video_id", limit=n, group_size=1,
            query_filter=None if among is None else self._video_filter(among))
        return [(str(g.id), float(g.hits[0].score)) for g in groups.groups]


def open_index(kind: str, *, location: str, collection: str, dim: int) -> VectorIndex:
    """The first-stage index a worker's settings name (``search_index``)."""
    if kind == "qdrant":
        return QdrantIndex(location, collection, dim)
    return NumpyIndex()
