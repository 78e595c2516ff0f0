"""Unit tests for models.evaluation on small cases whose answers are worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.evaluation import evaluate_grounding, format_table, highlight_map, load_jsonl, tvsum_top5_map

# --- YouTube Highlights ---------------------------------------------------------------------------------------
# The official AP is a trapezoid over (recall, precision) points starting at (0, 1), with recall relative to the
# positives of the ranked list. For ranked labels [1, 0, 1, 0] (2 positives):
#   rank 1: recall 1/2, precision 1   -> + (1/2) * (1 + 1) / 2   = 1/2
#   rank 2: recall 1/2, precision 1/2 -> + 0
#   rank 3: recall 1,   precision 2/3 -> + (1/2) * (1/2 + 2/3) / 2 = 7/24
#   rank 4: recall 1                  -> + 0                      => AP = 19/24
VIDEO_A = ([0.9, 0.8, 0.7, 0.6], [1, -1, 1, -1])  # AP 19/24
VIDEO_NEG = ([0.3, 0.2], [-1, -1])  # no positives -> 0
VIDEO_PERFECT = ([0.5, 0.4, 0.1], [1, 1, -1])  # AP 1


def test_highlight_map_hand_computed() -> None:
    preds, labels = zip(VIDEO_A, VIDEO_PERFECT, strict=True)
    assert highlight_map(preds, labels, ndigits=None) == pytest.approx((19 / 24 + 1) / 2)
    assert highlight_map(preds, labels) == 0.89583  # 43/48 rounded to 5 digits
    preds, labels = zip(VIDEO_A, VIDEO_NEG, strict=True)
    assert highlight_map(preds, labels) == round(19 / 48, 5)


def test_highlight_map_trapezoid_starts_at_precision_one() -> None:
    # Ranked [0, 1]: rank 1 adds nothing and drops precision to 0; rank 2: recall 1, precision 1/2
    # -> 1 * (0 + 1/2) / 2 = 1/4 (a step-wise AP would give 1/2).
    assert highlight_map([torch.tensor([0.9, 0.1])], [[-1, 1]]) == 0.25


def test_highlight_map_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="predictions for"):
        highlight_map([[0.1]], [[1], [1]])
    with pytest.raises(ValueError, match="labelled clips"):
        highlight_map([[0.1, 0.2]], [[1]])
    with pytest.raises(ValueError, match="NaN"):
        highlight_map([[0.1, float("nan")]], [[1, 1]])
    with pytest.raises(ValueError, match="at least one"):
        highlight_map([], [])


# --- TVSum ----------------------------------------------------------------------------------------------------
# One video, 6 clips, 2 annotators. Per annotator the label is "score > median" (torch's lower median):
#   annotator 0: [1, 2, 3, 5, 5, 5], median 3 -> [0, 0, 0, 1, 1, 1]
#   annotator 1: [5, 4, 1, 1, 1, 1], median 1 -> [1, 1, 0, 0, 0, 0]
# Predicted ranking of [0.6, 0.1, 0.2, 0.9, 0.3, 0.5]: clips 3, 0, 5, 4, 2, 1.
TVSUM_PRED = [0.6, 0.1, 0.2, 0.9, 0.3, 0.5]
TVSUM_ANNO = np.array([[1, 5], [2, 4], [3, 1], [5, 1], [5, 1], [5, 1]])


def test_tvsum_top5_map_hand_computed() -> None:
    # k=3: annotator 0 sees [1, 0, 1] -> 19/24 (as VIDEO_A; recall relative to the 2 positives in the top 3);
    # annotator 1 sees [0, 1, 0] -> 1 * (0 + 1/2) / 2 = 1/4. Mean 25/48.
    assert tvsum_top5_map([TVSUM_PRED], [TVSUM_ANNO], k=3, ndigits=None) == pytest.approx(25 / 48)
    assert tvsum_top5_map([TVSUM_PRED], [TVSUM_ANNO], k=3) == 0.52083
    # k=6 (everything): annotator 0 [1, 0, 1, 1, 0, 0] -> 1/3 + 7/36 + 17/72 = 55/72;
    # annotator 1 [0, 1, 0, 0, 0, 1] -> 1/8 + (1/2)(1/5 + 1/3)/2 = 31/120. Mean (55/72 + 31/120) / 2.
    assert tvsum_top5_map([TVSUM_PRED], [TVSUM_ANNO], k=6, ndigits=None) == pytest.approx((55 / 72 + 31 / 120) / 2)


def test_tvsum_top5_map_averages_videos_then_annotators() -> None:
    # Second video: no clip above the median for either annotator (all equal) -> 0 for both.
    flat = np.full((4, 2), 3)
    expected = ((19 / 24 + 0) / 2 + (1 / 4 + 0) / 2) / 2
    got = tvsum_top5_map([TVSUM_PRED, [0.1, 0.2, 0.3, 0.4]], [TVSUM_ANNO, flat], k=3, ndigits=None)
    assert got == pytest.approx(expected)


def test_tvsum_prediction_may_be_shorter_than_annotation() -> None:
    # Median still over all 6 annotated clips; only the first 4 clips are ranked: 3, 0, 2, 1.
    # annotator 0 top 3 = [1, 0, 0] -> 1/2 + ... recall already 1 at rank 1 -> 1; annotator 1 [0, 1, 0] -> 1/4.
    got = tvsum_top5_map([TVSUM_PRED[:4]], [TVSUM_ANNO], k=3, ndigits=None)
    assert got == pytest.approx((1 + 1 / 4) / 2)


def test_tvsum_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="annotated clips"):
        tvsum_top5_map([TVSUM_PRED + [0.0]], [TVSUM_ANNO])
    with pytest.raises(ValueError, match="same number of annotators"):
        tvsum_top5_map([TVSUM_PRED, TVSUM_PRED], [TVSUM_ANNO, TVSUM_ANNO[:, :1]])
    with pytest.raises(ValueError, match="k must"):
        tvsum_top5_map([TVSUM_PRED], [TVSUM_ANNO], k=0)
    with pytest.raises(ValueError, match="non-empty"):
        tvsum_top5_map([[]], [np.zeros((0, 2))])


# --- QVHighlights-style grounding -----------------------------------------------------------------------------


def _gt(qid: int, windows: list, **extra: object) -> dict:
    return {"qid": qid, "relevant_windows": windows, **extra}


def _pred(qid: int, windows: list, **extra: object) -> dict:
    return {"qid": qid, "pred_relevant_windows": windows, **extra}


def test_perfect_prediction_scores_100_and_empty_buckets_fall_back() -> None:
    metrics = evaluate_grounding([_pred(1, [[0, 10, 0.9]])], [_gt(1, [[0, 10]])])
    assert list(metrics) == ["brief", "full", "long", "middle", "short"]
    assert set(metrics["brief"].values()) == {100.0}
    # The 10 s window is "short"; middle and long are empty and therefore report the full set.
    assert metrics["middle"] == metrics["long"] == metrics["full"]
    assert list(metrics["full"]["MR-mAP"]) == [f"{t:.2f}".rstrip("0") for t in np.linspace(0.5, 0.95, 10)] + ["average"]
    assert list(metrics["full"]["MR-R1"])[:3] == ["0.3", "0.35", "0.4"]


def test_map_only_sees_the_first_ten_listed_windows() -> None:
    misses = [[50 + 5 * i, 52 + 5 * i, 0.9] for i in range(9)]
    # The hit listed 10th with the lowest score: ranked last of 10 -> precision 1/10 at recall 1 -> AP 0.1.
    tenth = evaluate_grounding([_pred(1, misses + [[0, 10, 0.1]])], [_gt(1, [[0, 10]])])
    assert tenth["full"]["MR-mAP"]["average"] == 10.0
    # Listed 11th (even with the best score) it is never evaluated.
    eleventh = evaluate_grounding([_pred(1, misses + [[60, 61, 0.1], [0, 10, 1.0]])], [_gt(1, [[0, 10]])])
    assert eleventh["full"]["MR-mAP"]["average"] == 0.0


def test_r1_uses_the_first_listed_window_not_the_best_scored() -> None:
    metrics = evaluate_grounding([_pred(1, [[50, 60, 0.1], [0, 10, 0.9]])], [_gt(1, [[0, 10]])])
    assert metrics["brief"]["MR-full-R1@0.5"] == 0.0
    assert metrics["brief"]["MR-full-R5@0.5"] == 100.0
    assert metrics["brief"]["MR-full-mAP"] == 100.0  # mAP sorts by score


def test_r1_iou_and_miou() -> None:
    # [0, 10] vs GT [5, 15]: IoU 5/15 = 1/3 -> counts at 0.3 but not 0.35; mIoU 33.33.
    metrics = evaluate_grounding([_pred(1, [[0, 10, 0.9]])], [_gt(1, [[5, 15]])])
    assert metrics["full"]["MR-R1"]["0.3"] == 100.0 and metrics["full"]["MR-R1"]["0.35"] == 0.0
    assert metrics["full"]["MR-mIoU"] == 33.33


SALIENCY_GT = _gt(1, [[2, 6]], duration=8, relevant_clip_ids=[1, 2], saliency_scores=[[4, 2, 0], [1, 3, 4]])


def test_highlight_metrics_hand_computed() -> None:
    # 4 clips. Predicted ranking: clip 1 (0.9), clip 2 (0.5), clip 3, clip 0.
    # Fair (>= 2): annotators' positives {1}, {1, 2}, {2}: AP 1, 1, 1/2 -> 83.33; top clip 1 is positive -> 100.
    # Good (>= 3): {1}, {2}, {2}: AP 1, 1/2, 1/2 -> 66.67. VeryGood (>= 4): {1}, {}, {2}: 1, 0, 1/2 -> 50.
    sub = [_pred(1, [[2, 6, 0.9]], pred_saliency_scores=[0.1, 0.9, 0.5, 0.2])]
    metrics = evaluate_grounding(sub, [SALIENCY_GT])
    assert list(metrics) == [
        "brief",
        "HL-min-Fair",
        "HL-min-Good",
        "HL-min-VeryGood",
        "full",
        "long",
        "middle",
        "short",
    ]
    assert metrics["HL-min-Fair"] == {"HL-mAP": 83.33, "HL-Hit1": 100.0}
    assert metrics["HL-min-Good"] == {"HL-mAP": 66.67, "HL-Hit1": 100.0}
    assert metrics["HL-min-VeryGood"] == {"HL-mAP": 50.0, "HL-Hit1": 100.0}
    assert list(metrics["brief"])[-6:] == [
        "HL-min-Fair-mAP",
        "HL-min-Fair-Hit1",
        "HL-min-Good-mAP",
        "HL-min-Good-Hit1",
        "HL-min-VeryGood-mAP",
        "HL-min-VeryGood-Hit1",
    ]


def test_highlight_hit1_beyond_gt_length_and_padding() -> None:
    # Prediction longer than the 4 GT clips with its maximum at index 5 -> no hit. For AP it is cut to 4 clips.
    sub = [_pred(1, [[2, 6, 0.9]], pred_saliency_scores=[0.1, 0.9, 0.5, 0.2, 0.0, 1.0])]
    metrics = evaluate_grounding(sub, [SALIENCY_GT])
    assert metrics["HL-min-Fair"] == {"HL-mAP": 83.33, "HL-Hit1": 0.0}
    # A shorter prediction is zero-padded to [0.1, 0.9, 0, 0]. VeryGood, annotator 2 (positive: clip 2): clip 2
    # ties with clip 3 at 0, below clips 0 and 1, so recall first reaches 1 at threshold 0 with all 4 clips
    # selected: precision 1/4 (ties are one curve point). Annotators 0 and 1 give 1 and 0 as before.
    short = [_pred(1, [[2, 6, 0.9]], pred_saliency_scores=[0.1, 0.9])]
    assert evaluate_grounding(short, [SALIENCY_GT])["HL-min-VeryGood"]["HL-mAP"] == 41.67  # (1 + 0 + 1/4) / 3


def test_all_positive_annotator_scores_one() -> None:
    gt = _gt(1, [[0, 4]], duration=4, relevant_clip_ids=[0, 1], saliency_scores=[[2, 2, 2], [2, 2, 2]])
    metrics = evaluate_grounding([_pred(1, [[0, 4, 1.0]], pred_saliency_scores=[0.3, 0.7])], [gt])
    assert metrics["HL-min-Fair"]["HL-mAP"] == 100.0 and metrics["HL-min-Good"]["HL-mAP"] == 0.0


def test_saliency_ignored_without_gt_saliency() -> None:
    metrics = evaluate_grounding([_pred(1, [[0, 4, 1.0]], pred_saliency_scores=[0.3])], [_gt(1, [[0, 4]])])
    assert "HL-min-Fair" not in metrics and len(metrics["brief"]) == 16


@pytest.mark.parametrize(
    ("submission", "ground_truth", "message"),
    [
        ([], [_gt(1, [[0, 1]])], "non-empty"),
        ([_pred(2, [[0, 1, 1]])], [_gt(1, [[0, 1]])], "qids"),
        ([_pred(1, [])], [_gt(1, [[0, 1]])], "pred_relevant_windows"),
        ([_pred(1, [[0, 1, 1]])], [_gt(1, [])], "relevant_windows"),
        (
            [_pred(1, [[0, 1, 1]], pred_saliency_scores=[0.1])],
            [_gt(1, [[0, 1]], duration=4, relevant_clip_ids=[5], saliency_scores=[[1, 1, 1]])],
            "relevant_clip_ids",
        ),
        (
            [_pred(1, [[0, 1, 1]], pred_saliency_scores=[0.1])],
            [_gt(1, [[0, 1]], duration=4, relevant_clip_ids=[0], saliency_scores=[[1, 1]])],
            "3 scores",
        ),
    ],
)
def test_evaluate_grounding_rejects_bad_input(submission: list, ground_truth: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_grounding(submission, ground_truth)


# --- I/O and display -----------------------------------------------------------------------------------------


def test_load_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"qid": 1}) + "\n\n" + json.dumps({"qid": 2}) + "\n")
    assert load_jsonl(path) == [{"qid": 1}, {"qid": 2}]


def test_format_table() -> None:
    table = format_table({"brief": {"MR-full-mAP": 30.98, "HL-min-Fair-Hit1": 70.0}, "full": {}})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert lines[2].split() == ["MR-full-mAP", "30.98"] and lines[3].split() == ["HL-min-Fair-Hit1", "70.0"]
    assert format_table({"mAP": 0.89583}).splitlines()[2].split() == ["mAP", "0.89583"]
    with pytest.raises(ValueError, match="no numeric"):
        format_table({"full": {}})
