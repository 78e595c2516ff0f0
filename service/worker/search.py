"""Library search jobs (``POST /v1/search``): a first stage over clip embeddings picks candidate videos, the R2
adapter grounds the query on those only.

Where things live (docs/search.md): each video's clip embeddings are a feature-cache entry next to its
features (same TTLs, same tiers, deleted with them); the set ``Keys.library(model)`` lists the videos
searchable under a model. Each worker keeps a first-stage index (:mod:`service.store.vectors`) as a cache of
those entries and brings it in line with the set at every search: videos that left the set leave the index,
new ones are loaded. The candidates' records are read before grounding, so a video deleted or expired since
never comes back; it leaves the set and the index then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from models.engine import Grounder
from models.search import LibraryVideo, frame_embeddings, ground_library, text_embedding
from models.video import VideoInfo
from service.contract.errors import InvalidRequest
from service.contract.schemas import Job
from service.contract.settings import Settings
from service.store.backend import Backend
from service.store.features import CachedFeatures
from service.store.vectors import VectorIndex, open_index

from .models import Models

log = logging.getLogger("service.worker")


def embedding_id(feature_id: str) -> str:
    """Feature-cache id of the clip embeddings computed from the features of ``feature_id``."""
    return f"{feature_id}-clip"


def library_ttl_s(settings: Settings) -> int:
    """The library set outlives its videos (each search checks their records): it only bounds leftovers."""
    return 10 * max(settings.video_ttl_s, settings.feature_ttl_s)


def store_embeddings(backend: Backend, settings: Settings, model: str, grounder: Grounder, video_id: str,
                     features: torch.Tensor, info: dict[str, Any]) -> np.ndarray:
    """Compute a video's clip embeddings from its (K, T, P, C) features, store them and list the video as
    searchable under ``model``. Returns the (T, D) float32 embeddings."""
    emb = frame_embeddings(grounder.clip, features).numpy()  # (T, D) unit-norm
    stored = emb.astype(np.float16)
    backend.features.put(video_id, embedding_id(grounder.feature_id),
                         CachedFeatures("float16", tuple(stored.shape), stored.tobytes(), info))
    backend.features.store.index_add(backend.features.keys.library(model), video_id, library_ttl_s(settings))
    return emb


class Searcher:
    """Runs search jobs of one worker; keeps one first-stage index per (model, feature id)."""

    def __init__(self, settings: Settings, backend: Backend, models: Models) -> None:
        self.settings, self.backend, self.models = settings, backend, models
        self._indexes: dict[str, VectorIndex] = {}
        self._durations: dict[str, float] = {}  # video id -> seconds, read with its embeddings
        self._thumbnails: dict[str, int] = {}  # video id -> thumbnails kept for these features, as last read

    def index(self, model: str, grounder: Grounder) -> VectorIndex:
        name = f"{model}:{grounder.feature_id}"
        if name not in self._indexes:
            dim = int(grounder.clip.clip.visual.proj.shape[1])
            self._indexes[name] = open_index(self.settings.search_index,
                                             location=self.settings.search_qdrant_location,
                                             collection=f"{self.settings.key_prefix}-{model}-{grounder.feature_id}",
                                             dim=dim)
        return self._indexes[name]

    def run(self, job: Job) -> dict[str, Any]:
        """The job's answer: moments ``[video_id, start, end, score, thumbnail or None]`` best first, and how
        many videos were searched and grounded."""
        if job.search is None or len(job.queries) != 1:
            raise InvalidRequest("a search job needs one query and its search spec", code="invalid_request")
        spec, (query,) = job.search, job.queries
        grounder = self.models.get(job.model)
        index = self.sync(job.model, grounder)
        pool = index.ids() if spec.video_ids is None else index.ids() & set(spec.video_ids)
        if spec.exhaustive:
            candidates = sorted(pool)
        else:
            q = text_embedding(grounder.clip, query).numpy()
            among = None if spec.video_ids is None else pool
            candidates = [v for v, _ in index.search(q, self.settings.search_candidates, among)]
        videos = self.load(job.model, grounder, candidates)
        ranked = [(score, vid, rank, start, end) for vid, moments in ground_library(grounder, videos, query,
                                                                                    spec.max_results)
                  for rank, (start, end, score) in enumerate(moments)]
        ranked.sort(key=lambda h: (-h[0], h[1], h[2]))  # ties: by video, then in the video's own order
        clip_seconds = 1.0 / grounder.spec.fps
        hits = [[vid, start, end, score, self.thumbnail(job.model, vid, start, clip_seconds)]
                for score, vid, _, start, end in ranked]
        return dict(hits=hits[: spec.max_results], searched=len(pool), grounded=len(videos))

    def thumbnail(self, model: str, video_id: str, start: float, clip_seconds: float) -> str | None:
        """The route of the thumbnail of the clip a moment starts in, when the video has thumbnails."""
        count = self._thumbnails.get(video_id, 0)
        if count <= 0:
            return None
        clip = min(count - 1, max(0, int(start / clip_seconds + 1e-6)))
        return f"/v1/videos/{video_id}/thumbnails/{clip}?model={model}"

    def sync(self, model: str, grounder: Grounder) -> VectorIndex:
        """The model's index, brought in line with its library set."""
        index = self.index(model, grounder)
        features, library = self.backend.features, self.backend.features.keys.library(model)
        members = features.store.index_members(library)
        held = index.ids()
        for video_id in held - members:
            index.remove(video_id)
        for video_id in members - held:
            vectors = self.embeddings(model, grounder, video_id)
            if vectors is None:  # its features are gone: not searchable any more
                features.store.index_remove(library, video_id)
            else:
                index.add(video_id, vectors)
        return index

    def embeddings(self, model: str, grounder: Grounder, video_id: str) -> np.ndarray | None:
        """A video's stored clip embeddings; computed from its features (and stored) when only those exist."""
        cached = self.backend.features.get(video_id, embedding_id(grounder.feature_id))
        if cached is not None:
            self._durations[video_id] = float(cached.video["duration"])
            return np.frombuffer(cached.data, np.float16).reshape(cached.shape).astype(np.float32)
        found = self.backend.features.get(video_id, grounder.feature_id)
        if found is None:
            return None
        from .pipeline import features_to_tensor  # the pipeline imports this module

        self._durations[video_id] = float(found.video["duration"])
        return store_embeddings(self.backend, self.settings, model, grounder, video_id, features_to_tensor(found),
                                found.video)

    def load(self, model: str, grounder: Grounder, video_ids: Iterable[str]) -> list[LibraryVideo]:
        """The candidates that still live, each with its adapter state (in memory) or its features."""
        features, records = self.backend.features, self.backend.records
        library = features.keys.library(model)
        out: list[LibraryVideo] = []
        for video_id in video_ids:
            key = f"{video_id}:{grounder.feature_id}"
            record = records.get_video(video_id)
            alive = record is not None
            entry = record.encoding(model) if record is not None else None
            self._thumbnails[video_id] = entry.thumbnails if entry is not None and \
                entry.feature_id == grounder.feature_id else 0
            state = grounder.cached_state(key) if alive else None
            source: Any = state
            duration = self._durations.get(video_id)
            if alive and state is None:
                found = features.get(video_id, grounder.feature_id)
                if found is not None:
                    from .pipeline import features_to_tensor

                    source, duration = features_to_tensor(found), VideoInfo(**found.video).duration
            if source is None or duration is None:  # deleted or expired since it was indexed
                self.index(model, grounder).remove(video_id)
                features.store.index_remove(library, video_id)
                continue
            out.append(LibraryVideo(video_id, source, duration, key))
        return out
