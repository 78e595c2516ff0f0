"""Run a checkpoint over a benchmark's annotations (from videos or pre-extracted features) and score it.

Every dataset of the official repository is covered, in its own file format (:mod:`models.datasets`):

* grounding (QVHighlights, Charades-STA, Ego4D-NLQ, TACoS): the official ``vtg_eval`` numbers
  (:func:`models.evaluation.evaluate_grounding`, its ``brief`` table);
* YouTube Highlights: ``mAP`` as ``YouTubeHighlights.evaluate`` (:func:`models.evaluation.highlight_map`);
* TVSum: top-5 ``mAP`` as ``TVSum.evaluate`` (:func:`models.evaluation.tvsum_top5_map`).

Videos are found as ``<vid>.<ext>`` for the usual video extensions; features as the official ``<vid>.npy``
(video) and ``<qid>.npy`` / ``<vid>.npy`` (query, grounding / highlight datasets). A video that cannot be used
(missing file, undecodable, features of the wrong shape, clip count far from the annotation) is reported with
the reason and left out; the metrics are computed over the videos that worked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from .datasets import AnnotationError, GroundingSet, HighlightSet, HighlightVideo, read_annotations, read_splits
from .datasets import split_videos as select_split
from .engine import Grounder
from .errors import user_error_types
from .evaluation import evaluate_grounding, format_table, highlight_map, tvsum_top5_map

# Looked for, in this order, when a folder holds several files for one video id (any case of the extension).
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "ts", "flv", "wmv", "3gp", "ogv")
# How far a video's clip count may be from its annotation before it is a failure: the official TVSum loader
# asserts a difference below 5 clips (and cuts both to the shorter); YouTube's features match exactly.
CLIP_COUNT_TOLERANCE = 5
_REASON_CHARS = 300

T = TypeVar("T")


class EvaluationError(RuntimeError):
    """Nothing could be evaluated (every video failed); the message gives the first reasons."""


@dataclass(frozen=True)
class VideoFailure:
    """A video left out of the evaluation, and why."""

    vid: str
    reason: str


@dataclass
class EvalReport:
    """What an evaluation run measured and what it could not use."""

    format: str
    metrics: dict[str, Any]
    """The official evaluation's return value (grounding: the whole ``vtg_eval`` dict; highlights: ``mAP``)."""
    table: str
    """The headline numbers as a table (grounding: ``brief``; highlights: ``mAP``)."""
    evaluated: int
    """Videos evaluated."""
    total: int
    """Videos selected (annotated, and in the split when one was given)."""
    failures: list[VideoFailure] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    """Grounding: the submission (official format) of the evaluated queries; highlights: per video
    ``vid`` + ``pred_saliency_scores``."""
    notes: list[str] = field(default_factory=list)


class VideoFolder:
    """Finds ``<vid>.<ext>`` in a folder from one listing of it (video ids may contain dots)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"video folder {self.folder} does not exist")
        rank = {ext: i for i, ext in enumerate(VIDEO_EXTENSIONS)}
        found: dict[str, tuple[int, Path]] = {}
        for path in self.folder.iterdir():
            stem, dot, ext = path.name.rpartition(".")
            ext = ext.lower()
            if not dot or ext not in rank or not path.is_file():
                continue
            if stem not in found or rank[ext] < found[stem][0]:
                found[stem] = (rank[ext], path)
        self._paths = {stem: path for stem, (_, path) in found.items()}

    def find(self, vid: str) -> Path:
        path = self._paths.get(vid)
        if path is None:
            raise FileNotFoundError(f"no video file {vid}.<{'|'.join(VIDEO_EXTENSIONS[:4])}|...> in {self.folder}")
        return path


@dataclass
class Sources:
    """Where videos (or their features) and query features come from."""

    videos: VideoFolder | None = None
    video_features: Path | None = None
    query_features: Path | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if (self.videos is None) == (self.video_features is None):
            raise ValueError("give either a video folder or a video feature folder")
        for folder in (self.video_features, self.query_features):
            if folder is not None and not folder.is_dir():
                raise FileNotFoundError(f"feature folder {folder} does not exist")

    def encode(self, grounder: Grounder, vid: str, fps: float | None = None) -> torch.Tensor:
        """(K, T, P, C) features of one video: its feature file, or the video decoded and encoded (at ``fps``
        when given, e.g. a YouTube Highlights video's own rate)."""
        if self.video_features is not None:
            return video_features(grounder, _npy(self.video_features, vid, "video features"))
        assert self.videos is not None
        sampler = grounder.variant(fps=fps) if fps is not None else grounder
        _, features = sampler.encode_file(self.videos.find(vid), timeout_s=self.timeout_s)
        return features

    def query(self, grounder: Grounder, name: object, text: str | None) -> str | torch.Tensor:
        """A query: its feature file when a query feature folder is given, else its text."""
        if self.query_features is not None:
            return query_features(grounder, _npy(self.query_features, name, "query features"))
        if not text:
            raise AnnotationError("no text query in the annotation; give --query-features")
        return text


def _npy(folder: Path, name: object, what: str) -> Path:
    path = folder / f"{name}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} are missing")
    return path


def video_features(grounder: Grounder, path: Path) -> torch.Tensor:
    """Official video feature file (T, K*P*C) float16 -> (K, T, P, C)."""
    rows = torch.from_numpy(np.load(path, allow_pickle=False))
    k, width = grounder.k, grounder.model.cfg.video_width
    if rows.dim() != 2 or rows.shape[0] == 0 or rows.shape[1] % (k * width):
        raise ValueError(f"{path.name}: shape {tuple(rows.shape)} is not (clips, {k} layers x tokens x {width})")
    return rows.reshape(rows.shape[0], k, -1, width).permute(1, 0, 2, 3)


def query_features(grounder: Grounder, path: Path) -> torch.Tensor:
    """Official query feature file (L, K*Cq) -> (K, L, Cq)."""
    rows = torch.from_numpy(np.load(path, allow_pickle=False)).float()
    k, width = grounder.k, grounder.model.cfg.query_width
    if rows.dim() != 2 or rows.shape[0] == 0 or rows.shape[1] != k * width:
        raise ValueError(f"{path.name}: shape {tuple(rows.shape)} is not (tokens, {k} layers x {width})")
    return rows.reshape(rows.shape[0], k, -1).permute(1, 0, 2)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if not isinstance(err, user_error_types() + (AnnotationError, ValueError)) or not text:
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text[:_REASON_CHARS]


def _each(items: Iterable[T], total: int, progress: bool, failures: list[VideoFailure],
          name: Callable[[T], str], work: Callable[[T], None]) -> None:
    """Run ``work`` per item under a progress bar; a failing item is recorded and skipped."""
    bar = tqdm(items, total=total, desc="videos", unit="video", disable=not progress)
    for item in bar:
        try:
            work(item)
        except Exception as err:  # one bad video must not end the run: report it, go on
            failures.append(VideoFailure(name(item), _reason(err)))
            bar.set_postfix(failed=len(failures))


def _all_failed(failures: list[VideoFailure]) -> EvaluationError:
    shown = "; ".join(f"{f.vid}: {f.reason}" for f in failures[:3])
    return EvaluationError(f"all {len(failures)} videos failed ({shown}{'; ...' if len(failures) > 3 else ''})")


# ---------------------------------------------------------------------------------------------------- grounding


def predict_grounding(grounder: Grounder, annotations: GroundingSet, sources: Sources, *, progress: bool = True,
                      failures: list[VideoFailure] | None = None) -> list[dict[str, Any]]:
    """Predictions in the official submission format for the queries of every video that worked, in
    annotation order; failed videos go to ``failures``."""
    failures = [] if failures is None else failures
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for record in annotations.records:
        groups.setdefault((record["vid"], float(record["duration"])), []).append(record)
    predictions: dict[Any, dict[str, Any]] = {}

    def run(item: tuple[tuple[str, float], list[dict[str, Any]]]) -> None:
        (vid, duration), records = item
        features = sources.encode(grounder, vid)
        queries = [sources.query(grounder, r["qid"], r["query"]) for r in records]
        # Evaluation keeps every row: the metrics truncate by list position themselves.
        results = grounder.ground(features, queries, duration=duration, top_k=None)
        for record, result in zip(records, results, strict=True):
            pred: dict[str, Any] = dict(qid=record["qid"], vid=vid)
            if grounder.spec.has_moments:
                pred["pred_relevant_windows"] = [list(m) for m in result.moments]
            pred["pred_saliency_scores"] = result.saliency
            predictions[record["qid"]] = pred

    _each(groups.items(), len(groups), progress, failures, lambda item: item[0][0], run)
    return [predictions[r["qid"]] for r in annotations.records if r["qid"] in predictions]


def _evaluate_grounding(grounder: Grounder, annotations: GroundingSet, sources: Sources,
                        progress: bool) -> EvalReport:
    if not annotations.labelled:
        raise AnnotationError(f"{annotations.path}: some queries have no relevant_windows (a test split without "
                              "public labels?); evaluation needs ground truth")
    failures: list[VideoFailure] = []
    submission = predict_grounding(grounder, annotations, sources, progress=progress, failures=failures)
    total = len({r["vid"] for r in annotations.records})
    if not submission:
        raise _all_failed(failures)
    done = {p["qid"] for p in submission}
    metrics = evaluate_grounding(submission, [r for r in annotations.records if r["qid"] in done])
    return EvalReport(format="grounding", metrics=metrics, table=format_table(metrics),
                      evaluated=len({p["vid"] for p in submission}), total=total, failures=failures,
                      predictions=submission)


# ---------------------------------------------------------------------------------------------------- highlights


def fit_clips(saliency: list[float], video: HighlightVideo, format: str) -> list[float]:
    """The prediction cut (or, for YouTube, padded with a lowest score) to the annotated clips.

    A video decoded from file may give a clip or two more or fewer than the annotation (container durations
    differ from the annotated frame counts); beyond :data:`CLIP_COUNT_TOLERANCE` it is not the annotated video.
    TVSum predictions may be shorter than the annotation: the official evaluation ranks what the model saw.
    """
    if abs(len(saliency) - video.num_clips) >= CLIP_COUNT_TOLERANCE:
        raise ValueError(f"{len(saliency)} clips for {video.num_clips} annotated clips "
                         f"(more than {CLIP_COUNT_TOLERANCE - 1} apart: is it the annotated video, at its rate?)")
    if len(saliency) >= video.num_clips:
        return saliency[: video.num_clips]
    if format == "tvsum":
        return saliency
    return saliency + [min(saliency) - 1.0] * (video.num_clips - len(saliency))


def predict_highlights(grounder: Grounder, annotations: HighlightSet, sources: Sources, *, progress: bool = True,
                       failures: list[VideoFailure] | None = None,
                       per_video_fps: bool = True) -> list[dict[str, Any]]:
    """Per video that worked: ``vid`` and ``pred_saliency_scores`` fitted to the annotated clips.

    From videos, YouTube Highlights videos are sampled at their own rate (``HighlightVideo.fps``, the official
    "auto" rate) when the annotation gives it and ``per_video_fps``; otherwise at the model's.
    """
    failures = [] if failures is None else failures
    out: list[dict[str, Any]] = []

    def run(video: HighlightVideo) -> None:
        fps = video.fps if per_video_fps and sources.videos is not None else None
        features = sources.encode(grounder, video.vid, fps=fps)
        query = sources.query(grounder, video.vid, video.query)
        (result,) = grounder.ground(features, [query], fps=fps, top_k=None)
        out.append(dict(vid=video.vid, pred_saliency_scores=fit_clips(result.saliency, video, annotations.format)))

    _each(annotations.videos, len(annotations.videos), progress, failures, lambda v: v.vid, run)
    return out


def highlight_metrics(predictions: list[dict[str, Any]], annotations: HighlightSet) -> dict[str, float]:
    """``{"mAP": ...}`` as the official ``evaluate`` of the format returns it."""
    labels = {v.vid: v.labels for v in annotations.videos}
    scores = [p["pred_saliency_scores"] for p in predictions]
    truth = [labels[p["vid"]] for p in predictions]
    if annotations.format == "youtube":
        return {"mAP": highlight_map(scores, truth)}
    return {"mAP": tvsum_top5_map(scores, truth)}


def _evaluate_highlights(grounder: Grounder, annotations: HighlightSet, sources: Sources, progress: bool,
                         per_video_fps: bool) -> EvalReport:
    if not annotations.videos:
        raise AnnotationError(f"{annotations.path}: no annotated video is selected")
    failures: list[VideoFailure] = []
    predictions = predict_highlights(grounder, annotations, sources, progress=progress, failures=failures,
                                     per_video_fps=per_video_fps)
    if not predictions:
        raise _all_failed(failures)
    metrics = highlight_metrics(predictions, annotations)
    return EvalReport(format=annotations.format, metrics=metrics, table=format_table(metrics),
                      evaluated=len(predictions), total=len(annotations.videos), failures=failures,
                      predictions=predictions)


# ---------------------------------------------------------------------------------------------------- entry point


def evaluate_annotations(grounder: Grounder, annotations_file: str | Path, *, videos: str | Path | None = None,
                         video_features: str | Path | None = None, query_features: str | Path | None = None,
                         out: str | Path | None = None, progress: bool = True, format: str = "auto",
                         splits: str | Path | None = None, split: str = "val", domain: str | None = None,
                         per_video_fps: bool = True, timeout_s: float = 600.0) -> EvalReport:
    """Predict every annotated video (or those of ``split`` of ``domain`` in a ``splits`` file), optionally write
    the predictions as JSON lines to ``out``, and score them as the official evaluation does.

    ``domain`` defaults to the model's (the zoo's ``gym`` finds the official ``gymnastics``). Without ``splits``
    every annotated video is evaluated; the official YouTube Highlights / TVSum numbers are for the ``val``
    split of the model's domain (the official ``datasets/constants.py`` is a valid ``splits`` file).
    """
    sources = Sources(videos=VideoFolder(videos) if videos is not None else None,
                      video_features=Path(video_features) if video_features is not None else None,
                      query_features=Path(query_features) if query_features is not None else None,
                      timeout_s=timeout_s)
    annotations = read_annotations(annotations_file, format)
    notes: list[str] = []
    if isinstance(annotations, GroundingSet):
        if splits is not None:
            raise AnnotationError("--splits applies to YouTube Highlights and TVSum; grounding files are one split "
                                  "each")
        report = _evaluate_grounding(grounder, annotations, sources, progress)
    else:
        if splits is not None:
            wanted_domain = domain or grounder.spec.domain
            vids = select_split(read_splits(splits, annotations.format), wanted_domain, split)
            annotations = annotations.select(vids)
            notes.append(f"split {split!r} of domain {wanted_domain!r}: {len(vids)} videos"
                         + (f", {len(annotations.missing)} of them not in the annotation file"
                            if annotations.missing else ""))
        else:
            notes.append(f"no splits file: all {len(annotations.videos)} annotated videos are evaluated (the official "
                         "numbers use one domain's val split: pass --splits)")
        report = _evaluate_highlights(grounder, annotations, sources, progress, per_video_fps)
    report.notes = notes + report.notes
    if out is not None:
        Path(out).write_text("".join(json.dumps(p) + "\n" for p in report.predictions), encoding="utf-8")
    return report
