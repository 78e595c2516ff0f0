"""Post-processing of R2-Tuning outputs: moment windows and saliency-based summaries.

`postprocess_boundaries` reproduces the official ``Grounding.evaluate`` post-processing bit for bit (same torch
operations, same float32 arithmetic, same quirks); `select_moments`, `highlights` and `summarize` shape the
answers the command line and the service return (the one place an answer is shaped).
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "NmsConfig",
    "postprocess_boundaries",
    "highlights",
    "select_moments",
    "summarize",
]

Row = tuple[float, float, float]
RowsLike = torch.Tensor | np.ndarray | Sequence[Sequence[float]]

_NMS_TYPES = ("normal", "linear")


@dataclass(frozen=True)
class NmsConfig:
    """Temporal non-maximum suppression settings, as in the official ``nms_cfg``.

    ``type="normal"`` zeroes the score of every later window whose IoU with the current one is ``>= thres``;
    ``type="linear"`` multiplies later scores by ``1 - IoU`` and ignores ``thres``.
    The official configs use ``normal`` with 0.7 (QVHighlights, TACoS, Ego4D) and ``linear`` (Charades-STA).
    """

    type: Literal["normal", "linear"]
    thres: float = 0.7

    def __post_init__(self) -> None:
        if self.type not in _NMS_TYPES:
            raise ValueError(f"NMS type must be one of {_NMS_TYPES}, got {self.type!r}")
        if isinstance(self.thres, bool) or not isinstance(self.thres, int | float) or not math.isfinite(self.thres):
            raise ValueError(f"NMS threshold must be a finite number, got {self.thres!r}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> NmsConfig:
        """Build from an official-style dict such as ``{"type": "normal", "thres": 0.7}``."""
        unknown = set(cfg) - {"type", "thres"}
        if unknown:
            raise ValueError(f"unknown NMS settings {sorted(unknown)}")
        if "type" not in cfg:
            raise ValueError("NMS settings need a 'type'")
        return cls(type=cfg["type"], thres=cfg.get("thres", 0.7))


def _as_boundary_tensor(boundary: torch.Tensor | np.ndarray) -> torch.Tensor:
    rows = torch.as_tensor(boundary)
    if rows.dim() != 2 or rows.size(1) != 3:
        raise ValueError(f"boundary must have shape (N, 3) [start, end, score], got {tuple(rows.shape)}")
    if not rows.is_floating_point() or rows.dtype == torch.bfloat16:  # NumPy, which runs the NMS, has no bf16
        rows = rows.to(torch.float32)
    if torch.isnan(rows[:, :2]).any():
        raise ValueError("boundary start/end values must not be NaN")
    # Work on a private copy: the official code edits its input in place, we do not.
    return rows.detach().clone()


def _check_positive_finite(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _temporal_iou_one_to_many(window: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one window with many, in the official operation order and dtype (so float32 results are
    identical to the official torch code).

    Two zero-length windows give 0 / 0 = NaN; callers rely on that (see `postprocess_boundaries`).
    """
    len_one = window[1] - window[0]
    len_others = others[:, 1] - others[:, 0]
    inter = (np.minimum(window[1], others[:, 1]) - np.maximum(window[0], others[:, 0])).clip(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (len_one + len_others - inter)


def _greedy_nms(rows: np.ndarray, nms: NmsConfig) -> None:
    """The official greedy NMS, in place. NumPy instead of torch because this loop of ~50 tiny steps per query
    cost ~9 ms in torch's per-op overhead; the float32 arithmetic (and NaN-first argmax) is the same."""
    for i in range(rows.shape[0]):
        best = int(rows[i:, 2].argmax()) + i
        if best != i:
            rows[[i, best]] = rows[[best, i]]
        iou = _temporal_iou_one_to_many(rows[i, :2], rows[i + 1 :, :2])
        later_scores = rows[i + 1 :, 2]  # a view: edits below land in `rows`
        with np.errstate(invalid="ignore"):
            if nms.type == "normal":
                later_scores[iou >= nms.thres] = 0
            else:
                later_scores *= 1 - iou


def postprocess_boundaries(
    boundary: torch.Tensor | np.ndarray,
    duration: float,
    unit: float | None,
    nms: NmsConfig | None,
) -> torch.Tensor:
    """Apply the official ``Grounding.evaluate`` post-processing to one video's boundary rows.

    Args:
        boundary: (N, 3) rows ``[start, end, score]`` in seconds, as the model emits them (N may be 0).
            Float dtypes are kept (the official path is float32); integer input is cast to float32.
            Start/end must not be NaN; scores may be NaN.
        duration: video length in seconds (> 0).
        unit: rounding grid in seconds; ``None`` or ``0`` disables rounding (the official ``unit > 0`` test).
        nms: suppression settings, or ``None`` for no NMS and **no final sort** (as in the official code).

    Returns:
        A new (N, 3) tensor; the input is not modified. Steps, exactly as the official code:

        1. remember which rows have an *unclamped* end ``< duration`` (compared in the tensor's dtype);
        2. clamp start and end into ``[0, duration]``;
        3. for the remembered rows only, ``torch.round(x / unit) * unit`` (half to even); rows whose end
           reached the duration keep their un-rounded values;
        4. greedy NMS: for each position i, swap the highest-scoring remaining row (first maximum; NaN counts
           as the maximum) into place i, then suppress later rows by their IoU with row i. Suppressed rows
           stay with score 0 (normal) or a scaled score (linear). Two zero-length windows have IoU NaN, which
           never suppresses under ``normal`` but turns the later score into NaN under ``linear``;
        5. sort by score, descending, with torch's default (unstable) sort: NaN scores come first, and the
           order among equal scores is not specified.
    """
    rows = _as_boundary_tensor(boundary)
    _check_positive_finite("duration", duration)
    if unit is not None and (
        isinstance(unit, bool) or not isinstance(unit, int | float) or not math.isfinite(unit) or unit < 0
    ):
        raise ValueError(f"unit must be None or a finite number >= 0, got {unit!r}")

    # Python scalars on purpose: torch then compares/clamps/divides in the tensor's dtype, like the original.
    inside = rows[:, 1] < duration
    rows[:, :2] = rows[:, :2].clamp(min=0, max=duration)
    if unit is not None and unit > 0:
        rows[inside, :2] = torch.round(rows[inside, :2] / unit) * unit

    if nms is None:
        return rows

    _greedy_nms(rows.numpy(), nms)  # in place, through a NumPy view of the same memory
    order = rows[:, 2].sort(descending=True).indices
    return rows[order]


def _rows_to_array(rows: RowsLike) -> np.ndarray:
    if isinstance(rows, torch.Tensor):
        array = rows.detach().cpu().to(torch.float64).numpy()
    else:
        array = np.asarray(rows, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 3))
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"rows must have shape (N, 3) [start, end, score], got {array.shape}")
    return array


def select_moments(rows: RowsLike, top_k: int | None, min_score: float | None) -> list[Row]:
    """Cut post-processed rows down to what the API returns.

    Rows keep their given order (`postprocess_boundaries` output is already ranked). Rows with a NaN score
    are always dropped: a NaN score (from linear NMS on zero-length windows) carries no ranking information and
    is not valid JSON. Then rows with ``score < min_score`` are dropped (``None`` keeps all), and the first
    ``top_k`` remaining rows are returned (``None`` keeps all) as ``(start, end, score)`` Python floats.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if min_score is not None and (
        isinstance(min_score, bool) or not isinstance(min_score, int | float) or not math.isfinite(min_score)
    ):
        raise ValueError(f"min_score must be None or a finite number, got {min_score!r}")

    array = _rows_to_array(rows)
    keep = ~np.isnan(array[:, 2])
    if min_score is not None:
        keep &= array[:, 2] >= min_score
    kept = array[keep]
    if top_k is not None:
        kept = kept[:top_k]
    return [(float(s), float(e), float(c)) for s, e, c in kept]


SCORE_DECIMALS = 6  # a float32 score carries about 7 significant digits: the rest of its float64 repr is noise


def time_decimals(unit: float | None) -> int:
    """Decimal places of the times reported for a model with this rounding ``unit`` (seconds): those of the unit
    itself, at least 4 (a window that reached the video's end keeps un-rounded values, as the official
    post-processing does: 0.1 ms keeps them within the reference tolerance), at most microseconds."""
    places = 0
    if unit:
        exponent = decimal.Decimal(repr(float(unit))).normalize().as_tuple().exponent
        places = max(0, -int(exponent))
    return min(6, max(4, places))


def round_rows(rows: Sequence[Row], unit: float | None) -> list[Row]:
    """``(start, end, score)`` rows as they are reported: times to :func:`time_decimals` places, scores to
    :data:`SCORE_DECIMALS`. The computation runs in float32, so without this a 0.1 s grid point comes back as
    ``14.100000381469727``; order and count are unchanged."""
    places = time_decimals(unit)
    return [(round(s, places), round(e, places), round(c, SCORE_DECIMALS)) for s, e, c in rows]


def _saliency_to_array(saliency: Sequence[float] | torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(saliency, torch.Tensor):
        values = saliency.detach().cpu().to(torch.float64).numpy()
    else:
        values = np.asarray(saliency, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"saliency must be one-dimensional (one value per clip), got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("saliency values must be finite")
    return values


def _clips(values: np.ndarray, clip_seconds: float, duration: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, starts, ends) of the clips that start inside the video; clip i is
    ``[i * clip_seconds, min((i + 1) * clip_seconds, duration)]``."""
    starts = np.arange(values.size, dtype=np.float64) * clip_seconds
    in_video = starts < duration
    values, starts = values[in_video], starts[in_video]
    return values, starts, np.minimum(starts + clip_seconds, duration)


def highlights(saliency: Sequence[float] | torch.Tensor | np.ndarray, clip_seconds: float, duration: float,
               top_k: int = 5) -> list[Row]:
    """The ``top_k`` most salient clips as ``(start, end, saliency)``, highest first (ties: earlier clip first);
    clips that start at or after ``duration`` are ignored."""
    values = _saliency_to_array(saliency)
    _check_positive_finite("clip_seconds", clip_seconds)
    _check_positive_finite("duration", duration)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    values, starts, ends = _clips(values, clip_seconds, duration)
    order = np.argsort(-values, kind="stable")[:top_k]
    return [(float(starts[i]), float(ends[i]), float(values[i])) for i in order]


def summarize(
    saliency: Sequence[float] | torch.Tensor | np.ndarray,
    clip_seconds: float,
    duration: float,
    budget: float = 0.15,
) -> list[Row]:
    """Pick the most salient clips, up to a share of the video, and return them as merged segments.

    Clip i covers ``[i * clip_seconds, min((i + 1) * clip_seconds, duration)]``; saliency entries for clips
    that start at or after ``duration`` are ignored. Clips are visited from the highest saliency down (ties:
    earlier clip first) and a clip is taken when it still fits in ``budget * duration`` seconds; a clip that
    does not fit is skipped and the next ones are still tried (only a shorter, final clip can then fit).
    Exception: the best clip is always taken, so a video whose clips are all longer than the budget still gets
    a one-clip summary. Taken clips that touch are merged; each segment is reported as
    ``(start, end, mean saliency of its clips)`` and segments are sorted by start time.
    """
    values = _saliency_to_array(saliency)
    _check_positive_finite("clip_seconds", clip_seconds)
    _check_positive_finite("duration", duration)
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget <= 1:
        raise ValueError(f"budget must be a share of the video in (0, 1], got {budget!r}")

    values, starts, ends = _clips(values, clip_seconds, duration)
    if values.size == 0:
        return []
    lengths = ends - starts

    limit = budget * duration
    order = np.argsort(-values, kind="stable")  # stable: equal saliency -> earlier clip first
    taken = np.zeros(values.size, dtype=bool)
    used = 0.0
    for rank, idx in enumerate(order):
        # Tiny slack so that, e.g., 3 clips of 0.1 s still fit a 0.3 s budget despite float rounding.
        if rank == 0 or used + lengths[idx] <= limit * (1 + 1e-9):
            taken[idx] = True
            used += lengths[idx]

    chosen = np.flatnonzero(taken)
    runs = np.split(chosen, np.flatnonzero(np.diff(chosen) != 1) + 1)  # runs of neighbouring clips
    return [(float(starts[run[0]]), float(ends[run[-1]]), float(values[run].mean())) for run in runs]
