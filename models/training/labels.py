"""Training targets of one QVHighlights-style annotation, as the official ``Grounding`` dataset builds them.

An annotation is a jsonl record with ``duration`` (seconds), ``relevant_windows`` ([[start, end], ...] seconds)
and, for QVHighlights, ``relevant_clip_ids`` + ``saliency_scores`` (three 0..4 ratings per clip). The dataset
turns it into GT windows clamped to the features' length, a per-clip saliency in [0, 1] and one positive clip
drawn at random among the clips with saliency > 0 (the anchor of the contrastive losses).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor


class TrainingLabelError(ValueError):
    """An annotation that cannot become training targets (wrong length, no positive clip, no window)."""


@dataclass(frozen=True)
class LabelConfig:
    """How annotations become targets (the official QVHighlights training settings)."""

    fps: float = 0.5  # feature clips per second; windows in seconds become clip units through it
    max_saliency: int = 12  # sum of the three 0..4 ratings of a clip at most; saliency = sum / this
    max_extra_clips: int = 5  # the official dataset asserts duration*fps exceeds the features by fewer clips
    min_video_len: float = 5.0  # seconds; shorter annotated videos are left out of training (QVH train split)
    max_video_len: float = -1.0  # seconds; <= 0 keeps every length


def is_trainable(label: dict, cfg: LabelConfig) -> bool:
    """Whether the official dataset keeps an annotation, judged by its duration alone."""
    duration = float(label["duration"])
    too_short = cfg.min_video_len > 0 and duration < cfg.min_video_len
    too_long = cfg.max_video_len > 0 and duration > cfg.max_video_len
    return not (too_short or too_long)


def bind_boundary(windows: list[list[float]], num_clips: int, fps: float) -> Tensor:
    """GT windows (N, 2) in seconds, clamped to the features' span; reversed windows are swapped and windows
    shorter than one clip are widened to exactly one clip around their centre (kept inside the video)."""
    if not windows:
        raise TrainingLabelError("relevant_windows is empty; every training query needs at least one window")
    max_time = num_clips / fps
    boundary = torch.tensor(windows, dtype=torch.float32).clamp(min=0, max=max_time)  # (N, 2)
    reversed_rows = boundary[:, 1] - boundary[:, 0] < 0
    boundary[reversed_rows] = boundary[reversed_rows].flip(-1)
    short = boundary[:, 1] - boundary[:, 0] < 1 / fps
    # The same float32 operations and scalars as the official loop, so widened windows agree to the bit.
    center = (boundary[short].sum(-1) / 2).clamp(min=0.5 / fps, max=max_time - 0.5 / fps)
    boundary[short] = torch.stack((center - 0.5 / fps, center + 0.5 / fps), dim=-1)
    return boundary


def bind_saliency(label: dict, num_clips: int, boundary: Tensor | None, cfg: LabelConfig) -> Tensor:
    """Per-clip saliency (num_clips,): mean rating from ``saliency_scores`` or, without ratings, 1 inside the
    GT windows (clips ceil(start*fps) .. ceil(end*fps)-1)."""
    if "saliency_scores" in label and "relevant_clip_ids" in label:
        length = int(label["duration"] * cfg.fps)
        if not num_clips <= length < num_clips + cfg.max_extra_clips:
            raise TrainingLabelError(
                f"qid {label.get('qid')}: duration {label['duration']} s is {length} clips at {cfg.fps} fps but the "
                f"video features have {num_clips}; they must agree within {cfg.max_extra_clips} clips")
        saliency = torch.zeros(length)
        for idx, scores in zip(label["relevant_clip_ids"], label["saliency_scores"], strict=True):
            saliency[idx] = sum(scores) / cfg.max_saliency
        return saliency[:num_clips]
    if boundary is None:
        raise TrainingLabelError(f"qid {label.get('qid')}: neither saliency_scores nor relevant_windows")
    saliency = torch.zeros(num_clips)
    for start, end in (boundary * cfg.fps).tolist():
        saliency[math.ceil(start):math.ceil(end)] = 1
    return saliency


def draw_positive_clip(saliency: Tensor, rng: random.Random, qid: object = None) -> int:
    """One clip with saliency > 0, drawn with ``rng.sample`` exactly as the official dataset draws it (so a
    ``random.Random(seed)`` reproduces the official choice for the same seed and sample order)."""
    candidates = saliency.nonzero()[:, 0].tolist()
    if not candidates:
        raise TrainingLabelError(f"qid {qid}: no clip with saliency > 0 inside the video features")
    return rng.sample(candidates, 1)[0]
