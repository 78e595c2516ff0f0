"""The feature cache: encoded video features keyed by (video SHA-256, the grounder's feature id).

Two tiers: the hot copy in a :class:`ChunkStore` (Redis, or embedded mode's memory), bounded by its memory
budget and evictable at any time, and, when configured, the cold copy in a :class:`ColdStore`, written once
and kept while the video lives. A read that finds no hot copy reads the cold one (and puts it back in the hot
tier) instead of letting the worker decode the video again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from service.contract.keys import Keys
from service.contract.metrics import COLD_HITS, COLD_MISSES, HOT_HITS, HOT_MISSES, MetricsBatch

from .chunks import ChunkStore, CorruptEntry, NoRoom
from .cold import ColdStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedFeatures:
    """Encoded video features as raw bytes (the worker turns them into a tensor; no torch here)."""

    dtype: str  # "float16"
    shape: tuple[int, ...]  # (K, T, P, C)
    data: bytes
    video: dict[str, Any]  # VideoInfo fields: num_frames, avg_fps, width, height, duration


_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}
FEATURES_VERSION = 1
KIND = "features"  # the ``kind`` label of the tier counters


def cold_name(feature_id: str) -> str:
    """Name of a feature entry in the cold tier (see :mod:`service.store.cold`)."""
    return f"feat-{feature_id}"


def _decode(meta: dict[str, Any], data: bytes, feature_id: str) -> CachedFeatures:
    """The features an entry holds; :class:`CorruptEntry` when its meta does not describe its payload."""
    try:
        dtype, shape = str(meta["dtype"]), tuple(int(d) for d in meta["shape"])
        if meta.get("version") != FEATURES_VERSION or meta.get("feature_id") != feature_id:
            raise CorruptEntry("written by another version or for other features")
        if dtype not in _ITEMSIZE or math.prod(shape) * _ITEMSIZE[dtype] != len(data):
            raise CorruptEntry(f"{len(data)} bytes do not hold a {dtype} tensor of shape {shape}")
        return CachedFeatures(dtype, shape, data, dict(meta["video"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptEntry(str(err)) from err


class FeatureCache:
    """Video features keyed by (video SHA-256, the grounder's feature_id), hot and (optionally) cold."""

    def __init__(self, store: ChunkStore, keys: Keys, ttl_s: int, cold: ColdStore | None = None) -> None:
        self.store, self.keys, self.ttl_s, self.cold = store, keys, ttl_s, cold

    def get(self, video_id: str, feature_id: str, counts: MetricsBatch | None = None) -> CachedFeatures | None:
        """The features from the hot tier, else from the cold tier (then made hot again); None when neither has
        them. ``counts`` gets the tier hits and misses."""
        counts = counts if counts is not None else MetricsBatch()
        found = self._hot(video_id, feature_id)
        if found is not None:
            counts.inc(HOT_HITS, kind=KIND)
            return found
        counts.inc(HOT_MISSES, kind=KIND)
        if self.cold is None:
            return None
        found = self._cold(video_id, feature_id)
        if found is None:
            counts.inc(COLD_MISSES, kind=KIND)
            return None
        counts.inc(COLD_HITS, kind=KIND)
        self._put_hot(video_id, feature_id, found)
        return found

    def _hot(self, video_id: str, feature_id: str) -> CachedFeatures | None:
        name = self.keys.features(video_id, feature_id)
        entry = self.store.get(name)
        if entry is None:
            return None
        try:
            features = _decode(*entry, feature_id)
        except CorruptEntry as err:
            log.warning("feature entry %s has a bad header (%s): deleted, treated as a miss", name, err)
            self.store.delete(name)
            if self.store.on_corrupt is not None:
                self.store.on_corrupt(name, str(err))
            return None
        self.store.touch(name, self.ttl_s)
        return features

    def _cold(self, video_id: str, feature_id: str) -> CachedFeatures | None:
        assert self.cold is not None
        entry = self.cold.get(video_id, cold_name(feature_id))
        if entry is None:
            return None
        try:
            return _decode(*entry, feature_id)
        except CorruptEntry as err:
            log.warning("cold feature entry of %s/%s has a bad header (%s): deleted", video_id, feature_id, err)
            self.cold.delete(video_id, cold_name(feature_id))
            if self.cold.on_corrupt is not None:
                self.cold.on_corrupt(f"cold:{video_id}/{cold_name(feature_id)}", str(err))
            return None

    def put(self, video_id: str, feature_id: str, features: CachedFeatures) -> None:
        """Cold copy first (it is what survives), then the hot one."""
        if self.cold is not None:
            self.cold.put(video_id, cold_name(feature_id), [features.data], self._meta(feature_id, features))
        self._put_hot(video_id, feature_id, features)

    def _meta(self, feature_id: str, features: CachedFeatures) -> dict[str, Any]:
        return dict(version=FEATURES_VERSION, feature_id=feature_id, dtype=features.dtype,
                    shape=list(features.shape), video=features.video)

    def _put_hot(self, video_id: str, feature_id: str, features: CachedFeatures) -> None:
        try:
            self.store.index_add(self.keys.feature_ids(video_id), feature_id, self.ttl_s)
            self.store.put(self.keys.features(video_id, feature_id), [features.data],
                           self._meta(feature_id, features), self.ttl_s)
        except NoRoom as err:
            if self.cold is None:
                raise
            log.warning("no room for a hot copy of %s/%s (%s): it is read from the cold tier", video_id,
                        feature_id, err)

    def exists(self, video_id: str, feature_id: str) -> bool:
        if self.store.exists(self.keys.features(video_id, feature_id)):
            return True
        return self.cold is not None and self.cold.exists(video_id, cold_name(feature_id))

    def delete_video(self, video_id: str) -> int:
        """Delete every feature entry of the video in both tiers (whatever model or version wrote it)."""
        index = self.keys.feature_ids(video_id)
        feature_ids = self.store.index_members(index)
        if self.cold is not None:  # the hot index may have been evicted: the cold tier lists the rest
            feature_ids |= {n.removeprefix("feat-") for n in self.cold.names(video_id) if n.startswith("feat-")}
        for feature_id in feature_ids:
            self.store.delete(self.keys.features(video_id, feature_id))
            if self.cold is not None:
                self.cold.delete(video_id, cold_name(feature_id))
        self.store.index_drop(index)
        return len(feature_ids)
