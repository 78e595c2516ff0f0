"""The two-phase grounding API: encode a video once, answer any number of queries on it.

``Grounder.encode_video`` runs the frozen CLIP image tower and keeps the last k layers as float16
(K, T, P, C) features: everything the service caches in Redis. ``Grounder.ground`` answers a batch of text
queries on those features; the query-independent part of the R2 block (:class:`models.r2.VideoState`) is
kept in an in-memory LRU keyed by the caller's ``video_key``, one level above the Redis cache, and text
features of repeated queries come from a text LRU. Only the text tower (on a miss) and the query-dependent
adapter run per query.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from .checkpoint import CheckpointError, load_r2_checkpoint
from .clip import ClipTowers, load_clip
from .postprocess import NmsConfig, highlights, postprocess_boundaries, round_rows, select_moments, summarize
from .r2 import R2Tuning, RawOutput, VideoState
from .video import EmptyVideoError, FrameSpec, VideoInfo, decode_in_subprocess
from .zoo import ModelSpec, ensure_weights

# Per pipeline (FrameSpec.preprocess): bump when its frame sampling / resizing / normalisation changes; it
# invalidates that pipeline's cached features. The keys are the pipelines a caller may pick.
PREPROCESS_VERSIONS: dict[str, int] = {"script": 1, "extract": 1}


class UnknownPreprocessError(ValueError):
    """A frame pipeline name that does not exist; the message lists the ones that do."""

    def __init__(self, name: object) -> None:
        super().__init__(f"unknown frame pipeline {str(name)[:40]!r}; choose one of: "
                         + ", ".join(PREPROCESS_VERSIONS))
        self.name = name

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class GroundingResult:
    """Answer to one query: moments in seconds and one saliency value per clip."""

    query: str
    moments: list[tuple[float, float, float]]  # (start, end, score), best first; empty for highlight-only
    saliency: list[float]  # one value per clip of clip_seconds
    clip_seconds: float  # 1 / fps
    duration: float  # seconds, moments are clamped to it
    # Seconds (0 = the video's start, as a player shows it) of the frame each saliency value was computed on, when
    # the caller gave them (VideoInfo.player_clip_times()): not i x clip_seconds for a variable-frame-rate video,
    # whose frames are sampled by index. None when unknown (e.g. pre-extracted features).
    clip_times: list[float] | None = None


class _LRU:
    """A small thread-safe LRU bounded by a cost function (entries or bytes)."""

    def __init__(self, capacity: int, cost: Callable[[object], int] = lambda _: 1) -> None:
        self.capacity, self.cost, self.used = capacity, cost, 0
        self.items: OrderedDict[object, object] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: object) -> object | None:
        with self.lock:
            if key not in self.items:
                return None
            self.items.move_to_end(key)
            return self.items[key]

    def put(self, key: object, value: object) -> None:
        with self.lock:
            if key in self.items:
                self.used -= self.cost(self.items.pop(key))
            self.items[key] = value
            self.used += self.cost(value)
            while self.used > self.capacity and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.used -= self.cost(old)

    def pop(self, key: object) -> None:
        with self.lock:
            if key in self.items:
                self.used -= self.cost(self.items.pop(key))


_CLIP_CACHE: dict[tuple[str, str], ClipTowers] = {}
_CLIP_LOCK = threading.Lock()


def shared_clip(weights: Path, device: str | torch.device = "cpu") -> ClipTowers:
    """CLIP towers from a weights file, loaded once per process and shared by every checkpoint that uses them."""
    key = (str(weights), str(device))
    with _CLIP_LOCK:
        if key not in _CLIP_CACHE:
            _CLIP_CACHE[key] = load_clip(str(weights), device=device)
        return _CLIP_CACHE[key]


class Grounder:
    """One R2-Tuning checkpoint with its CLIP towers and its dataset's post-processing settings."""

    def __init__(self, clip: ClipTowers, model: R2Tuning, spec: ModelSpec, *, precision: Precision = "fp32",
                 query_fp16: bool = True, state_cache_bytes: int = 1 << 30, text_cache_size: int = 4096,
                 max_batch: int = 64) -> None:
        cfg = model.cfg
        if (cfg.video_width, cfg.query_width) != (clip.vision_width, clip.text_width):
            raise CheckpointError(
                f"checkpoint of {spec.name!r} expects CLIP widths video={cfg.video_width} text={cfg.query_width}, "
                f"but the CLIP towers give video={clip.vision_width} text={clip.text_width}: wrong CLIP weights?")
        if cfg.k > min(clip.vision_layers, clip.text_layers) + 1:
            raise CheckpointError(f"checkpoint of {spec.name!r} uses k={cfg.k} layers but the CLIP towers have "
                                  "fewer: wrong CLIP weights?")
        self.clip, self.model, self.spec = clip, model, spec
        self.precision = precision
        # The released checkpoints were evaluated on query features stored as float16.
        self.query_fp16 = query_fp16
        self.max_batch = max_batch
        self.frame_spec = FrameSpec(fps=spec.fps, size=clip.image_size, preprocess=spec.preprocess)
        self._states = _LRU(state_cache_bytes, cost=lambda s: s.nbytes)  # type: ignore[attr-defined]
        self._texts = _LRU(text_cache_size)
        self._feature_ids: dict[tuple[FrameSpec, str], str] = {}  # shared with variants: keyed by their spec
        self.stats: dict[str, int] = dict(clip_frames=0, video_states_built=0, video_state_hits=0,
                                          text_encodes=0, text_cache_hits=0, queries=0)

    @classmethod
    def from_spec(cls, spec: ModelSpec, *, device: str | torch.device = "cpu", precision: Precision = "fp32",
                  download: bool = True, **kwargs: object) -> Grounder:
        """Load (downloading and verifying if needed) the checkpoint and CLIP weights a spec names."""
        ckpt, clip_weights = ensure_weights(spec, download=download)
        return cls(shared_clip(clip_weights, device), load_r2_checkpoint(ckpt, device=device), spec,
                   precision=precision, **kwargs)  # type: ignore[arg-type]

    def variant(self, *, preprocess: str | None = None, fps: float | None = None) -> Grounder:
        """The same checkpoint with frames made by another pipeline and/or sampled at another rate.

        The variant shares the weights, the in-memory caches and the stats with this grounder; only
        ``frame_spec``, ``spec.preprocess`` / ``spec.fps`` and therefore ``feature_id`` differ, so features made
        one way are never taken for the other. ``None`` keeps this grounder's value; the same values give
        ``self``. An unknown pipeline raises :class:`UnknownPreprocessError`, a bad rate ``ValueError``.
        """
        preprocess = self.spec.preprocess if preprocess is None else preprocess
        fps = self.spec.fps if fps is None else fps
        if preprocess not in PREPROCESS_VERSIONS:
            raise UnknownPreprocessError(preprocess)
        if preprocess == self.spec.preprocess and fps == self.spec.fps:
            return self
        other = copy.copy(self)  # shallow: clip, model, LRUs and stats are shared
        other.spec = dataclasses.replace(self.spec, preprocess=preprocess, fps=fps)  # type: ignore[arg-type]
        other.frame_spec = FrameSpec(fps=fps, size=self.frame_spec.size, preprocess=preprocess)  # type: ignore[arg-type]
        return other

    @property
    def k(self) -> int:
        return self.model.cfg.k

    @property
    def device(self) -> torch.device:
        return self.model.coef.device

    @property
    def feature_id(self) -> str:
        """Identifies everything that changes cached video features (the video hash comes on top)."""
        fs = self.frame_spec
        known = self._feature_ids.get((fs, self.precision))  # every job asks, several times: hash once per spec
        if known is not None:
            return known
        parts = dict(clip=self.clip.fingerprint, k=self.k, size=fs.size, mean=list(fs.mean), std=list(fs.std),
                     fps=fs.fps, preprocess=fs.preprocess, preprocess_version=PREPROCESS_VERSIONS[fs.preprocess],
                     precision=self.precision)
        found = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
        self._feature_ids[(fs, self.precision)] = found
        return found

    # ----------------------------------------------------------------------------------------- video side

    def encode_video(self, frames: Tensor | Iterable[Tensor], dtype: torch.dtype = torch.float16) -> Tensor:
        """Normalised frames (n, 3, S, S), or an iterable of such chunks -> (K, T, P, C) features.

        float16 is the storage format of the official feature files and of our cache; pass float32 to
        reproduce the official end-to-end script bit for bit.
        """
        chunks = [frames] if isinstance(frames, Tensor) else frames
        out = []
        for chunk in chunks:
            feats = self.clip.encode_frames(chunk.to(self.device), last_k=self.k, dtype=_DTYPES[self.precision])
            out.append(feats.to(dtype).cpu())  # (K, n, P, C)
            self.stats["clip_frames"] += chunk.shape[0]
        if not out:
            raise ValueError("no frames to encode")
        return torch.cat(out, dim=1)

    def encode_file(self, path: str | Path, *, timeout_s: float = 600.0, max_duration: float | None = None,
                    max_pixels: int | None = None, progress: Callable[[float], None] | None = None,
                    chunk_size: int = 16, stage: Callable[[str], AbstractContextManager[object]] | None = None,
                    on_frames: Callable[[Tensor], None] | None = None) -> tuple[VideoInfo, Tensor]:
        """Decode a file in a killable child process (time-limited) while encoding earlier chunks here.

        ``progress`` gets the encoded fraction after each chunk; ``stage("decode")`` / ``stage("encode")``
        wrap the time spent waiting for the decoder and encoding, so callers can report the split; ``on_frames``
        sees each chunk of preprocessed frames, (n, 3, size, size), one per clip (the service keeps thumbnails).
        """
        stage = stage or (lambda _: nullcontext())
        info: VideoInfo | None = None
        chunks: list[Tensor] = []
        done = 0
        decoded = iter(decode_in_subprocess(path, self.frame_spec, timeout_s=timeout_s, chunk_size=chunk_size,
                                            max_duration=max_duration, max_pixels=max_pixels))
        while True:
            with stage("decode"):
                item = next(decoded, None)
            if item is None:
                break
            info, frames = item
            if on_frames is not None:
                on_frames(frames)
            with stage("encode"):
                chunks.append(self.encode_video(frames))
            done += frames.shape[0]
            if progress is not None:
                progress(min(1.0, done / max(1, expected_clips(info, self.frame_spec.fps,
                                                               self.frame_spec.preprocess))))
        if info is None or not chunks:
            raise EmptyVideoError(f"{Path(path).name}: the decoder returned no frames")
        return info, torch.cat(chunks, dim=1)

    def video_state(self, features: Tensor, video_key: str | None = None) -> VideoState:
        """The query-independent adapter work, from the in-memory LRU when this video was seen before."""
        if video_key is not None:
            state = self.cached_state(video_key)
            if state is not None:
                return state
        if features.dim() != 4 or features.shape[0] != self.k:
            raise ValueError(f"features must be (K={self.k}, T, P, C), got {tuple(features.shape)}")
        state = self.model.prepare_video(features.to(self.device))
        self.stats["video_states_built"] += 1
        if video_key is not None:
            self._states.put(video_key, state)
        return state

    def holds(self, video_key: str) -> bool:
        """Whether the query-independent work for this video is in memory (checked without using it)."""
        return video_key in self._states.items

    def cached_state(self, video_key: str) -> VideoState | None:
        """The query-independent work for this video if it is in memory: answering then needs no features."""
        state = self._states.get(video_key)
        if state is not None:
            self.stats["video_state_hits"] += 1
        return state  # type: ignore[return-value]

    def forget_video(self, video_key: str) -> None:
        self._states.pop(video_key)

    # ----------------------------------------------------------------------------------------- query side

    def _text_features(self, queries: Sequence[str], full_context: bool) -> list[Tensor]:
        """Per query (K, L, Cq): valid tokens only (features path) or all 77 positions (end-to-end path)."""
        found: dict[str, Tensor] = {}
        todo = []
        for q in dict.fromkeys(queries):
            hit = self._texts.get((q, full_context))
            if hit is None:
                todo.append(q)
            else:
                found[q] = hit  # type: ignore[assignment]
                self.stats["text_cache_hits"] += 1
        if todo:
            tokens = self.clip.tokenize(todo).to(self.device)
            lengths = self.clip.valid_lengths(tokens)
            # The text tower is causal, so cutting the padding does not change the valid positions.
            width = tokens.shape[1] if full_context else int(lengths.max())
            stack = self.clip.encode_text(tokens[:, :width], last_k=self.k)  # (K, B, width, Cq)
            if self.query_fp16 and not full_context:
                stack = stack.half()
            for j, q in enumerate(todo):
                feats = stack[:, j] if full_context else stack[:, j, : int(lengths[j])]
                found[q] = feats.float().cpu()
                self._texts.put((q, full_context), found[q])
            self.stats["text_encodes"] += len(todo)
        return [found[q] for q in queries]

    def _query_batch(self, queries: Sequence[str | Tensor], full_context: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Pad per-query features to (B, K, L, Cq) with an attention mask and a max-pool mask."""
        texts = [q for q in queries if isinstance(q, str)]
        encoded = iter(self._text_features(texts, full_context) if texts else [])
        feats = [next(encoded) if isinstance(q, str) else q.float().cpu() for q in queries]
        longest = max(f.shape[1] for f in feats)
        k, _, c = feats[0].shape
        batch = torch.zeros(len(feats), k, longest, c)
        mask = torch.zeros(len(feats), longest)
        for b, f in enumerate(feats):
            if f.dim() != 3 or f.shape[0] != k or f.shape[2] != c:
                raise ValueError(f"query features must be (K={k}, L, C={c}), got {tuple(f.shape)}")
            batch[b, :, : f.shape[1]] = f
            mask[b, : f.shape[1]] = 1
        if full_context:
            # End-to-end path: padding tokens are masked for attention but still enter the max.
            tokens = self.clip.tokenize(texts)
            return batch, (tokens != 0).float(), torch.ones_like(mask)
        return batch, mask, mask

    def ground(self, features: Tensor | VideoState, queries: Sequence[str | Tensor], *, fps: float | None = None,
               video_key: str | None = None, duration: float | None = None, top_k: int | None = 10,
               nms_thres: float | None = None, min_score: float | None = None,
               query_path: Literal["features", "e2e"] | None = None,
               clip_times: Sequence[float] | None = None) -> list[GroundingResult]:
        """Answer queries on one encoded video, batched; results are in query order.

        A query is a text, or pre-extracted (K, L, Cq) text features as the official feature files hold.

        ``duration`` (seconds) defaults to T / fps; the service passes the decoded video's duration.
        ``query_path`` defaults to the spec's: "features" (how the checkpoints were evaluated) or "e2e"
        (the official single-video script: all 77 token positions). ``clip_times`` (one per clip, from
        ``info.player_clip_times()``) is passed through to each result. Moments come rounded to what the spec's
        ``unit`` means (:func:`models.postprocess.round_rows`), without float32 noise.
        """
        if not queries:
            return []
        state = features if isinstance(features, VideoState) else self.video_state(features, video_key)
        if clip_times is not None and len(clip_times) != state.num_frames:
            raise ValueError(f"clip_times has {len(clip_times)} values for {state.num_frames} clips")
        times = None if clip_times is None else [float(t) for t in clip_times]
        fps = fps or self.spec.fps
        duration = state.num_frames / fps if duration is None else duration
        nms = NmsConfig(type=self.spec.nms_type,
                        thres=self.spec.nms_thres if nms_thres is None else nms_thres)
        results: list[GroundingResult] = []
        for start in range(0, len(queries), self.max_batch):
            part = list(queries[start: start + self.max_batch])
            raw = self.predict_raw(state, part, fps=fps, query_path=query_path)
            for b, text in enumerate(part):
                moments: list[tuple[float, float, float]] = []
                if raw.boundary is not None:
                    rows = postprocess_boundaries(raw.boundary[b].float().cpu(), duration, self.spec.unit, nms)
                    moments = round_rows(select_moments(rows, top_k, min_score), self.spec.unit)
                results.append(GroundingResult(query=text if isinstance(text, str) else "", moments=moments,
                                               saliency=raw.saliency[b].float().cpu().tolist(),
                                               clip_seconds=1.0 / fps, duration=duration, clip_times=times))
        self.stats["queries"] += len(queries)
        return results

    def predict_raw(self, state: VideoState, queries: Sequence[str | Tensor], *, fps: float | None = None,
                    query_path: Literal["features", "e2e"] | None = None) -> RawOutput:
        """Model output before post-processing (raw boundaries and saliency) for one batch of queries."""
        full_context = (query_path or self.spec.query_path) == "e2e"
        if full_context and not all(isinstance(q, str) for q in queries):
            raise ValueError("the end-to-end query path needs texts, not pre-extracted query features")
        query, mask, pool_mask = self._query_batch(queries, full_context)
        dev = self.device
        return self.model(state, query.to(dev), mask.to(dev), fps or self.spec.fps, pool_mask.to(dev))

    def summarize(self, result: GroundingResult, budget: float = 0.15) -> list[tuple[float, float, float]]:
        """Highest-saliency clips up to ``budget`` x duration seconds, merged into segments (rounded as moments)."""
        return round_rows(summarize(result.saliency, result.clip_seconds, result.duration, budget), self.spec.unit)

    def highlights(self, result: GroundingResult, top_k: int = 5) -> list[tuple[float, float, float]]:
        """The ``top_k`` most salient clips, highest first (rounded as moments)."""
        return round_rows(highlights(result.saliency, result.clip_seconds, result.duration, top_k), self.spec.unit)


def expected_clips(info: VideoInfo, fps: float, preprocess: str = "script") -> int:
    """How many clips the official sampling takes from a video at ``fps``: "script" one per stride of frames,
    "extract" the fps filter's round(fps x duration), halves up."""
    if preprocess == "extract":
        return max(1, int(fps * info.duration + 0.5))
    stride = info.avg_fps / fps
    return max(1, int(-(-info.num_frames // stride)))
