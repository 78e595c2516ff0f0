"""Benchmark annotation files in their official formats, read into checked records (no torch needed).

One module for everyone who reads annotations: evaluation (:mod:`models.eval_runner`) and training. Three file
formats cover the six datasets of the official repository (``datasets/*.py`` there):

* ``grounding``: QVHighlights, Charades-STA, Ego4D-NLQ and TACoS. JSON lines, one query per line: ``qid``,
  ``vid``, ``query``, ``duration`` (seconds) and, where labelled, ``relevant_windows`` (``[[start, end], ...]``
  seconds); QVHighlights adds ``relevant_clip_ids`` and ``saliency_scores`` (three 0..4 ratings per 2 s clip).
  As in the official loader, a file whose path contains ``tacos`` names its videos ``<vid>-cam-002``.
* ``youtube``: YouTube Highlights (``youtube_anno.json``). One JSON object keyed by video id; an entry has
  ``match`` (one label per annotated clip, -1 or 1), ``info`` (``info[5]`` is the text query) and ``frames`` /
  ``fps`` (the source video's frame count and rate). The official features were sampled at a per-video rate
  ("auto"): number of annotated clips / (frames / fps), see :func:`youtube_auto_fps`.
* ``tvsum``: TVSum (``tvsum_anno.json``). One JSON object keyed by video id; an entry has ``anno`` (clips x 20
  annotators, importance 1..5) and ``title`` (the text query).

The official code evaluates YouTube Highlights and TVSum on the ``val`` split of one domain, listed in its
``datasets/constants.py`` (``YOUTUBE_SPLITS`` / ``TVSUM_SPLITS``). :func:`read_splits` reads that file as data
(parsed, never executed) or a JSON file of the same shape, and :func:`split_videos` picks a domain's split.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import Any, Literal

DatasetFormat = Literal["grounding", "youtube", "tvsum"]
# What a user may call a format: the dataset names map to the file format they use.
FORMAT_NAMES: dict[str, DatasetFormat | None] = {
    "auto": None, "grounding": "grounding", "qvhighlights": "grounding", "charades": "grounding",
    "ego4d": "grounding", "tacos": "grounding", "youtube": "youtube", "tvsum": "tvsum",
}
# The variables of the official datasets/constants.py that hold each format's splits.
SPLIT_VARIABLES: dict[str, str] = {"youtube": "YOUTUBE_SPLITS", "tvsum": "TVSUM_SPLITS"}
TACOS_CAMERA = "-cam-002"  # the official loader's suffix for TACoS video ids
ANY_DOMAIN = "*"  # the domain key of a splits file that lists one domain only
YOUTUBE_QUERY_INDEX = 5  # info[5] is the query of a YouTube Highlights entry


class AnnotationError(ValueError):
    """An annotation or splits file cannot be used as is; the message names the file, the entry and the fix."""


@dataclass(frozen=True)
class HighlightVideo:
    """One video of a highlight dataset (YouTube Highlights or TVSum) with its per-clip labels."""

    vid: str
    query: str | None
    """The text query the official code uses (YouTube: ``info[5]``; TVSum: ``title``); None when absent."""
    labels: list[Any]
    """YouTube: ``match`` (clips,) with -1 / 1; TVSum: ``anno`` (clips, annotators) importance scores."""
    fps: float | None = None
    """YouTube: the per-video sampling rate the official features used (None without frames / fps)."""

    @property
    def num_clips(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class GroundingSet:
    """A grounding annotation file: official JSON-lines records, in file order."""

    path: Path
    records: list[dict[str, Any]]
    format: DatasetFormat = "grounding"

    def by_video(self) -> dict[str, list[dict[str, Any]]]:
        """Records grouped by ``vid``, videos in order of first appearance, records in file order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for record in self.records:
            out.setdefault(record["vid"], []).append(record)
        return out

    @property
    def labelled(self) -> bool:
        """Whether every query has ground-truth windows (test splits without public labels have none)."""
        return all(r.get("relevant_windows") for r in self.records)


@dataclass(frozen=True)
class HighlightSet:
    """A YouTube Highlights or TVSum annotation file (or the part of it a split selects), in file order."""

    path: Path
    format: DatasetFormat
    videos: list[HighlightVideo]
    missing: list[str] = field(default_factory=list)
    """Videos a split listed that the file does not have (the official loader skips them too)."""

    def select(self, vids: Iterable[str]) -> HighlightSet:
        """Only the listed videos that the file has, in the listed order."""
        by_id = {v.vid: v for v in self.videos}
        wanted = list(dict.fromkeys(vids))
        return replace(self, videos=[by_id[v] for v in wanted if v in by_id],
                       missing=[v for v in wanted if v not in by_id])


Annotations = GroundingSet | HighlightSet


# ---------------------------------------------------------------------------------------------------- reading


def read_annotations(path: str | Path, format: str = "auto") -> Annotations:
    """Read an annotation file; ``format`` is ``auto`` (from the content) or a name of :data:`FORMAT_NAMES`."""
    file = Path(path)
    if format not in FORMAT_NAMES:
        raise AnnotationError(f"unknown annotation format {format!r}; choose one of: {', '.join(FORMAT_NAMES)}")
    text = _read_text(file)
    kind = FORMAT_NAMES[format] or _detect(file, text)
    if kind == "grounding":
        return _grounding(file, text)
    document = _json_object(file, text, kind)
    return _highlights(file, document, kind)


def read_grounding(path: str | Path) -> GroundingSet:
    """A QVHighlights / Charades-STA / Ego4D-NLQ / TACoS JSON-lines file."""
    file = Path(path)
    return _grounding(file, _read_text(file))


def read_youtube(path: str | Path) -> HighlightSet:
    """A YouTube Highlights ``youtube_anno.json``."""
    file = Path(path)
    return _highlights(file, _json_object(file, _read_text(file), "youtube"), "youtube")


def read_tvsum(path: str | Path) -> HighlightSet:
    """A TVSum ``tvsum_anno.json``."""
    file = Path(path)
    return _highlights(file, _json_object(file, _read_text(file), "tvsum"), "tvsum")


def youtube_auto_fps(entry: Mapping[str, Any]) -> float | None:
    """The official per-video rate: annotated clips / duration, with duration = int(frames) / fps.

    Computed in the official order of operations, so the rate (and the ``fps`` filter argument printed from it)
    is the same float. None when the entry lacks usable ``frames`` / ``fps``.
    """
    frames, rate, match = entry.get("frames"), entry.get("fps"), entry.get("match")
    if not (_is_number(frames) or isinstance(frames, str)) or not _is_number(rate) or not isinstance(match, list):
        return None
    try:
        duration = int(frames) / rate  # type: ignore[arg-type, operator]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (duration > 0 and math.isfinite(duration)) or not match:
        return None
    return len(match) / duration


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AnnotationError(f"annotation file {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"cannot read annotation file {file}: {err}") from None


def _detect(file: Path, text: str) -> DatasetFormat:
    """youtube / tvsum: one JSON object of per-video objects with ``match`` / ``anno``; else JSON lines."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError:
            return "grounding"  # several objects: JSON lines
        if isinstance(document, dict) and document and all(isinstance(v, dict) for v in document.values()):
            first = next(iter(document.values()))
            if "match" in first:
                return "youtube"
            if "anno" in first:
                return "tvsum"
    elif stripped.startswith("["):
        raise AnnotationError(f"{file}: a JSON list is none of the official formats (grounding annotations are "
                              "JSON lines, one object per line; YouTube Highlights and TVSum one object keyed by "
                              "video id)")
    return "grounding"


def _json_object(file: Path, text: str, kind: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(document, dict) or not document:
        raise AnnotationError(f"{file}: a {kind} annotation file is one non-empty JSON object keyed by video id")
    return document


def _grounding(file: Path, text: str) -> GroundingSet:
    tacos = "tacos" in str(file).lower()
    records: list[dict[str, Any]] = []
    seen: dict[Any, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{where}: not a JSON object ({err}); grounding annotations are JSON lines") from None
        if not isinstance(record, dict):
            raise AnnotationError(f"{where}: expected a JSON object per line")
        _check_grounding(record, where)
        if record["qid"] in seen:
            raise AnnotationError(f"{where}: qid {record['qid']!r} repeats line {seen[record['qid']]}")
        seen[record["qid"]] = number
        record = dict(record, vid=str(record["vid"]))
        if tacos:
            record["vid"] += TACOS_CAMERA
        records.append(record)
    if not records:
        raise AnnotationError(f"{file}: no annotations")
    return GroundingSet(path=file, records=records)


def _check_grounding(record: dict[str, Any], where: str) -> None:
    missing = [k for k in ("qid", "vid", "query", "duration") if k not in record]
    if missing:
        raise AnnotationError(f"{where}: missing {', '.join(missing)} (needs qid, vid, query, duration)")
    if not isinstance(record["qid"], int | str) or isinstance(record["qid"], bool):
        raise AnnotationError(f"{where}: qid must be an integer or a string")
    if not isinstance(record["vid"], str | int) or isinstance(record["vid"], bool) or str(record["vid"]) == "":
        raise AnnotationError(f"{where}: vid must be a non-empty string")
    if not isinstance(record["query"], str) or not record["query"].strip():
        raise AnnotationError(f"{where}: query must be a non-empty string")
    if not _is_number(record["duration"]) or record["duration"] <= 0:
        raise AnnotationError(f"{where}: duration must be a positive number of seconds")
    windows = record.get("relevant_windows")
    if windows is not None:
        if not isinstance(windows, list) or not all(
                isinstance(w, list) and len(w) == 2 and all(_is_number(t) for t in w) for w in windows):
            raise AnnotationError(f"{where}: relevant_windows must be a list of [start, end] seconds")


def _highlights(file: Path, document: dict[str, Any], kind: DatasetFormat) -> HighlightSet:
    videos = []
    annotators: int | None = None
    for vid, entry in document.items():
        where = f"{file}: video {vid!r}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object")
        if kind == "youtube":
            videos.append(_youtube_video(str(vid), entry, where))
            continue
        video = _tvsum_video(str(vid), entry, where)
        width = len(video.labels[0])
        if annotators is not None and width != annotators:
            raise AnnotationError(f"{where}: {width} annotators, the videos before have {annotators}")
        annotators = width
        videos.append(video)
    return HighlightSet(path=file, format=kind, videos=videos)


def _youtube_video(vid: str, entry: dict[str, Any], where: str) -> HighlightVideo:
    match = entry.get("match")
    if not isinstance(match, list) or not match or not all(_is_number(m) for m in match):
        raise AnnotationError(f"{where}: 'match' must be a non-empty list of per-clip labels (-1 / 1)")
    info = entry.get("info")
    query = None
    if isinstance(info, list) and len(info) > YOUTUBE_QUERY_INDEX and isinstance(info[YOUTUBE_QUERY_INDEX], str):
        query = info[YOUTUBE_QUERY_INDEX].strip() or None
    return HighlightVideo(vid=vid, query=query, labels=list(match), fps=youtube_auto_fps(entry))


def _tvsum_video(vid: str, entry: dict[str, Any], where: str) -> HighlightVideo:
    anno = entry.get("anno")
    if (not isinstance(anno, list) or not anno or not all(isinstance(row, list) and row for row in anno)
            or not all(_is_number(v) for row in anno for v in row)):
        raise AnnotationError(f"{where}: 'anno' must be a non-empty (clips, annotators) table of numbers")
    if len({len(row) for row in anno}) != 1:
        raise AnnotationError(f"{where}: every row of 'anno' needs the same number of annotators")
    title = entry.get("title")
    query = (title.strip() or None) if isinstance(title, str) else None
    return HighlightVideo(vid=vid, query=query, labels=[list(row) for row in anno])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------------- splits


def read_splits(path: str | Path, format: DatasetFormat) -> dict[str, dict[str, list[str]]]:
    """Train/val video lists per domain: ``{domain: {"train": [...], "val": [...]}}``.

    Accepts the official ``datasets/constants.py`` (its ``YOUTUBE_SPLITS`` / ``TVSUM_SPLITS`` literal, read with
    :func:`ast.literal_eval`; nothing in the file runs), or JSON: that same shape, one domain's
    ``{"train": [...], "val": [...]}``, or a plain list of video ids (taken as the ``val`` split).
    """
    file = Path(path)
    text = _read_text(file)
    if file.suffix == ".py":
        document: Any = _python_literal(file, text, SPLIT_VARIABLES.get(format, ""))
    else:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"splits file {file}: not valid JSON ({err})") from None
    if isinstance(document, list):
        document = {ANY_DOMAIN: {"val": document}}
    elif isinstance(document, dict) and document and all(isinstance(v, list) for v in document.values()):
        document = {ANY_DOMAIN: document}
    if not isinstance(document, dict) or not document or not all(
            isinstance(splits, dict) and all(isinstance(ids, list) for ids in splits.values())
            for splits in document.values()):
        raise AnnotationError(f"splits file {file}: expected {{domain: {{split: [video ids]}}}}, "
                              "{split: [video ids]} or a list of video ids")
    return {str(domain): {str(name): [str(v) for v in ids] for name, ids in splits.items()}
            for domain, splits in document.items()}


def _python_literal(file: Path, text: str, variable: str) -> Any:
    try:
        tree = ast.parse(text, filename=str(file))
    except SyntaxError as err:
        raise AnnotationError(f"splits file {file}: not valid Python ({err})") from None
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found.append(node.targets[0].id)
            if node.targets[0].id == variable:
                try:
                    return ast.literal_eval(node.value)
                except ValueError:
                    raise AnnotationError(f"splits file {file}: {variable} is not a plain literal") from None
    raise AnnotationError(f"splits file {file}: no {variable or 'splits'} assignment (found: "
                          f"{', '.join(found) or 'none'})")


def split_domain(splits: Mapping[str, Any], domain: str | None) -> str:
    """The key of ``splits`` a model domain means: exact (any case), else the one key it abbreviates
    (the zoo's ``gym`` is the official ``gymnastics``)."""
    keys = list(splits)
    if keys == [ANY_DOMAIN]:
        return ANY_DOMAIN
    if not domain:
        raise AnnotationError(f"the splits file lists several domains ({', '.join(keys)}); name one (--domain)")
    lowered = domain.lower()
    exact = [k for k in keys if k.lower() == lowered]
    prefixed = [k for k in keys if k.lower().startswith(lowered)]
    if exact:
        return exact[0]
    if len(prefixed) == 1:
        return prefixed[0]
    raise AnnotationError(f"domain {domain!r} is not in the splits file (domains: {', '.join(keys)})")


def split_videos(splits: Mapping[str, Mapping[str, list[str]]], domain: str | None, split: str) -> list[str]:
    """The video ids of one domain's split, in the file's order."""
    key = split_domain(splits, domain)
    if split not in splits[key]:
        raise AnnotationError(f"domain {key!r} has no {split!r} split (splits: {', '.join(splits[key])})")
    return list(splits[key][split])


# ====================================================================================================================
# Training records: the same formats parsed from text (files or request bodies) into typed records, plus the
# original Charades-STA text format, the saliency targets and positive clips of the highlight datasets, and the
# mapping of highlight labels onto a features grid. Used by models/training and the service's training jobs.
# (Two views of one set of formats, merged from parallel work; unifying them on one record type is a follow-up.)

AnnotationFormat = Literal["qvhighlights", "charades-sta", "youtube", "tvsum"]
FORMATS: tuple[str, ...] = ("qvhighlights", "charades-sta", "youtube", "tvsum")
_MAX_SHOWN = 120  # characters of a bad value quoted in an error message


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


# ------------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class MomentQuery:
    """One query of a moment-retrieval dataset, with the windows it matches."""

    qid: int | str
    vid: str
    query: str
    duration: float | None  # seconds; None until the video (or its features) says (Charades-STA text files)
    windows: tuple[tuple[float, float], ...]  # relevant windows in seconds (may be empty for test splits)
    clip_ids: tuple[int, ...] | None = None  # QVHighlights: the rated 2 s clips
    saliency_scores: tuple[tuple[int, ...], ...] | None = None  # QVHighlights: ratings of each rated clip

    def label(self) -> dict[str, Any]:
        """The record in the official jsonl shape (what the training targets and the metrics read)."""
        out: dict[str, Any] = dict(qid=self.qid, vid=self.vid, query=self.query, duration=self.duration,
                                   relevant_windows=[list(w) for w in self.windows])
        if self.clip_ids is not None and self.saliency_scores is not None:
            out["relevant_clip_ids"] = list(self.clip_ids)
            out["saliency_scores"] = [list(s) for s in self.saliency_scores]
        return out

    def with_duration(self, duration: float) -> MomentQuery:
        return replace(self, duration=duration)


@dataclass(frozen=True)
class LabelledVideo:
    """One video of a highlight-detection dataset (YouTube Highlights or TVSum) with its per-clip labels.

    ``labels`` is one row per annotated clip: ``(match,)`` for YouTube Highlights (-1 / 1), the annotators'
    ratings (1..5) for TVSum. ``label_seconds`` is the length of one annotated clip when the file says (duration /
    clips), else None (the labels are then taken to be on the features' clip grid, as the official loaders do).
    """

    vid: str
    query: str
    kind: Literal["youtube", "tvsum"]
    labels: tuple[tuple[float, ...], ...]
    duration: float | None = None
    label_seconds: float | None = None
    domain: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_clips(self) -> int:
        return len(self.labels)

    def saliency(self) -> list[float]:
        """Per-clip training saliency in [0, 1]: YouTube (match + 1) / 2; TVSum (sum - n) / (4 n) over n
        annotators rating 1..5 (the official (sum - 20) / 80 for its 20 annotators)."""
        if self.kind == "youtube":
            return [(row[0] + 1) / 2 for row in self.labels]
        n = len(self.labels[0])
        return [(sum(row) - n) / (4 * n) for row in self.labels]

    def positive_clips(self, saliency: Sequence[float]) -> list[int]:
        """Clips the contrastive anchor is drawn from: YouTube saliency > 0.5, TVSum saliency above its median
        (torch's median of an even count is the lower middle value, as the official ``saliency.median()``)."""
        if self.kind == "youtube":
            return [i for i, s in enumerate(saliency) if s > 0.5]
        ordered = sorted(saliency)
        median = ordered[(len(ordered) - 1) // 2]
        return [i for i, s in enumerate(saliency) if s > median]

    def matches(self) -> list[float]:
        """YouTube Highlights ``match`` labels (what :func:`models.evaluation.highlight_map` reads)."""
        return [row[0] for row in self.labels]

    def on_clips(self, num_clips: int, clip_seconds: float | None = None) -> LabelledVideo:
        """The labels on a features grid of ``num_clips`` clips.

        With both ``label_seconds`` and ``clip_seconds`` known and different (videos encoded at the model's rate,
        not the dataset's), each clip takes the label of the annotated clip its centre falls in. Otherwise the
        grids are the same: YouTube labels must have exactly ``num_clips`` rows, TVSum within 5 rows, cut to the
        shorter (the official loaders' checks).
        """
        if num_clips <= 0:
            raise AnnotationError(f"video {self.vid}: no feature clips")
        resample = (clip_seconds is not None and self.label_seconds is not None
                    and not math.isclose(clip_seconds, self.label_seconds, rel_tol=1e-3))
        if resample:
            assert clip_seconds is not None and self.label_seconds is not None
            index = [min(self.num_clips - 1, int((j + 0.5) * clip_seconds / self.label_seconds))
                     for j in range(num_clips)]
            return replace(self, labels=tuple(self.labels[i] for i in index), label_seconds=clip_seconds)
        slack = 0 if self.kind == "youtube" else 4
        if abs(self.num_clips - num_clips) > slack:
            raise AnnotationError(
                f"video {self.vid}: {self.num_clips} annotated clips but the features have {num_clips} clips; "
                + ("they must be equal (YouTube Highlights)" if slack == 0 else "they may differ by at most 4 (TVSum)")
                + "; give the annotation's duration so labels can be mapped onto the clips by time")
        return replace(self, labels=self.labels[:num_clips])


@dataclass(frozen=True)
class AnnotationSet:
    """Everything one annotation file holds, in file order."""

    format: str
    source: str
    moments: tuple[MomentQuery, ...] = ()
    highlights: tuple[LabelledVideo, ...] = ()

    @property
    def kind(self) -> Literal["moments", "highlights"]:
        return "highlights" if self.format in ("youtube", "tvsum") else "moments"

    @property
    def vids(self) -> list[str]:
        """Distinct video ids in first-seen order."""
        items: Iterable[MomentQuery | LabelledVideo] = self.highlights if self.kind == "highlights" else self.moments
        return list(dict.fromkeys(item.vid for item in items))

    def __len__(self) -> int:
        return len(self.highlights) if self.kind == "highlights" else len(self.moments)


# ------------------------------------------------------------------------------------------------------ readers


def _number(value: object, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AnnotationError(f"{where}: {what} must be a finite number, got {_shown(value)}")
    return float(value)


def _window(row: object, where: str) -> tuple[float, float]:
    if not isinstance(row, list | tuple) or len(row) < 2:
        raise AnnotationError(f"{where}: each relevant window must be [start, end] in seconds, got {_shown(row)}")
    start, end = _number(row[0], "a window start", where), _number(row[1], "a window end", where)
    if start < 0 or end < 0:
        raise AnnotationError(f"{where}: window {_shown(row)} has a negative time")
    return start, end


def _moment_record(obj: object, where: str) -> MomentQuery:
    if not isinstance(obj, dict):
        raise AnnotationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("qid", "vid", "query") if k not in obj]
    if missing:
        raise AnnotationError(f"{where}: missing {', '.join(missing)} (a query needs qid, vid, query, duration "
                              "and relevant_windows)")
    qid = obj["qid"]
    if isinstance(qid, bool) or not isinstance(qid, int | str):
        raise AnnotationError(f"{where}: qid must be an integer or a string, got {_shown(qid)}")
    if not isinstance(obj["vid"], str) or not obj["vid"]:
        raise AnnotationError(f"{where}: vid must be a non-empty string, got {_shown(obj['vid'])}")
    if not isinstance(obj["query"], str) or not obj["query"].strip():
        raise AnnotationError(f"{where}: query must be a non-empty string, got {_shown(obj['query'])}")
    duration = obj.get("duration")
    duration = None if duration is None else _number(duration, "duration", where)
    if duration is not None and duration <= 0:
        raise AnnotationError(f"{where}: duration must be > 0 seconds, got {duration}")
    windows_raw = obj.get("relevant_windows", [])
    if not isinstance(windows_raw, list):
        raise AnnotationError(f"{where}: relevant_windows must be a list of [start, end], got {_shown(windows_raw)}")
    windows = tuple(_window(w, where) for w in windows_raw)
    clip_ids = scores = None
    if "relevant_clip_ids" in obj or "saliency_scores" in obj:
        ids, ratings = obj.get("relevant_clip_ids"), obj.get("saliency_scores")
        if not isinstance(ids, list) or not isinstance(ratings, list) or len(ids) != len(ratings):
            raise AnnotationError(f"{where}: relevant_clip_ids and saliency_scores must be lists of equal length")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise AnnotationError(f"{where}: relevant_clip_ids must be clip indices >= 0")
        if not all(isinstance(r, list) and r and all(isinstance(x, int | float) for x in r) for r in ratings):
            raise AnnotationError(f"{where}: each saliency_scores entry must be a list of ratings")
        clip_ids, scores = tuple(ids), tuple(tuple(int(x) for x in r) for r in ratings)
    return MomentQuery(qid=qid, vid=obj["vid"], query=obj["query"].strip(), duration=duration, windows=windows,
                       clip_ids=clip_ids, saliency_scores=scores)


def parse_qvhighlights(text: str, source: str = "<text>") -> AnnotationSet:
    """JSON lines in the QVHighlights / official jsonl format (blank lines ignored)."""
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{where}: not JSON ({err.msg} at column {err.colno})") from None
        items.append(_moment_record(obj, where))
    _check_unique([str(m.qid) for m in items], "qid", source)
    return AnnotationSet("qvhighlights", source, moments=tuple(items))


def parse_charades_sta(text: str, source: str = "<text>") -> AnnotationSet:
    """Original Charades-STA lines ``VID START END##sentence``; qids are the line order (0, 1, ...), as the
    official conversion numbers them."""
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source} line {number}"
        head, sep, sentence = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3 or not sentence.strip():
            raise AnnotationError(f"{where}: expected 'VID START END##sentence', got {_shown(line)}")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise AnnotationError(f"{where}: START and END must be seconds, got {_shown(head)}") from None
        window = _window([start, end], where)
        items.append(MomentQuery(qid=len(items), vid=parts[0], query=sentence.strip(), duration=None,
                                 windows=(window,)))
    return AnnotationSet("charades-sta", source, moments=tuple(items))


def _highlight_rows(value: object, kind: str, where: str) -> tuple[tuple[float, ...], ...]:
    if not isinstance(value, list) or not value:
        raise AnnotationError(f"{where}: '{'match' if kind == 'youtube' else 'anno'}' must be a non-empty list")
    if kind == "youtube":
        return tuple((_number(v, "a match label", where),) for v in value)
    rows = []
    for row in value:
        if not isinstance(row, list) or not row:
            raise AnnotationError(f"{where}: 'anno' must hold one list of annotator ratings per clip")
        rows.append(tuple(_number(v, "a rating", where) for v in row))
    if len({len(r) for r in rows}) != 1:
        raise AnnotationError(f"{where}: every clip must have the same number of annotator ratings")
    return tuple(rows)


def _highlight_query(entry: dict[str, Any], kind: str, where: str) -> str:
    if isinstance(entry.get("query"), str) and entry["query"].strip():
        return str(entry["query"]).strip()  # our own files may name the query directly
    if kind == "youtube":
        info = entry.get("info")
        if isinstance(info, list) and len(info) > 5 and isinstance(info[5], str) and info[5].strip():
            return info[5].strip()
        if isinstance(entry.get("domain"), str) and entry["domain"].strip():
            return str(entry["domain"]).strip()
        raise AnnotationError(f"{where}: no query: give 'query', 'domain' or the official 'info' list (info[5])")
    if isinstance(entry.get("title"), str) and entry["title"].strip():
        return str(entry["title"]).strip()
    raise AnnotationError(f"{where}: no query: give 'title' (the official TVSum query) or 'query'")


def _highlight_duration(entry: dict[str, Any], where: str) -> float | None:
    if entry.get("duration") is not None:
        duration = _number(entry["duration"], "duration", where)
    elif entry.get("frames") is not None and entry.get("fps") is not None:
        fps = _number(entry["fps"], "fps", where)
        duration = _number(entry["frames"], "frames", where) / fps if fps > 0 else 0.0
    else:
        return None
    if duration <= 0:
        raise AnnotationError(f"{where}: the video's duration must be > 0 seconds")
    return duration


def parse_highlights(text: str, kind: Literal["youtube", "tvsum"], source: str = "<text>") -> AnnotationSet:
    """A YouTube Highlights or TVSum annotation object ``{vid: entry}``."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{source}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(document, dict) or not document:
        raise AnnotationError(f"{source}: expected a JSON object mapping each video id to its annotation")
    items = []
    for vid, entry in document.items():
        where = f"{source} video {_shown(vid)}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object")
        labels = _highlight_rows(entry.get("match" if kind == "youtube" else "anno"), kind, where)
        duration = _highlight_duration(entry, where)
        domain = entry.get("domain") if isinstance(entry.get("domain"), str) else None
        items.append(LabelledVideo(vid=str(vid), query=_highlight_query(entry, kind, where), kind=kind,
                                    labels=labels, duration=duration, domain=domain,
                                    label_seconds=duration / len(labels) if duration else None, extra=entry))
    return AnnotationSet(kind, source, highlights=tuple(items))


def _check_unique(keys: list[str], what: str, source: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise AnnotationError(f"{source}: {what} {_shown(key)} appears more than once")
        seen.add(key)


def detect_format(text: str, name: str = "") -> str:
    """Guess the format from the content (and the file name): JSON object -> youtube / tvsum by its entries,
    JSON lines -> qvhighlights, ``##`` lines -> charades-sta."""
    stripped = text.lstrip()
    if stripped.startswith("{") and not name.endswith(".jsonl"):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            document = None
        if isinstance(document, dict) and document and all(isinstance(v, dict) for v in document.values()):
            first = next(iter(document.values()))
            if "match" in first:
                return "youtube"
            if "anno" in first:
                return "tvsum"
        if isinstance(document, dict) and "qid" in document:
            return "qvhighlights"  # a one-line jsonl file
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    if "##" in first_line and not first_line.lstrip().startswith("{"):
        return "charades-sta"
    if first_line.lstrip().startswith("{"):
        return "qvhighlights"
    raise AnnotationError(f"{name or 'the annotations'}: cannot tell the format; name it ({', '.join(FORMATS)})")


def parse_annotations(text: str, format: str = "auto", source: str = "<text>") -> AnnotationSet:
    """Parse annotation text in one of :data:`FORMATS` (``"auto"``: :func:`detect_format`)."""
    fmt = detect_format(text, source) if format == "auto" else format
    if fmt == "qvhighlights":
        return parse_qvhighlights(text, source)
    if fmt == "charades-sta":
        return parse_charades_sta(text, source)
    if fmt in ("youtube", "tvsum"):
        return parse_highlights(text, fmt, source)  # type: ignore[arg-type]
    raise AnnotationError(f"unknown annotation format {_shown(fmt)}; one of {', '.join(FORMATS)} or auto")


def read_annotation_set(path: str | PathLike[str], format: str = "auto") -> AnnotationSet:
    """Read an annotation file into training records (see :func:`parse_annotations`)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"cannot read annotations {file}: {err}") from err
    return parse_annotations(text, format, str(file))


# ------------------------------------------------------------------------------------------------------ splits


def read_split_file(path: str | PathLike[str], domain: str | None = None) -> dict[str, list[str]]:
    """Video ids per split from ``{"train": [...], "val": [...]}`` or ``{domain: {"train": ..., "val": ...}}``."""
    file = Path(path)
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"cannot read splits {file}: {err}") from err
    if isinstance(document, dict) and domain is not None and domain in document:
        document = document[domain]
    if not isinstance(document, dict) or not any(k in document for k in ("train", "val")):
        hint = f" (domain {domain!r} not found)" if domain else " (or name a --domain)"
        raise AnnotationError(f"{file}: expected {{\"train\": [...], \"val\": [...]}}{hint}")
    out = {}
    for split in ("train", "val"):
        vids = document.get(split, [])
        if not isinstance(vids, list) or not all(isinstance(v, str) for v in vids):
            raise AnnotationError(f"{file}: '{split}' must be a list of video ids")
        out[split] = list(vids)
    return out


def select(annotations: AnnotationSet, vids: Iterable[str]) -> AnnotationSet:
    """The annotations of the listed videos only (in file order); unknown ids are an error."""
    wanted = list(vids)
    known = set(annotations.vids)
    unknown = [v for v in wanted if v not in known]
    if unknown:
        raise AnnotationError(f"{annotations.source}: {len(unknown)} listed video(s) have no annotation, e.g. "
                              f"{', '.join(map(_shown, unknown[:3]))}")
    keep = set(wanted)
    return replace(annotations, moments=tuple(m for m in annotations.moments if m.vid in keep),
                   highlights=tuple(h for h in annotations.highlights if h.vid in keep))

