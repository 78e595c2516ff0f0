"""Benchmark metrics computed exactly as the official R2-Tuning evaluation code computes them.

* `evaluate_grounding`: the QVHighlights-style moment-retrieval and highlight metrics of the official
  ``datasets/eval`` package (``vtg_eval``, itself derived from Moment-DETR / UniVTG), including its quirks:
  truncation by list position, a hull-based IoU for R1/R5, the empty-bucket fallback, and a highlight AP
  computed from scikit-learn's precision-recall curve. Numbers are percentages rounded to 2 decimals.
* `highlight_map` (YouTube Highlights) and `tvsum_top5_map` (TVSum): the ``evaluate`` methods of the official
  ``datasets/youtube.py`` and ``datasets/tvsum.py``. Numbers are fractions rounded to 5 decimals.

The arithmetic follows the original operation by operation, so results are identical, not just close.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import torch
from sklearn.metrics import precision_recall_curve

__all__ = [
    "evaluate_grounding",
    "format_table",
    "highlight_map",
    "load_jsonl",
    "tvsum_top5_map",
]

# Threshold lists as the official code builds them: a linspace, then formatted to 2 decimals.
MAP_IOU_THRESHOLDS = tuple(float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10))
RECALL_IOU_THRESHOLDS = tuple(float(f"{t:.2f}") for t in np.linspace(0.3, 0.95, 14))
MAX_PRED_WINDOWS_MAP = 10
MAX_PRED_WINDOWS_R5 = 5
# (name, (exclusive lower, inclusive upper) GT window length in seconds), in the official evaluation order.
LENGTH_BUCKETS = (
    ("short", (0.0, 10.0)),
    ("middle", (10.0, 30.0)),
    ("long", (30.0, math.inf)),
    ("full", (0.0, math.inf)),
)
HL_CLIP_SECONDS = 2
HL_ANNOTATORS = 3
HL_LEVELS = (("Fair", 2), ("Good", 3), ("VeryGood", 4))


def load_jsonl(path: str | PathLike[str]) -> list[dict]:
    """Read a JSON-lines file (one object per non-empty line)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _pct(value: float) -> float:
    # The official formatting: percentage, 2 decimals via string formatting (round half even on the binary value).
    return float(f"{100 * value:.2f}")


# ---------------------------------------------------------------------------------------------------------------
# Moment retrieval


def _iou_cross(spans1: np.ndarray, spans2: np.ndarray) -> np.ndarray:
    """(N, M) IoU with the true union; 0 / 0 gives NaN, as in the original."""
    len1 = spans1[:, 1] - spans1[:, 0]
    len2 = spans2[:, 1] - spans2[:, 0]
    left = np.maximum(spans1[:, None, 0], spans2[None, :, 0])
    right = np.minimum(spans1[:, None, 1], spans2[None, :, 1])
    inter = np.clip(right - left, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (len1[:, None] + len2[None, :] - inter)


def _iou_paired_hull(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Row-wise IoU that divides by the span of the two windows' hull (the official R1/R5 IoU).

    For overlapping windows the hull is the union; for disjoint ones the intersection is 0 anyway. A zero
    hull gives 0 instead of NaN.
    """
    inter = np.maximum(0, np.minimum(pred[:, 1], gt[:, 1]) - np.maximum(pred[:, 0], gt[:, 0]))
    hull = np.maximum(pred[:, 1], gt[:, 1]) - np.minimum(pred[:, 0], gt[:, 0])
    return np.divide(inter, hull, out=np.zeros_like(inter), where=hull != 0)


def _interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC-2011 style AP: precision made non-increasing from the right, summed over recall steps."""
    prec = np.hstack([[0], precision, [0]])
    rec = np.hstack([[0], recall, [1]])
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    steps = np.where(rec[1:] != rec[:-1])[0] + 1
    return float(np.sum((rec[steps] - rec[steps - 1]) * prec[steps]))


def _detection_ap(gt_windows: list[Sequence[float]], preds: list[Sequence[float]]) -> np.ndarray:
    """AP of one query's predictions at every mAP IoU threshold (ActivityNet-style greedy matching)."""
    thresholds = MAP_IOU_THRESHOLDS
    ap = np.zeros(len(thresholds))
    if not preds:
        return ap
    # Python's sort is stable: equal scores keep their list order, as in the original.
    preds = sorted(preds, key=lambda p: -p[2])
    tp = np.zeros((len(thresholds), len(preds)))
    fp = np.zeros((len(thresholds), len(preds)))
    gt_taken = np.full((len(thresholds), len(gt_windows)), -1.0)
    gt_array = np.array([[w[0], w[1]] for w in gt_windows])

    for p_idx, pred in enumerate(preds):
        if not gt_windows:
            fp[:, p_idx] = 1
            continue
        ious = _iou_cross(np.array([[pred[0], pred[1]]]), gt_array).reshape(-1)
        # Same call as the original so that IoU ties (and NaNs, which sort last and so come first here)
        # are visited in the same order.
        by_iou = ious.argsort()[::-1]
        for t_idx, thres in enumerate(thresholds):
            for g_idx in by_iou:
                if ious[g_idx] < thres:
                    fp[t_idx, p_idx] = 1
                    break
                if gt_taken[t_idx, g_idx] >= 0:
                    continue
                tp[t_idx, p_idx] = 1
                gt_taken[t_idx, g_idx] = p_idx
                break
            if fp[t_idx, p_idx] == 0 and tp[t_idx, p_idx] == 0:
                fp[t_idx, p_idx] = 1

    tp_cum = np.cumsum(tp, axis=1).astype(float)
    fp_cum = np.cumsum(fp, axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp_cum / float(len(gt_windows))
    precision = tp_cum / (tp_cum + fp_cum)
    for t_idx in range(len(thresholds)):
        ap[t_idx] = _interpolated_ap(precision[t_idx], recall[t_idx])
    return ap


def _mr_map(submission: list[dict], ground_truth: list[dict]) -> dict[str, float]:
    preds_by_qid: dict[Any, list[Sequence[float]]] = {}
    for entry in submission:
        # Only the first windows *by list position* count, whatever their scores.
        for window in entry["pred_relevant_windows"][:MAX_PRED_WINDOWS_MAP]:
            preds_by_qid.setdefault(entry["qid"], []).append(window)
    gts_by_qid: dict[Any, list[Sequence[float]]] = {}
    for entry in ground_truth:
        gts_by_qid.setdefault(entry["qid"], []).extend(entry["relevant_windows"])

    ap_per_query = np.array([_detection_ap(gts_by_qid.get(qid, []), preds) for qid, preds in preds_by_qid.items()])
    ap_per_thres = ap_per_query.mean(0)
    result = {str(t): v for t, v in zip(MAP_IOU_THRESHOLDS, ap_per_thres, strict=True)}
    result["average"] = np.mean(ap_per_thres)
    return {key: _pct(value) for key, value in result.items()}


def _mr_r1(submission: list[dict], ground_truth: list[dict]) -> tuple[dict[str, float], float]:
    # The first *listed* window, not the best-scored one; a repeated qid keeps its last entry.
    first_pred = {entry["qid"]: entry["pred_relevant_windows"][0][:2] for entry in submission}
    matched_gt = {}
    for entry in ground_truth:
        windows = entry["relevant_windows"]
        ious = _iou_cross(np.array([first_pred[entry["qid"]]]), np.array(windows))[0]
        matched_gt[entry["qid"]] = windows[int(np.argmax(ious))]

    qids = list(first_pred)
    pred_arr = np.array([first_pred[q] for q in qids]).astype(float)
    gt_arr = np.array([matched_gt[q] for q in qids]).astype(float)
    ious = _iou_paired_hull(pred_arr, gt_arr)
    recall = {str(t): float(f"{np.mean(ious >= t) * 100:.2f}") for t in RECALL_IOU_THRESHOLDS}
    return recall, float(f"{np.mean(ious) * 100:.2f}")


def _mr_r5(submission: list[dict], ground_truth: list[dict]) -> dict[str, float]:
    top_preds = {
        entry["qid"]: [w[:2] for w in entry["pred_relevant_windows"][:MAX_PRED_WINDOWS_R5]] for entry in submission
    }
    best_pred, best_gt = {}, {}
    for entry in ground_truth:
        qid, windows = entry["qid"], entry["relevant_windows"]
        ious = _iou_cross(np.array(top_preds[qid]), np.array(windows))
        ious[np.isnan(ious)] = 0
        # The best (prediction, GT) pair over all of them; ties -> first in row-major order.
        p_idx, g_idx = (int(a[0]) for a in np.where(ious == np.max(ious)))
        best_pred[qid] = top_preds[qid][p_idx]
        best_gt[qid] = windows[g_idx]

    qids = list(top_preds)
    pred_arr = np.array([best_pred[q] for q in qids]).astype(float)
    gt_arr = np.array([best_gt[q] for q in qids]).astype(float)
    ious = _iou_paired_hull(pred_arr, gt_arr)
    return {str(t): float(f"{np.mean(ious >= t) * 100:.2f}") for t in RECALL_IOU_THRESHOLDS}


def _restrict_to_lengths(
    submission: list[dict], ground_truth: list[dict], bounds: tuple[float, float]
) -> tuple[list[dict], list[dict]]:
    """Keep GT windows with lo < length <= hi and the queries that still have one.

    An empty selection silently falls back to the whole set (official behaviour), so an empty bucket reports
    the full-set numbers.
    """
    lo, hi = bounds
    if lo == 0 and hi == math.inf:
        return submission, ground_truth
    gt_in_range = []
    for entry in ground_truth:
        windows = [w for w in entry["relevant_windows"] if lo < w[1] - w[0] <= hi]
        if windows:
            entry = copy.deepcopy(entry)
            entry["relevant_windows"] = windows
            gt_in_range.append(entry)
    qids = {entry["qid"] for entry in gt_in_range}
    sub_in_range = [copy.deepcopy(entry) for entry in submission if entry["qid"] in qids]
    if not gt_in_range and not sub_in_range:
        return submission, ground_truth
    return sub_in_range, gt_in_range


def _eval_moment_retrieval(submission: list[dict], ground_truth: list[dict]) -> dict[str, dict]:
    metrics = {}
    for name, bounds in LENGTH_BUCKETS:
        sub, gt = _restrict_to_lengths(submission, ground_truth, bounds)
        recall1, miou = _mr_r1(sub, gt)
        metrics[name] = {"MR-mIoU": miou, "MR-mAP": _mr_map(sub, gt), "MR-R1": recall1, "MR-R5": _mr_r5(sub, gt)}
    return metrics


def _mr_brief(metrics: Mapping[str, dict]) -> dict[str, float]:
    full = metrics["full"]
    brief = {
        "MR-full-mAP": full["MR-mAP"]["average"],
        "MR-full-mAP@0.5": full["MR-mAP"]["0.5"],
        "MR-full-mAP@0.75": full["MR-mAP"]["0.75"],
        "MR-full-mIoU": full["MR-mIoU"],
    }
    for bucket in ("short", "middle", "long"):
        brief[f"MR-{bucket}-mAP"] = metrics[bucket]["MR-mAP"]["average"]
        brief[f"MR-{bucket}-mIoU"] = metrics[bucket]["MR-mIoU"]
    for thres in ("0.3", "0.5", "0.7"):
        brief[f"MR-full-R1@{thres}"] = full["MR-R1"][thres]
        brief[f"MR-full-R5@{thres}"] = full["MR-R5"][thres]
    return dict(sorted(brief.items()))


# ---------------------------------------------------------------------------------------------------------------
# Highlight detection (QVHighlights saliency)


def _gt_saliency_matrix(entry: Mapping[str, Any]) -> np.ndarray:
    """(int(duration / 2), 3) annotator scores; clips not listed score 0."""
    num_clips = int(entry["duration"] / HL_CLIP_SECONDS)
    scores = np.zeros((num_clips, HL_ANNOTATORS))
    clip_ids = np.array(entry["relevant_clip_ids"], dtype=np.int64).reshape(-1)
    clip_scores = np.array(entry["saliency_scores"], dtype=np.float64)
    if clip_scores.size and (clip_scores.ndim != 2 or clip_scores.shape[1] != HL_ANNOTATORS):
        raise ValueError(f"qid {entry['qid']}: saliency_scores must hold {HL_ANNOTATORS} scores per clip")
    if len(clip_ids) != len(clip_scores):
        raise ValueError(f"qid {entry['qid']}: relevant_clip_ids and saliency_scores differ in length")
    if clip_ids.size and (clip_ids.min() < 0 or clip_ids.max() >= num_clips):
        raise ValueError(f"qid {entry['qid']}: relevant_clip_ids must lie in [0, {num_clips})")
    scores[clip_ids] = clip_scores.reshape(-1, HL_ANNOTATORS)
    return scores


def _saliency_ap(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """The official highlight AP (from video2gif's evaluation, 'interpolated' variant).

    sklearn's curve lists points from high recall to low recall; a running max in that order turns each
    precision into the best precision at higher or equal recall (VOC-style interpolation). The AP is the mean of
    those precisions at the points just before recall drops, i.e. one value per distinct non-zero recall level
    (tied scores merge levels). A column without positives scores 0, one without negatives 1.
    """
    labels = set(y_true.tolist())
    if len(labels) == 1:
        return 0.0 if y_true[0] == 0 else 1.0
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    recall = recall.astype(np.float32)
    for i in range(1, len(precision)):
        precision[i] = max(precision[i - 1], precision[i])
    return float(np.mean(precision[np.where(np.diff(recall))]))


def _fit_length(pred: np.ndarray, length: int) -> np.ndarray:
    # Predictions are cut to the GT length, or padded with zeros when shorter.
    if len(pred) >= length:
        return pred[:length]
    padded = np.zeros(length)
    padded[: len(pred)] = pred
    return padded


def _eval_highlight(submission: list[dict], ground_truth: list[dict]) -> dict[str, dict[str, float]]:
    for entry in submission:
        if "pred_saliency_scores" not in entry:
            raise ValueError(f"qid {entry['qid']}: pred_saliency_scores is missing")
    for entry in ground_truth:
        if not {"duration", "relevant_clip_ids", "saliency_scores"} <= set(entry):
            raise ValueError(f"qid {entry['qid']}: duration, relevant_clip_ids and saliency_scores are needed")
    preds = {entry["qid"]: np.array(entry["pred_saliency_scores"], dtype=np.float64) for entry in submission}
    gt_scores = {entry["qid"]: _gt_saliency_matrix(entry) for entry in ground_truth}
    for qid, scores in gt_scores.items():
        if len(scores) == 0:
            raise ValueError(f"qid {qid}: duration too short for a {HL_CLIP_SECONDS} s saliency clip")
    for qid, pred in preds.items():
        if pred.ndim != 1 or pred.size == 0:
            raise ValueError(f"qid {qid}: pred_saliency_scores must be a non-empty list of numbers")

    metrics = {}
    for name, min_score in HL_LEVELS:
        binary = {qid: (scores >= min_score).astype(float) for qid, scores in gt_scores.items()}
        hits = np.zeros((len(preds), HL_ANNOTATORS))
        aps = np.zeros((len(preds), HL_ANNOTATORS))
        for row, (qid, pred) in enumerate(preds.items()):
            labels = binary[qid]
            top_clip = int(np.argmax(pred))  # first maximum
            if top_clip < len(labels):
                hits[row] = labels[top_clip]
            fitted = _fit_length(pred, len(labels))
            for annotator in range(HL_ANNOTATORS):
                aps[row, annotator] = _saliency_ap(labels[:, annotator], fitted)
        # Hit1: a hit if any annotator marks the top clip positive.
        metrics[f"HL-min-{name}"] = {"HL-mAP": _pct(np.mean(aps)), "HL-Hit1": _pct(np.mean(np.max(hits, 1)))}
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# Entry point


def _check_grounding_inputs(submission: list[dict], ground_truth: list[dict]) -> None:
    if not submission or not ground_truth:
        raise ValueError("submission and ground truth must both be non-empty")
    pred_qids = {entry["qid"] for entry in submission}
    gt_qids = {entry["qid"] for entry in ground_truth}
    if pred_qids != gt_qids:
        missing, extra = gt_qids - pred_qids, pred_qids - gt_qids
        raise ValueError(
            f"qids in submission and ground truth must match ({len(missing)} missing from the submission, "
            f"{len(extra)} not in the ground truth)"
        )


def evaluate_grounding(submission: list[dict], ground_truth: list[dict]) -> dict[str, Any]:
    """QVHighlights-style evaluation, equal to the official ``vtg_eval(submission, ground_truth)``.

    ``submission`` entries: ``qid``, ``pred_relevant_windows`` (``[start, end, score]`` lists, in ranked order)
    and optionally ``pred_saliency_scores`` (one per 2 s clip). ``ground_truth`` entries: ``qid``,
    ``relevant_windows`` and, for highlight metrics, ``duration``, ``relevant_clip_ids``, ``saliency_scores``.
    As in the original, whether a metric family is computed is decided by the *first* entry of each list:
    moment retrieval when it has ``pred_relevant_windows``; highlights when it also has saliency on both sides.

    Returns ``{"brief": {...headline numbers...}, "HL-min-Fair": ..., "HL-min-Good": ..., "HL-min-VeryGood": ...,
    "full": ..., "long": ..., "middle": ..., "short": ...}`` (keys in that order; HL keys only with saliency).
    Raises ValueError when the qid sets differ or an entry lacks what the official code would crash on.
    """
    _check_grounding_inputs(submission, ground_truth)
    metrics: dict[str, Any] = {}
    brief: dict[str, float] = {}

    if "pred_relevant_windows" in submission[0]:
        for entry in submission:
            if not entry.get("pred_relevant_windows"):
                raise ValueError(f"qid {entry['qid']}: pred_relevant_windows must be a non-empty list")
        for entry in ground_truth:
            if not entry.get("relevant_windows"):
                raise ValueError(f"qid {entry['qid']}: relevant_windows must be a non-empty list")
        mr = _eval_moment_retrieval(submission, ground_truth)
        metrics.update(mr)
        brief.update(_mr_brief(mr))

    if (
        "pred_saliency_scores" in submission[0]
        and "saliency_scores" in ground_truth[0]
        and isinstance(ground_truth[0]["saliency_scores"], list)
    ):
        hl = _eval_highlight(submission, ground_truth)
        metrics.update(hl)
        for level, values in hl.items():
            for key, value in values.items():
                brief[f"{level}-{key.split('-')[1]}"] = value

    return {"brief": brief, **dict(sorted(metrics.items()))}


# ---------------------------------------------------------------------------------------------------------------
# YouTube Highlights / TVSum


def _as_score_tensor(values: torch.Tensor | np.ndarray | Sequence[float], what: str) -> torch.Tensor:
    # Lists become float32, like the model output the official code ranks; tensors/arrays keep their dtype.
    scores = torch.as_tensor(values) if isinstance(values, torch.Tensor | np.ndarray) else torch.tensor(values)
    if scores.dim() != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {tuple(scores.shape)}")
    if scores.is_floating_point() and torch.isnan(scores).any():
        raise ValueError(f"{what} must not contain NaN")
    return scores.detach().cpu()


def _ranked_list_ap(ranked_labels: list[float]) -> float:
    """AP of a ranked 0/1 list as the official code computes it.

    Trapezoid rule over the precision-recall points, starting at (recall 0, precision 1); recall is relative to
    the positives *in this list*. A list without positives scores 0.
    """
    num_pos = sum(ranked_labels)
    if num_pos == 0:
        return 0.0
    hits = ap = recall = 0.0
    precision = 1.0
    for rank, label in enumerate(ranked_labels, start=1):
        hits += label
        new_recall, new_precision = hits / num_pos, hits / rank
        ap += (new_recall - recall) * (precision + new_precision) / 2
        recall, precision = new_recall, new_precision
    return ap


def _check_pairing(predictions: Sequence[Any], labels: Sequence[Any]) -> None:
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions for {len(labels)} videos")
    if not predictions:
        raise ValueError("need at least one video")


def highlight_map(
    saliencies: Sequence[torch.Tensor | np.ndarray | Sequence[float]],
    matches: Sequence[Sequence[float]],
    ndigits: int | None = 5,
) -> float:
    """YouTube Highlights mAP, as the official ``YouTubeHighlights.evaluate``.

    Args:
        saliencies: per video, one predicted score per clip.
        matches: per video, the dataset's per-clip ``match`` labels; a clip is positive iff its label is > 0
            (the dataset uses -1 / 1). Must have the same length as the prediction.
        ndigits: rounding of the result (the official code rounds to 5); ``None`` for no rounding.

    Per video, clips are ranked by predicted score (torch's default descending argsort, so the order of tied
    scores is unspecified, as in the original) and scored with the trapezoid AP of `_ranked_list_ap`; a video
    without positives scores 0. The result is the mean over videos, as a fraction in [0, 1].
    """
    _check_pairing(saliencies, matches)
    per_video = []
    for index, (pred, match) in enumerate(zip(saliencies, matches, strict=True)):
        scores = _as_score_tensor(pred, f"saliency of video {index}")
        positive = torch.tensor([1.0 if m > 0 else 0.0 for m in match])
        if positive.numel() != scores.numel():
            raise ValueError(f"video {index}: {scores.numel()} scores for {positive.numel()} labelled clips")
        order = torch.argsort(scores, descending=True)
        per_video.append(_ranked_list_ap(positive[order].tolist()))
    mean_ap = sum(per_video) / len(per_video)
    return mean_ap if ndigits is None else round(mean_ap, ndigits)


def tvsum_top5_map(
    saliencies: Sequence[torch.Tensor | np.ndarray | Sequence[float]],
    annotations: Sequence[Sequence[Sequence[float]] | np.ndarray],
    k: int = 5,
    ndigits: int | None = 5,
) -> float:
    """TVSum top-k mAP, as the official ``TVSum.evaluate`` (k = 5).

    Args:
        saliencies: per video, one predicted score per clip. May be shorter than the annotation (the official
            loader truncates the video to the annotation length or vice versa); extra annotation rows still
            count for the median below.
        annotations: per video, the (clips, annotators) importance scores (TVSum: 20 annotators, scores 1-5).
            All videos must have the same number of annotators.
        k: how many top-ranked clips are evaluated.
        ndigits: rounding of the result (official: 5); ``None`` for no rounding.

    For every annotator and video: the annotator's labels are 1 where the score is strictly above the median of
    that annotator's column (torch's median: the *lower* middle value for an even count), else 0; clips are
    ranked by predicted score (torch's default descending argsort) and only the top k are kept; their AP is the
    trapezoid AP of `_ranked_list_ap`, whose recall is relative to the positives *among those k* (so any
    top-k list with at least one positive can reach recall 1). Per-annotator means over videos are averaged.
    """
    _check_pairing(saliencies, annotations)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")

    orders, tables = [], []
    for index, (pred, anno) in enumerate(zip(saliencies, annotations, strict=True)):
        scores = _as_score_tensor(pred, f"saliency of video {index}")
        table = torch.tensor(np.asarray(anno, dtype=np.float64).tolist())
        if table.dim() != 2 or table.size(0) == 0 or table.size(1) == 0:
            raise ValueError(f"video {index}: annotation must be a non-empty (clips, annotators) table")
        if scores.numel() > table.size(0):
            raise ValueError(f"video {index}: {scores.numel()} scores for {table.size(0)} annotated clips")
        orders.append(torch.argsort(scores, descending=True))
        tables.append(table)
    num_annotators = tables[0].size(1)
    if any(table.size(1) != num_annotators for table in tables):
        raise ValueError("all videos must have the same number of annotators")

    per_annotator = []
    for annotator in range(num_annotators):
        per_video = []
        for order, table in zip(orders, tables, strict=True):
            column = table[:, annotator]
            labels = torch.where(column > column.median(), 1.0, 0.0)
            per_video.append(_ranked_list_ap(labels[order].tolist()[:k]))
        per_annotator.append(sum(per_video) / len(per_video))
    mean_ap = sum(per_annotator) / len(per_annotator)
    return mean_ap if ndigits is None else round(mean_ap, ndigits)


# ---------------------------------------------------------------------------------------------------------------
# Display


def _flatten_scalars(metrics: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield key, value


def format_table(metrics: Mapping[str, Any]) -> str:
    """Render the headline numbers as a two-column text table.

    Uses ``metrics["brief"]`` when present (an `evaluate_grounding` result), otherwise the top-level numeric
    entries (e.g. ``{"mAP": 0.81}``).
    """
    source = metrics["brief"] if isinstance(metrics.get("brief"), Mapping) else metrics
    rows = [(str(key), repr(float(value))) for key, value in _flatten_scalars(source)]
    if not rows:
        raise ValueError("no numeric metrics to show")
    name_width = max(len("metric"), *(len(name) for name, _ in rows))
    value_width = max(len("value"), *(len(value) for _, value in rows))
    lines = [f"{'metric':<{name_width}}  {'value':>{value_width}}", f"{'-' * name_width}  {'-' * value_width}"]
    lines += [f"{name:<{name_width}}  {value:>{value_width}}" for name, value in rows]
    return "\n".join(lines)
