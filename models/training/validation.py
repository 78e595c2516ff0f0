"""Validation during training: the model in ``eval()`` answers every validation example the way the server
answers (inference forward, the dataset's post-processing), and the existing metrics score it.

Moments: the official QVHighlights / Charades metrics (:func:`models.evaluation.evaluate_grounding`, brief keys
such as ``MR-full-R1@0.5`` and ``MR-full-mAP``, percentages). Highlights: YouTube Highlights mAP or TVSum top-5
mAP (:func:`models.evaluation.highlight_map` / :func:`~models.evaluation.tvsum_top5_map`, key ``mAP``, fractions).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..evaluation import evaluate_grounding, highlight_map, tvsum_top5_map
from ..postprocess import NmsConfig, postprocess_boundaries, select_moments
from ..r2 import R2Tuning
from .data import Example, FeatureSource


def query_batch(queries: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-query (L, K, Cq) features -> (B, K, Lmax, Cq) float32 zero-padded and the (B, Lmax) token mask (the
    features path of :meth:`models.engine.Grounder.ground`)."""
    longest = max(q.shape[0] for q in queries)
    _, k, c = queries[0].shape
    batch = torch.zeros(len(queries), k, longest, c)
    mask = torch.zeros(len(queries), longest)
    for b, q in enumerate(queries):
        batch[b, :, : q.shape[0]] = q.float().permute(1, 0, 2)
        mask[b, : q.shape[0]] = 1
    return batch, mask


def predict(model: R2Tuning, examples: Sequence[Example], source: FeatureSource, fps: float, unit: float | None,
            nms: NmsConfig, max_batch: int = 64) -> list[dict[str, Any]]:
    """One prediction per example in the official submission format, in example order."""
    was_training = model.training
    model.eval()
    device = model.coef.device
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        by_video[example.vid].append(i)
    out: list[dict[str, Any] | None] = [None] * len(examples)
    try:
        for vid, indices in by_video.items():
            video, _ = source.video(vid)  # (T, K, P, C)
            limit = min(examples[i].num_clips for i in indices)
            state = model.prepare_video(video[:limit].permute(1, 0, 2, 3).to(device))
            for start in range(0, len(indices), max_batch):
                part = indices[start: start + max_batch]
                query, mask = query_batch([source.query(examples[i].key, examples[i].query) for i in part])
                raw = model(state, query.to(device), mask.to(device), fps)
                for b, i in enumerate(part):
                    example = examples[i]
                    pred: dict[str, Any] = dict(qid=example.moment["qid"] if example.moment else example.key,
                                                vid=vid, pred_saliency_scores=raw.saliency[b].float().cpu().tolist())
                    if raw.boundary is not None:
                        rows = postprocess_boundaries(raw.boundary[b].float().cpu(), example.duration, unit, nms)
                        pred["pred_relevant_windows"] = [list(m) for m in select_moments(rows, None, None)]
                    out[i] = pred
    finally:
        model.train(was_training)
    return [p for p in out if p is not None]


def score(examples: Sequence[Example], predictions: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Headline metrics of predictions made by :func:`predict`."""
    if examples[0].highlight is not None:
        saliency = [torch.tensor(p["pred_saliency_scores"]) for p in predictions]
        items = [e.highlight for e in examples]
        assert all(item is not None for item in items)
        if items[0].kind == "youtube":  # type: ignore[union-attr]
            value = highlight_map(saliency, [item.matches()[: len(s)] for item, s in  # type: ignore[union-attr]
                                             zip(items, saliency, strict=True)])
        else:
            value = tvsum_top5_map(saliency, [list(item.labels) for item in items])  # type: ignore[union-attr]
        return {"mAP": float(value)}
    labels = [e.moment for e in examples]
    metrics = evaluate_grounding(list(predictions), labels)  # type: ignore[arg-type]
    return {k: float(v) for k, v in metrics["brief"].items()}


def validate(model: R2Tuning, examples: Sequence[Example], source: FeatureSource, fps: float, unit: float | None,
             nms: NmsConfig) -> dict[str, float]:
    return score(examples, predict(model, examples, source, fps, unit, nms))
