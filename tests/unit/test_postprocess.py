"""Unit tests for models.postprocess on hand-made inputs whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.postprocess import NmsConfig, postprocess_boundaries, select_moments, summarize

from row_compare import assert_rows_match

NORMAL = NmsConfig("normal", 0.7)
LINEAR = NmsConfig("linear")


def rows(*values: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 3)


# --- postprocess_boundaries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("nms", [None, NORMAL, LINEAR])
@pytest.mark.parametrize("unit", [None, 2])
def test_empty_input_gives_empty_output(nms: NmsConfig | None, unit: float | None) -> None:
    out = postprocess_boundaries(torch.zeros(0, 3), 10.0, unit, nms)
    assert out.shape == (0, 3) and out.dtype == torch.float32


def test_single_row_is_clamped_and_rounded() -> None:
    # [-1, 3.2] -> clamp [0, 3.2] -> /2 = [0, 1.6] -> round [0, 2] -> *2 = [0, 4]
    out = postprocess_boundaries(rows((-1.0, 3.2, 0.5)), 10.0, 2, NORMAL)
    assert out.tolist() == [[0.0, 4.0, 0.5]]


def test_rows_reaching_the_end_are_clamped_but_not_rounded() -> None:
    out = postprocess_boundaries(rows((7.3, 12.0, 0.9), (7.3, 10.0, 0.8), (7.3, 9.9, 0.7)), 10.0, 2, None)
    start = float(torch.tensor(7.3, dtype=torch.float32))
    # end > duration and end == duration: un-rounded (only clamped); end < duration: rounded.
    assert out.tolist() == [
        [start, 10.0, pytest.approx(0.9)],
        [start, 10.0, pytest.approx(0.8)],
        [8.0, 10.0, pytest.approx(0.7)],
    ]


def test_rounding_is_half_to_even() -> None:
    out = postprocess_boundaries(rows((3.0, 5.0, 0.9), (1.0, 7.0, 0.8)), 20.0, 2, None)
    assert out[:, :2].tolist() == [[4.0, 4.0], [0.0, 8.0]]


@pytest.mark.parametrize("unit", [None, 0])
def test_no_unit_means_no_rounding(unit: float | None) -> None:
    out = postprocess_boundaries(rows((1.25, 3.75, 0.5)), 10.0, unit, None)
    assert out.tolist() == [[1.25, 3.75, 0.5]]


def test_without_nms_the_order_is_kept() -> None:
    out = postprocess_boundaries(rows((0.0, 2.0, 0.1), (2.0, 4.0, 0.9)), 10.0, None, None)
    assert out[:, 2].tolist() == pytest.approx([0.1, 0.9])


def test_normal_nms_zeroes_overlaps_and_keeps_them_last() -> None:
    # IoU([0,10],[1,10]) = 9/10 >= 0.7 -> suppressed; [20,30] does not overlap.
    out = postprocess_boundaries(rows((1.0, 10.0, 0.8), (0.0, 10.0, 0.9), (20.0, 30.0, 0.7)), 40.0, None, NORMAL)
    assert_rows_match(out, [[0, 10, 0.9], [20, 30, 0.7], [1, 10, 0]], atol=1e-6)


def test_normal_nms_threshold_is_inclusive() -> None:
    # IoU([0,10],[0,7]) = 0.7 exactly (in float32: 7/10 rounds to the same value as 0.7).
    out = postprocess_boundaries(rows((0.0, 10.0, 0.9), (0.0, 7.0, 0.8)), 40.0, None, NORMAL)
    assert out[1, 2].item() == 0.0


def test_linear_nms_scales_by_one_minus_iou() -> None:
    # IoU([0,10],[5,10]) = 0.5 -> 0.8 * 0.5 = 0.4, which then ranks below 0.6.
    out = postprocess_boundaries(rows((0.0, 10.0, 0.9), (5.0, 10.0, 0.8), (20.0, 30.0, 0.6)), 40.0, None, LINEAR)
    assert_rows_match(out, [[0, 10, 0.9], [20, 30, 0.6], [5, 10, 0.4]], atol=1e-6)


def test_linear_nms_on_zero_length_windows_gives_nan_scores_first() -> None:
    # Two zero-length windows: IoU 0/0 = NaN -> score * (1 - NaN) = NaN, and NaN sorts to the top.
    out = postprocess_boundaries(rows((4.0, 4.0, 0.9), (8.0, 8.0, 0.8), (0.0, 2.0, 0.5)), 10.0, None, LINEAR)
    assert out[0, :2].tolist() == [8.0, 8.0] and math.isnan(out[0, 2].item())
    assert out[1:].tolist() == [[4.0, 4.0, pytest.approx(0.9)], [0.0, 2.0, 0.5]]


def test_normal_nms_does_not_suppress_on_nan_iou() -> None:
    out = postprocess_boundaries(rows((4.0, 4.0, 0.9), (4.0, 4.0, 0.8)), 10.0, None, NORMAL)
    assert out[:, 2].tolist() == pytest.approx([0.9, 0.8])


def test_input_is_not_modified_and_dtype_is_kept() -> None:
    boundary = torch.tensor([[-1.0, 3.0, 0.5], [1.0, 30.0, 0.7]], dtype=torch.float64)
    before = boundary.clone()
    out = postprocess_boundaries(boundary, 10.0, 2, NORMAL)
    assert torch.equal(boundary, before)
    assert out.dtype == torch.float64


def test_numpy_and_integer_input_are_accepted() -> None:
    out = postprocess_boundaries(np.array([[0, 3, 1]]), 10.0, 2, NORMAL)
    assert out.dtype == torch.float32 and out.tolist() == [[0.0, 4.0, 1.0]]


@pytest.mark.parametrize(
    ("boundary", "duration", "unit", "message"),
    [
        (torch.zeros(3), 10.0, 2, "shape"),
        (torch.zeros(2, 2), 10.0, 2, "shape"),
        (torch.tensor([[math.nan, 1.0, 0.5]]), 10.0, 2, "NaN"),
        (torch.zeros(1, 3), 0.0, 2, "duration"),
        (torch.zeros(1, 3), math.inf, 2, "duration"),
        (torch.zeros(1, 3), 10.0, -1, "unit"),
        (torch.zeros(1, 3), 10.0, math.nan, "unit"),
    ],
)
def test_postprocess_rejects_bad_input(boundary: torch.Tensor, duration: float, unit: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        postprocess_boundaries(boundary, duration, unit, NORMAL)


def test_nms_config_validation_and_mapping() -> None:
    assert NmsConfig.from_mapping({"type": "linear"}) == NmsConfig("linear")
    assert NmsConfig.from_mapping({"type": "normal", "thres": 0.5}).thres == 0.5
    with pytest.raises(ValueError, match="type"):
        NmsConfig("gaussian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        NmsConfig("normal", math.nan)
    with pytest.raises(ValueError, match="unknown"):
        NmsConfig.from_mapping({"type": "normal", "sigma": 0.1})
    with pytest.raises(ValueError, match="type"):
        NmsConfig.from_mapping({"thres": 0.5})


# --- select_moments ------------------------------------------------------------------------------------------

RANKED = [[8.0, 8.0, math.nan], [0.0, 4.0, 0.9], [10.0, 20.0, 0.5], [12.0, 20.0, 0.0]]


def test_select_moments_drops_nan_and_low_scores_then_cuts() -> None:
    assert select_moments(RANKED, top_k=None, min_score=None) == [(0.0, 4.0, 0.9), (10.0, 20.0, 0.5), (12.0, 20.0, 0.0)]
    assert select_moments(RANKED, top_k=None, min_score=0.5) == [(0.0, 4.0, 0.9), (10.0, 20.0, 0.5)]
    assert select_moments(RANKED, top_k=1, min_score=0.0) == [(0.0, 4.0, 0.9)]
    assert select_moments(RANKED, top_k=10, min_score=0.95) == []


def test_select_moments_accepts_tensors_and_empty_input() -> None:
    result = select_moments(torch.tensor(RANKED, dtype=torch.float32), top_k=2, min_score=None)
    assert result == [(0.0, 4.0, pytest.approx(0.9)), (10.0, 20.0, 0.5)]
    assert all(isinstance(v, float) for row in result for v in row)
    assert select_moments(torch.zeros(0, 3), top_k=5, min_score=0.1) == []
    assert select_moments([], top_k=None, min_score=None) == []


@pytest.mark.parametrize(
    ("top_k", "min_score", "message"),
    [(0, None, "top_k"), (True, None, "top_k"), (1.5, None, "top_k"), (None, math.nan, "min_score")],
)
def test_select_moments_rejects_bad_arguments(top_k: object, min_score: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_moments(RANKED, top_k=top_k, min_score=min_score)  # type: ignore[arg-type]


def test_select_moments_rejects_bad_rows() -> None:
    with pytest.raises(ValueError, match="shape"):
        select_moments([[0.0, 1.0]], top_k=None, min_score=None)


# --- summarize -----------------------------------------------------------------------------------------------


def test_summarize_picks_top_clips_and_merges_neighbours() -> None:
    # 20 s, 2 s clips, budget 0.3 -> 6 s = 3 clips: #4 (0.95), #1 (0.9), #2 (0.8); #1 and #2 touch.
    saliency = [0.1, 0.9, 0.8, 0.2, 0.95, 0.3, 0.1, 0.1, 0.1, 0.1]
    assert summarize(saliency, 2.0, 20.0, budget=0.3) == [(2.0, 6.0, pytest.approx(0.85)), (8.0, 10.0, 0.95)]


def test_summarize_breaks_ties_by_earlier_clip() -> None:
    assert summarize([0.5, 0.5, 0.5, 0.5], 1.0, 4.0, budget=0.5) == [(0.0, 2.0, 0.5)]


def test_summarize_skips_clips_that_do_not_fit_and_clamps_the_last_clip() -> None:
    # 9 s, 2 s clips (last one [8, 9]); budget 0.35 -> 3.15 s: #1 (2 s) fits, #2 would make 4 s and is
    # skipped, the 1 s clip #4 still fits (3 s).
    assert summarize([0.1, 0.9, 0.8, 0.2, 0.3], 2.0, 9.0, budget=0.35) == [(2.0, 4.0, 0.9), (8.0, 9.0, 0.3)]


def test_summarize_always_keeps_the_best_clip() -> None:
    assert summarize(torch.tensor([0.2, 0.7]), 2.0, 4.0, budget=0.1) == [(2.0, 4.0, pytest.approx(0.7))]


def test_summarize_ignores_scores_past_the_end() -> None:
    assert summarize(np.array([0.1, 0.2, 0.3, 0.4, 9.0, 9.0]), 2.0, 8.0, budget=0.25) == [(6.0, 8.0, 0.4)]


def test_summarize_empty_saliency() -> None:
    assert summarize([], 2.0, 10.0) == []


def test_summarize_never_exceeds_budget_beyond_one_clip() -> None:
    gen = np.random.default_rng(0)
    for _ in range(50):
        n = int(gen.integers(1, 60))
        duration = float(gen.uniform(0.5, 2.0) * n)
        clip = duration / n * float(gen.uniform(1.0, 1.5))
        budget = float(gen.uniform(0.05, 1.0))
        segments = summarize(gen.normal(size=n), clip, duration, budget)
        total = sum(end - start for start, end, _ in segments)
        assert segments and (total <= budget * duration * (1 + 1e-9) or len(segments) == 1)
        assert all(0 <= s < e <= duration for s, e, _ in segments)
        assert [s for s, _, _ in segments] == sorted(s for s, _, _ in segments)
        assert all(a[1] < b[0] for a, b in zip(segments, segments[1:], strict=False))


@pytest.mark.parametrize(
    ("saliency", "clip", "duration", "budget", "message"),
    [
        ([[0.1, 0.2]], 2.0, 10.0, 0.15, "one-dimensional"),
        ([0.1, math.nan], 2.0, 10.0, 0.15, "finite"),
        ([0.1], 0.0, 10.0, 0.15, "clip_seconds"),
        ([0.1], 2.0, -1.0, 0.15, "duration"),
        ([0.1], 2.0, 10.0, 0.0, "budget"),
        ([0.1], 2.0, 10.0, 1.5, "budget"),
        ([0.1], 2.0, 10.0, True, "budget"),
    ],
)
def test_summarize_rejects_bad_arguments(
    saliency: list, clip: float, duration: float, budget: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        summarize(saliency, clip, duration, budget)
