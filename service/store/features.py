"""The feature cache: encoded video features keyed by (video SHA-256, the grounder's feature id)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from service.contract.keys import Keys

from .chunks import ChunkStore, CorruptEntry

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


class FeatureCache:
    """Video features keyed by (video SHA-256, the grounder's feature_id)."""

    def __init__(self, store: ChunkStore, keys: Keys, ttl_s: int) -> None:
        self.store, self.keys, self.ttl_s = store, keys, ttl_s

    def get(self, video_id: str, feature_id: str) -> CachedFeatures | None:
        name = self.keys.features(video_id, feature_id)
        found = self.store.get(name)
        if found is None:
            return None
        meta, data = found
        try:
            dtype, shape = str(meta["dtype"]), tuple(int(d) for d in meta["shape"])
            if meta.get("version") != FEATURES_VERSION or meta.get("feature_id") != feature_id:
                raise CorruptEntry("written by another version or for other features")
            if dtype not in _ITEMSIZE or math.prod(shape) * _ITEMSIZE[dtype] != len(data):
                raise CorruptEntry(f"{len(data)} bytes do not hold a {dtype} tensor of shape {shape}")
            video = dict(meta["video"])
        except (KeyError, TypeError, ValueError) as err:
            log.warning("feature entry %s has a bad header (%s): deleted, treated as a miss", name, err)
            self.store.delete(name)
            if self.store.on_corrupt is not None:
                self.store.on_corrupt(name, str(err))
            return None
        self.store.touch(name, self.ttl_s)
        return CachedFeatures(dtype, shape, data, video)

    def put(self, video_id: str, feature_id: str, features: CachedFeatures) -> None:
        meta = dict(version=FEATURES_VERSION, feature_id=feature_id, dtype=features.dtype,
                    shape=list(features.shape), video=features.video)
        self.store.index_add(self.keys.feature_ids(video_id), feature_id, self.ttl_s)
        self.store.put(self.keys.features(video_id, feature_id), [features.data], meta, self.ttl_s)

    def exists(self, video_id: str, feature_id: str) -> bool:
        return self.store.exists(self.keys.features(video_id, feature_id))

    def delete_video(self, video_id: str) -> int:
        """Delete every cached feature entry of the video (whatever model or version wrote it)."""
        index = self.keys.feature_ids(video_id)
        feature_ids = self.store.index_members(index)
        for feature_id in feature_ids:
            self.store.delete(self.keys.features(video_id, feature_id))
        self.store.index_drop(index)
        return len(feature_ids)
