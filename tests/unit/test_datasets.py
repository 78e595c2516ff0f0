"""models.datasets: the official annotation formats, their checks, the YouTube "auto" rate and split files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.datasets import (
    AnnotationError,
    GroundingSet,
    HighlightSet,
    read_annotations,
    read_splits,
    read_tvsum,
    read_youtube,
    split_domain,
    split_videos,
    youtube_auto_fps,
)


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


QVH = [
    {"qid": 7, "vid": "v_a_30.0_180.0", "query": "a dog runs", "duration": 150, "relevant_windows": [[2, 10]],
     "relevant_clip_ids": [1, 2, 3, 4], "saliency_scores": [[1, 2, 3], [4, 4, 4], [0, 1, 2], [2, 2, 2]]},
    {"qid": 8, "vid": "v_b", "query": "a man talks", "duration": 150, "relevant_windows": [[20, 40], [60, 62]]},
    {"qid": 9, "vid": "v_a_30.0_180.0", "query": "the dog sleeps", "duration": 150, "relevant_windows": [[0, 2]]},
]


def test_grounding_jsonl_is_read_in_order_and_grouped_by_video(tmp_path) -> None:
    found = read_annotations(_jsonl(tmp_path / "qvh_val.jsonl", QVH))
    assert isinstance(found, GroundingSet) and found.format == "grounding" and found.labelled
    assert [r["qid"] for r in found.records] == [7, 8, 9]
    assert {vid: [r["qid"] for r in rs] for vid, rs in found.by_video().items()} == {
        "v_a_30.0_180.0": [7, 9], "v_b": [8]}
    # A test split without labels is readable (for submissions) but not labelled.
    unlabelled = read_annotations(_jsonl(tmp_path / "test.jsonl", [{k: QVH[1][k] for k in
                                                                    ("qid", "vid", "query", "duration")}]))
    assert isinstance(unlabelled, GroundingSet) and not unlabelled.labelled


def test_tacos_videos_are_named_as_the_official_loader_names_them(tmp_path) -> None:
    folder = tmp_path / "data" / "tacos"
    folder.mkdir(parents=True)
    found = read_annotations(_jsonl(folder / "test.jsonl", [dict(QVH[1], vid="s13-d21")]))
    assert found.records[0]["vid"] == "s13-d21-cam-002"


@pytest.mark.parametrize(("line", "message"), [
    ('{"qid": 1, "vid": "a", "query": "q"}', "missing duration"),
    ('{"qid": 1, "vid": "a", "query": "", "duration": 3}', "query must be"),
    ('{"qid": 1, "vid": "a", "query": "q", "duration": -1}', "duration must be"),
    ('{"qid": 1, "vid": "a", "query": "q", "duration": 3, "relevant_windows": [[1]]}', "relevant_windows"),
    ('{"qid": 1, "vid": "a", "query": "q", "duration": 3}\n{"qid": 1, "vid": "b", "query": "q", "duration": 3}',
     "repeats line 1"),
    ('{"qid": 1, "vid": "a", "query": "q", "duration": 3}\nnot json', ":2: not a JSON object"),
])
def test_bad_grounding_lines_name_the_file_line_and_fix(tmp_path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(AnnotationError, match=message) as err:
        read_annotations(path)
    assert str(path) in str(err.value)


def _youtube(tmp_path: Path) -> Path:
    document = {
        "v1": {"match": [-1, 1, 1, -1], "frames": "300", "fps": 30, "info": ["a", "b", "c", "d", "e", "dog"]},
        "v2": {"match": [1, -1], "info": ["x"]},  # no frames / fps, no query
    }
    path = tmp_path / "youtube_anno.json"
    path.write_text(json.dumps(document))
    return path


def test_youtube_entries_and_their_auto_rate(tmp_path) -> None:
    found = read_annotations(_youtube(tmp_path))
    assert isinstance(found, HighlightSet) and found.format == "youtube"
    v1, v2 = found.videos
    assert (v1.vid, v1.query, v1.labels, v1.num_clips) == ("v1", "dog", [-1, 1, 1, -1], 4)
    # The official order of operations: duration = int(frames) / fps = 10 s; rate = 4 clips / 10 s.
    assert v1.fps == 4 / (300 / 30) == 0.4
    assert (v2.query, v2.fps) == (None, None)
    assert youtube_auto_fps({"match": [1] * 7, "frames": 1001, "fps": 29.97}) == 7 / (1001 / 29.97)
    assert youtube_auto_fps({"match": [1], "frames": 0, "fps": 30}) is None
    assert read_youtube(_youtube(tmp_path)).videos == found.videos


def test_tvsum_entries(tmp_path) -> None:
    path = tmp_path / "tvsum_anno.json"
    path.write_text(json.dumps({"a": {"title": " Beekeeping ", "anno": [[1, 2], [3, 4], [5, 5]]},
                                "b": {"anno": [[1, 1]]}}))
    found = read_annotations(path)
    assert isinstance(found, HighlightSet) and found.format == "tvsum"
    assert [(v.vid, v.query, v.num_clips, v.fps) for v in found.videos] == [("a", "Beekeeping", 3, None),
                                                                         ("b", None, 1, None)]
    assert read_tvsum(path).videos == found.videos


@pytest.mark.parametrize(("document", "format", "message"), [
    ({"v": {"match": []}}, "youtube", "'match' must be"),
    ({"v": {"match": [1, "x"]}}, "youtube", "'match' must be"),
    ({"v": {"anno": [[1, 2], [3]]}}, "tvsum", "same number of annotators"),
    ({"v": {"anno": [[1, 2]]}, "w": {"anno": [[1, 2, 3]]}}, "tvsum", "3 annotators, the videos before have 2"),
    ({"v": 3}, "tvsum", "expected an object"),
    ([], "tvsum", "one non-empty JSON object"),
])
def test_bad_highlight_files(tmp_path, document, format: str, message: str) -> None:
    path = tmp_path / "anno.json"
    path.write_text(json.dumps(document))
    with pytest.raises(AnnotationError, match=message):
        read_annotations(path, format)


def test_format_names_and_detection(tmp_path) -> None:
    assert read_annotations(_youtube(tmp_path), "youtube").format == "youtube"
    assert read_annotations(_jsonl(tmp_path / "c.jsonl", QVH[1:2]), "charades").format == "grounding"
    with pytest.raises(AnnotationError, match="unknown annotation format 'nope'"):
        read_annotations(_youtube(tmp_path), "nope")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(AnnotationError, match="JSON list is none of the official formats"):
        read_annotations(listed)
    with pytest.raises(AnnotationError, match="does not exist"):
        read_annotations(tmp_path / "missing.jsonl")


def test_splits_from_the_official_constants_file_are_read_not_run(tmp_path) -> None:
    constants = tmp_path / "constants.py"
    constants.write_text(
        "import a_module_that_does_not_exist\n"  # would fail if the file were executed
        "YOUTUBE_SPLITS = {'dog': {'train': ['t1'], 'val': ['v1', 'v2']},\n"
        "                  'gymnastics': {'train': [], 'val': ['g1']},\n"
        "                  'skating': {'train': [], 'val': []}, 'skiing': {'train': [], 'val': []}}\n"
        "TVSUM_SPLITS = {'BK': {'train': ['a'], 'val': ['b']}}\n")
    youtube = read_splits(constants, "youtube")
    assert split_videos(youtube, "dog", "val") == ["v1", "v2"]
    assert split_videos(youtube, "gym", "val") == ["g1"]  # the zoo's code abbreviates the official name
    assert split_videos(youtube, "DOG", "train") == ["t1"]
    with pytest.raises(AnnotationError, match="'sk' is not in the splits file"):
        split_domain(youtube, "sk")  # skating or skiing?
    with pytest.raises(AnnotationError, match="name one"):
        split_domain(youtube, None)
    with pytest.raises(AnnotationError, match="no 'test' split"):
        split_videos(youtube, "dog", "test")
    assert split_videos(read_splits(constants, "tvsum"), "BK", "val") == ["b"]
    other = tmp_path / "other.py"
    other.write_text("SPLITS = {}\n")
    with pytest.raises(AnnotationError, match="no YOUTUBE_SPLITS assignment"):
        read_splits(other, "youtube")


def test_splits_from_json_in_three_shapes(tmp_path) -> None:
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"BK": {"train": ["a"], "val": ["b"]}}))
    assert split_videos(read_splits(path, "tvsum"), "BK", "val") == ["b"]
    path.write_text(json.dumps({"train": ["a"], "val": ["b", "c"]}))  # one domain
    assert split_videos(read_splits(path, "tvsum"), "anything", "val") == ["b", "c"]
    path.write_text(json.dumps(["x", "y"]))  # a list of videos: the val split
    assert split_videos(read_splits(path, "tvsum"), None, "val") == ["x", "y"]
    path.write_text(json.dumps({"BK": ["a"], "x": 3}))
    with pytest.raises(AnnotationError, match="expected"):
        read_splits(path, "tvsum")


def test_select_keeps_the_split_order_and_reports_what_the_file_lacks(tmp_path) -> None:
    found = read_annotations(_youtube(tmp_path))
    assert isinstance(found, HighlightSet)
    chosen = found.select(["v2", "gone", "v1", "v2"])
    assert [v.vid for v in chosen.videos] == ["v2", "v1"] and chosen.missing == ["gone"]
