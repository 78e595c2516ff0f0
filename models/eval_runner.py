"""Run a checkpoint over an annotation file (videos or pre-extracted features) and score it."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .engine import Grounder
from .evaluation import evaluate_grounding, format_table, load_jsonl


def _feature_file(folder: Path, name: object) -> Path:
    path = folder / f"{name}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"pre-extracted features {path} are missing")
    return path


def _video_features(grounder: Grounder, path: Path) -> torch.Tensor:
    """Official feature file (T, K*P*C) float16 -> (K, T, P, C)."""
    rows = torch.from_numpy(np.load(path))
    return rows.reshape(rows.shape[0], grounder.k, -1, grounder.model.cfg.video_width).permute(1, 0, 2, 3)


def _query_features(grounder: Grounder, path: Path) -> torch.Tensor:
    """Official query file (L, K*Cq) -> (K, L, Cq)."""
    rows = torch.from_numpy(np.load(path)).float()
    return rows.reshape(rows.shape[0], grounder.k, -1).permute(1, 0, 2)


def predict_dataset(grounder: Grounder, annotations: list[dict], *, videos: Path | None = None,
                    video_features: Path | None = None, query_features: Path | None = None,
                    progress: bool = True) -> list[dict]:
    """Predictions in the official submission format, one per annotation, in annotation order."""
    by_video: dict[str, list[dict]] = defaultdict(list)
    for anno in annotations:
        by_video[anno["vid"]].append(anno)
    predictions: dict[object, dict] = {}
    for vid, annos in tqdm(by_video.items(), desc="videos", disable=not progress):
        if video_features is not None:
            features = _video_features(grounder, _feature_file(video_features, vid))
        else:
            assert videos is not None
            _, features = grounder.encode_file(_feature_file(videos, vid).with_suffix(".mp4"))
        queries = [_query_features(grounder, _feature_file(query_features, a["qid"])) if query_features
                   else a["query"] for a in annos]
        # Evaluation keeps every row: the metrics truncate by list position themselves.
        results = grounder.ground(features, queries, duration=float(annos[0]["duration"]), top_k=None)
        for anno, result in zip(annos, results, strict=True):
            pred = dict(qid=anno["qid"], vid=vid, pred_saliency_scores=result.saliency)
            if grounder.spec.outputs != "saliency":
                pred["pred_relevant_windows"] = [list(m) for m in result.moments]
            predictions[anno["qid"]] = pred
    return [predictions[a["qid"]] for a in annotations]


def run_eval(args: argparse.Namespace) -> int:
    """Entry point of ``r2tuning eval``."""
    from r2tuning_cli import _model_spec

    grounder = Grounder.from_spec(_model_spec(args), device=args.device, precision=args.precision)
    annotations = load_jsonl(args.annotations)
    submission = predict_dataset(
        grounder, annotations,
        videos=Path(args.videos) if args.videos else None,
        video_features=Path(args.video_features) if args.video_features else None,
        query_features=Path(args.query_features) if args.query_features else None)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(p) + "\n" for p in submission))
    print(format_table(evaluate_grounding(submission, annotations)))
    return 0
