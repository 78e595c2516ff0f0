"""Training data: where features come from, and the examples an annotation file turns into.

Features are read in the official cache layout (video ``(T, K*P*C)`` float16 rows, query ``(L, K*Cq)``), one
file per video / query, and loaded again for every batch that uses them, so memory holds one batch, not the
dataset (the OS page cache keeps what fits). Two sources:

* :class:`FolderFeatures`: pre-extracted ``{vid}.npy`` / ``{qid}.npy`` folders as the official data ships them;
* :class:`EncodedFeatures`: videos decoded and encoded by :meth:`models.engine.Grounder.encode_file` (the
  serving pipeline: the same frames, the same CLIP, the same float16 features the service caches), written once
  to a cache folder keyed by the grounder's ``feature_id`` and the file's SHA-256; queries go through the same
  text tower as served queries (valid tokens, float16).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ..datasets import AnnotationError, AnnotationSet, LabelledVideo, MomentQuery
from .batch import GroundingSample, make_sample
from .labels import LabelConfig, TrainingLabelError, is_trainable

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")


class FeatureSource(Protocol):
    """Features of videos and queries in the official cache layout."""

    clip_seconds: float | None  # seconds per feature clip when known (videos encoded here); None: the dataset's

    def describe(self, vid: str) -> tuple[int, float | None]:
        """Number of feature clips and the video's duration in seconds when known (without loading features)."""

    def video(self, vid: str) -> tuple[Tensor, float | None]:
        """(T, K, P, C) float16 features and the video's duration in seconds when known."""

    def query(self, key: str, text: str) -> Tensor:
        """(L, K, Cq) float16 features of one query (``key``: its qid, or its vid for highlight datasets)."""


def _atomic_save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npy")
    os.close(fd)
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise AnnotationError(f"cannot read features {path}: {err}") from err


class FolderFeatures:
    """Official pre-extracted features: ``video_dir/{vid}.npy`` (T, K*P*C), ``query_dir/{key}.npy`` (L, K*Cq).

    Without ``query_dir`` queries are encoded by ``text_encoder`` (texts -> (K, L, Cq) each). A ``{vid}.json``
    next to a video's features may give its ``duration`` in seconds. ``clip_seconds`` is the features' clip
    length when known (then highlight labels with a duration are mapped onto the clips by time).
    """

    def __init__(self, video_dir: str | Path, k: int, video_width: int, query_width: int,
                 query_dir: str | Path | None = None,
                 text_encoder: Callable[[Sequence[str]], list[Tensor]] | None = None,
                 clip_seconds: float | None = None) -> None:
        self.clip_seconds = clip_seconds
        if query_dir is None and text_encoder is None:
            raise ValueError("pre-extracted video features need query features or a text encoder for the queries")
        self.video_dir, self.query_dir = Path(video_dir), Path(query_dir) if query_dir else None
        self.k, self.video_width, self.query_width = k, video_width, query_width
        self.text_encoder = text_encoder

    def _file(self, folder: Path, name: str) -> Path:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise AnnotationError(f"pre-extracted features {path} are missing")
        return path

    def describe(self, vid: str) -> tuple[int, float | None]:
        clips = int(_load(self._file(self.video_dir, vid)).shape[0])
        sidecar = self.video_dir / f"{vid}.json"
        duration = json.loads(sidecar.read_text()).get("duration") if sidecar.is_file() else None
        return clips, None if duration is None else float(duration)

    def video(self, vid: str) -> tuple[Tensor, float | None]:
        rows = _load(self._file(self.video_dir, vid))
        if rows.ndim != 2 or rows.shape[1] % (self.k * self.video_width):
            raise AnnotationError(f"features of video {vid} have shape {rows.shape}; expected (T, {self.k} layers x "
                                  f"tokens x {self.video_width})")
        video = torch.from_numpy(np.array(rows, dtype=np.float16))
        return video.view(rows.shape[0], self.k, -1, self.video_width), None  # (T, K, P, C)

    def query(self, key: str, text: str) -> Tensor:
        if self.query_dir is None:
            assert self.text_encoder is not None
            return self.text_encoder([text])[0].permute(1, 0, 2).half()  # (L, K, Cq)
        rows = _load(self._file(self.query_dir, key))
        if rows.ndim != 2 or rows.shape[1] != self.k * self.query_width:
            raise AnnotationError(f"features of query {key} have shape {rows.shape}; expected (L, "
                                  f"{self.k * self.query_width})")
        return torch.from_numpy(np.array(rows, dtype=np.float16)).view(rows.shape[0], self.k, self.query_width)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EncodedFeatures:
    """Videos from a folder (``{vid}.mp4`` or another container), encoded once by a Grounder and cached.

    Cache layout: ``cache_dir/<feature_id>/videos/<vid>-<sha256[:16]>.npy`` (official (T, K*P*C) float16 rows)
    with a ``.json`` of the decoder's :class:`~models.video.VideoInfo`, and ``.../queries/<sha256 of text>.npy``.
    A changed file gets a new entry; a different model pipeline (CLIP, fps, preprocessing) a new folder.
    """

    def __init__(self, grounder: object, video_dir: str | Path, cache_dir: str | Path, *,
                 timeout_s: float = 600.0, on_encode: Callable[[str], None] | None = None) -> None:
        self.grounder = grounder
        self.video_dir = Path(video_dir)
        self.root = Path(cache_dir) / grounder.feature_id  # type: ignore[attr-defined]
        self.clip_seconds = 1.0 / grounder.spec.fps  # type: ignore[attr-defined]
        self.timeout_s = timeout_s
        self.on_encode = on_encode
        self._paths: dict[str, tuple[Path, float]] = {}

    def video_file(self, vid: str) -> Path:
        for suffix in VIDEO_SUFFIXES:
            path = self.video_dir / f"{vid}{suffix}"
            if path.is_file():
                return path
        raise AnnotationError(f"video {vid!r} not found in {self.video_dir} (looked for {vid}.mp4, .mkv, .webm, ...)")

    def ensure(self, vid: str) -> tuple[Path, float]:
        """The cached features file of a video (encoding it first if needed) and its duration."""
        if vid in self._paths:
            return self._paths[vid]
        source = self.video_file(vid)
        stem = f"{vid}-{file_digest(source)[:16]}"
        path, meta = self.root / "videos" / f"{stem}.npy", self.root / "videos" / f"{stem}.json"
        if not (path.is_file() and meta.is_file()):
            if self.on_encode is not None:
                self.on_encode(vid)
            info, features = self.grounder.encode_file(source, timeout_s=self.timeout_s)  # type: ignore[attr-defined]
            k, t = features.shape[:2]
            _atomic_save(path, features.permute(1, 0, 2, 3).reshape(t, -1).numpy())  # (T, K*P*C)
            meta.write_text(json.dumps(dict(duration=info.duration, num_frames=info.num_frames,
                                            avg_fps=info.avg_fps, width=info.width, height=info.height)))
        duration = float(json.loads(meta.read_text())["duration"])
        self._paths[vid] = (path, duration)
        return path, duration

    def describe(self, vid: str) -> tuple[int, float | None]:
        path, duration = self.ensure(vid)
        return int(_load(path).shape[0]), duration

    def video(self, vid: str) -> tuple[Tensor, float | None]:
        path, duration = self.ensure(vid)
        rows = _load(path)
        cfg = self.grounder.model.cfg  # type: ignore[attr-defined]
        video = torch.from_numpy(np.array(rows, dtype=np.float16))
        return video.view(rows.shape[0], cfg.k, -1, cfg.video_width), duration

    def query(self, key: str, text: str) -> Tensor:
        path = self.root / "queries" / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.npy"
        if not path.is_file():
            feats = self.grounder._text_features([text], full_context=False)[0]  # type: ignore[attr-defined]
            _atomic_save(path, feats.permute(1, 0, 2).half().numpy())  # (L, K, Cq)
        return torch.from_numpy(np.array(_load(path), dtype=np.float16))


# ------------------------------------------------------------------------------------------------------ examples


@dataclass(frozen=True)
class Example:
    """One training / validation example: a query on a video (moments) or a video with its domain query."""

    key: str  # qid (moments) or vid (highlights): the official query feature file name
    vid: str
    query: str
    moment: dict | None = None  # official jsonl label (moments), duration filled in
    highlight: LabelledVideo | None = None  # labels on the features' clips (highlights)
    num_clips: int = 0
    duration: float = 0.0


def build_examples(annotations: AnnotationSet, source: FeatureSource, label_cfg: LabelConfig, *,
                   train: bool, progress: Callable[[int, int], None] | None = None) -> list[Example]:
    """Check every annotation against its features and turn it into an example.

    Training follows the official filters: moment queries of videos shorter than ``min_video_len`` are left out,
    and so are queries without windows. Features are read once here (encoding videos when needed).
    """
    out: list[Example] = []
    lengths: dict[str, tuple[int, float | None]] = {}
    vids = annotations.vids
    for index, vid in enumerate(vids):
        lengths[vid] = source.describe(vid)
        if progress is not None:
            progress(index + 1, len(vids))
    clip_s = source.clip_seconds
    if annotations.kind == "moments":
        for item in annotations.moments:
            num_clips, duration = lengths[item.vid]
            query = item if item.duration is not None else item.with_duration(
                duration if duration is not None else num_clips / label_cfg.fps)
            label = query.label()
            if train and (not query.windows or not is_trainable(label, label_cfg)):
                continue
            out.append(Example(key=str(item.qid), vid=item.vid, query=item.query, moment=label,
                               num_clips=num_clips, duration=float(label["duration"])))
    else:
        for video_item in annotations.highlights:
            num_clips, duration = lengths[video_item.vid]
            mapped = video_item.on_clips(num_clips, clip_s)
            seconds = duration or video_item.duration or num_clips * (clip_s or 1.0 / label_cfg.fps)
            out.append(Example(key=video_item.vid, vid=video_item.vid, query=video_item.query, highlight=mapped,
                               num_clips=min(num_clips, mapped.num_clips), duration=float(seconds)))
    if not out:
        raise AnnotationError(f"{annotations.source}: no usable {'training' if train else 'validation'} examples "
                              f"(videos shorter than {label_cfg.min_video_len} s and queries without windows are "
                              "left out of training)")
    return out


def make_highlight_sample(video: Tensor, query: Tensor, item: LabelledVideo, rng: random.Random,
                          fps: float) -> GroundingSample:
    """Targets of one highlight video, as the official YouTubeHighlights / TVSum ``__getitem__``: the per-clip
    saliency and one positive clip drawn with ``rng.sample``; the video is cut to the labelled clips."""
    saliency = torch.tensor(item.saliency(), dtype=torch.float32)
    num_clips = min(video.shape[0], saliency.shape[0])
    saliency, video = saliency[:num_clips], video[:num_clips]
    positives = item.positive_clips(saliency.tolist())
    if not positives:
        raise TrainingLabelError(f"video {item.vid}: no clip is positive (YouTube: match > 0; TVSum: above the "
                                 "median), so it has no contrastive anchor")
    return GroundingSample(video=video, query=query, boundary=torch.zeros(0, 2), saliency=saliency,
                           pos_clip=rng.sample(positives, 1)[0], fps=fps)


def example_sample(example: Example, source: FeatureSource, rng: random.Random,
                   label_cfg: LabelConfig) -> GroundingSample:
    """Load an example's features and build its targets."""
    video, _ = source.video(example.vid)
    query = source.query(example.key, example.query)
    if example.highlight is not None:
        return make_highlight_sample(video, query, example.highlight, rng, label_cfg.fps)
    assert example.moment is not None
    return make_sample(video, query, example.moment, rng, label_cfg)


__all__ = ["EncodedFeatures", "Example", "FeatureSource", "FolderFeatures", "MomentQuery", "build_examples",
           "example_sample", "make_highlight_sample"]
