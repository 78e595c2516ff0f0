"""Run a checkpoint over an annotation file (videos or pre-extracted features) and score it."""

from __future__ import annotations

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


def _video_file(folder: Path, vid: object) -> Path:
    for suffix in (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg"):
        path = folder / f"{vid}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"video {vid} not found in {folder} (looked for {vid}.mp4, .mkv, .webm, ...)")


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
            _, features = grounder.encode_file(_video_file(videos, vid))
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


def evaluate_annotations(grounder: Grounder, annotations_file: str | Path, *, videos: str | Path | None = None,
                         video_features: str | Path | None = None, query_features: str | Path | None = None,
                         out: str | Path | None = None, progress: bool = True) -> str:
    """Predict every annotation, optionally write the submission jsonl, and return the metrics table."""
    annotations = load_jsonl(annotations_file)
    submission = predict_dataset(grounder, annotations, videos=Path(videos) if videos else None,
                                 video_features=Path(video_features) if video_features else None,
                                 query_features=Path(query_features) if query_features else None, progress=progress)
    if out:
        Path(out).write_text("".join(json.dumps(p) + "\n" for p in submission))
    return format_table(evaluate_grounding(submission, annotations))
