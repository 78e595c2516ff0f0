"""Per-sample training data and its collation into the padded batch the official model receives.

Features are in the official cache layout: video ``(T, K, P, C)`` float16 (the last K CLIP layers, P tokens with
the CLS token first) and query ``(L, K, Cq)`` float16. Collation follows nncore's ``collate``: every tensor is
padded at the end of each axis to the batch maximum (video, query and windows with +inf, so that masks can be
read back with ``isfinite``; saliency with 0) and stacked.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .labels import LabelConfig, TrainingLabelError, bind_boundary, bind_saliency, draw_positive_clip


@dataclass(frozen=True)
class GroundingSample:
    """One (video, query) training pair with its targets."""

    video: Tensor  # (T, K, P, C) float16 CLIP features of the video's clips
    query: Tensor  # (L, K, Cq) float16 CLIP features of the query's tokens
    boundary: Tensor  # (N, 2) GT windows in seconds after bind_boundary
    saliency: Tensor  # (T,) float32 per-clip saliency in [0, 1]
    pos_clip: int  # a clip with saliency > 0, the contrastive anchor
    fps: float


@dataclass
class TrainBatch:
    """A collated batch of B different videos, one query each (what ``model(data, mode='train')`` reads)."""

    video: Tensor  # (B, Tmax, K*P*C) float16, rows past a video's length are +inf
    query: Tensor  # (B, Lmax, K*Cq) float16, rows past a query's length are +inf
    boundary: Tensor  # (B, Nmax, 2) float32 seconds, rows past a sample's window count are +inf
    saliency: Tensor  # (B, Tmax) float32, 0 past a video's length
    pos_clip: Tensor  # (B, 1) int64
    fps: list[float]  # one per sample (windows in seconds -> clip units)

    @property
    def video_mask(self) -> Tensor:
        return self.video[:, :, 0].isfinite().long()  # (B, Tmax)

    @property
    def query_mask(self) -> Tensor:
        return self.query[:, :, 0].isfinite().long()  # (B, Lmax)

    def to(self, device: torch.device | str) -> TrainBatch:
        return TrainBatch(video=self.video.to(device), query=self.query.to(device),
                          boundary=self.boundary.to(device), saliency=self.saliency.to(device),
                          pos_clip=self.pos_clip.to(device), fps=list(self.fps))


def make_sample(video: Tensor, query: Tensor, label: dict, rng: random.Random,
                cfg: LabelConfig = LabelConfig()) -> GroundingSample:
    """Targets of one annotation on its features, as the official ``Grounding.__getitem__`` builds them.

    ``rng`` draws the positive clip; the official dataset uses the global ``random`` module, so a
    ``random.Random(seed)`` shared by the samples in loading order reproduces ``random.seed(seed)`` there.
    """
    if video.dim() != 4 or query.dim() != 3:
        raise TrainingLabelError(f"qid {label.get('qid')}: video features must be (T, K, P, C) and query (L, K, Cq), "
                                 f"got {tuple(video.shape)} and {tuple(query.shape)}")
    num_clips = video.shape[0]
    if "relevant_windows" not in label:
        raise TrainingLabelError(f"qid {label.get('qid')}: moment training needs relevant_windows")
    boundary = bind_boundary(label["relevant_windows"], num_clips, cfg.fps)
    saliency = bind_saliency(label, num_clips, boundary, cfg)
    pos_clip = draw_positive_clip(saliency, rng, label.get("qid"))
    return GroundingSample(video=video, query=query, boundary=boundary, saliency=saliency, pos_clip=pos_clip,
                           fps=cfg.fps)


def _pad_stack(rows: Sequence[Tensor], value: float) -> Tensor:
    """Pad every tensor at the end of its first axis to the longest one and stack (nncore collate)."""
    longest = max(r.shape[0] for r in rows)
    pads = [F.pad(r, (0, 0) * (r.dim() - 1) + (0, longest - r.shape[0]), value=value) for r in rows]
    return torch.stack(pads)


def collate(samples: Sequence[GroundingSample]) -> TrainBatch:
    """Stack samples into one padded batch; features keep their float16 storage."""
    if not samples:
        raise TrainingLabelError("cannot collate an empty list of samples")
    shapes = {s.video.shape[1:] for s in samples}, {s.query.shape[1:] for s in samples}
    if len(shapes[0]) > 1 or len(shapes[1]) > 1:
        raise TrainingLabelError(f"samples disagree on the feature layout: video {shapes[0]}, query {shapes[1]}")
    inf = float("inf")
    return TrainBatch(
        video=_pad_stack([s.video.reshape(s.video.shape[0], -1) for s in samples], inf),
        query=_pad_stack([s.query.reshape(s.query.shape[0], -1) for s in samples], inf),
        boundary=_pad_stack([s.boundary for s in samples], inf),
        saliency=_pad_stack([s.saliency for s in samples], 0.0),
        pos_clip=torch.tensor([[s.pos_clip] for s in samples], dtype=torch.long),
        fps=[s.fps for s in samples],
    )
