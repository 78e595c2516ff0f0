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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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
