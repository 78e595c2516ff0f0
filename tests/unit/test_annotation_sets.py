"""The training-side annotation readers of models/datasets.py (parse_annotations and friends): every official
format from text, auto-detection, splits, label mapping and the errors a user sees for a bad file."""

from __future__ import annotations

import json

import pytest

from models.datasets import (
    AnnotationError,
    detect_format,
    parse_annotations,
    read_annotation_set,
    read_split_file,
    select,
)

from fixture_sets import fixture_path

QVH_LINE = {"qid": 7, "vid": "abc_60.0_210.0", "query": "a man cooks", "duration": 150,
            "relevant_windows": [[20, 30], [40, 44]], "relevant_clip_ids": [10, 11, 20],
            "saliency_scores": [[1, 2, 3], [4, 4, 4], [0, 1, 2]]}


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_qvhighlights_jsonl_round_trips_into_the_official_label() -> None:
    annotations = parse_annotations(jsonl(QVH_LINE, {**QVH_LINE, "qid": 8, "vid": "other"}) + "\n\n")
    assert annotations.format == "qvhighlights" and annotations.kind == "moments" and len(annotations) == 2
    assert annotations.vids == ["abc_60.0_210.0", "other"]
    label = annotations.moments[0].label()
    assert label == {**QVH_LINE, "duration": 150.0, "relevant_windows": [[20.0, 30.0], [40.0, 44.0]]}


def test_the_official_eval_fixtures_parse(fixtures_dir) -> None:
    for name, count_key in (("qvh_gt.jsonl", True), ("charades_gt.jsonl", False)):
        annotations = read_annotation_set(fixture_path("eval", name))
        assert annotations.format == "qvhighlights" and len(annotations) > 0
        assert all(m.windows for m in annotations.moments)
        assert (annotations.moments[0].saliency_scores is not None) is count_key


def test_charades_sta_text_lines_number_queries_in_order() -> None:
    text = "AO8RW 0.0 6.9##a person is putting a book on a shelf.\n\nY6R7T 12.4 19.0##person opens the door\n"
    annotations = parse_annotations(text)
    assert annotations.format == "charades-sta"
    assert [(m.qid, m.vid, m.windows, m.duration) for m in annotations.moments] == [
        (0, "AO8RW", ((0.0, 6.9),), None), (1, "Y6R7T", ((12.4, 19.0),), None)]
    assert annotations.moments[0].query == "a person is putting a book on a shelf."
    assert annotations.moments[0].with_duration(30.0).label()["duration"] == 30.0


def test_youtube_highlights_query_saliency_and_positives() -> None:
    doc = {"vidA": {"match": [-1, 1, 1, -1], "info": ["vidA", 0, 0, 0, 0, "dog"], "frames": 240, "fps": 30.0}}
    annotations = parse_annotations(json.dumps(doc))
    assert annotations.format == "youtube" and annotations.kind == "highlights"
    video = annotations.highlights[0]
    assert video.query == "dog" and video.duration == 8.0 and video.label_seconds == 2.0
    assert video.saliency() == [0.0, 1.0, 1.0, 0.0]
    assert video.positive_clips(video.saliency()) == [1, 2]
    assert video.matches() == [-1, 1, 1, -1]


def test_tvsum_saliency_is_the_official_normalisation_and_median_positives() -> None:
    anno = [[1] * 20, [5] * 20, [3] * 20, [2] * 20]
    annotations = parse_annotations(json.dumps({"v1": {"anno": anno, "title": "making a sandwich"}}))
    video = annotations.highlights[0]
    assert annotations.format == "tvsum" and video.query == "making a sandwich" and video.duration is None
    assert video.saliency() == [(20 - 20) / 80, (100 - 20) / 80, (60 - 20) / 80, (40 - 20) / 80]
    # torch's median of [0, 0.25, 0.5, 1] is the lower middle value 0.25: clips strictly above it are positive.
    assert video.positive_clips(video.saliency()) == [1, 2]


def test_highlight_labels_map_onto_feature_clips() -> None:
    doc = {"v": {"match": [-1, 1, -1, 1], "query": "skiing", "duration": 8.0}}  # 2 s per label
    video = parse_annotations(json.dumps(doc), "youtube").highlights[0]
    # Encoded at 1 fps (8 clips of 1 s): each clip takes the label its centre falls in.
    assert video.on_clips(8, 1.0).matches() == [-1, -1, 1, 1, -1, -1, 1, 1]
    assert video.on_clips(4, 2.0).matches() == [-1, 1, -1, 1]
    with pytest.raises(AnnotationError, match="must be equal"):
        video.on_clips(5)  # same grid assumed, YouTube needs exact lengths
    tv = parse_annotations(json.dumps({"t": {"anno": [[1, 2]] * 6, "title": "x"}})).highlights[0]
    assert tv.on_clips(4).num_clips == 4  # TVSum: within 4 clips, cut to the features
    with pytest.raises(AnnotationError, match="at most 4"):
        tv.on_clips(11)


@pytest.mark.parametrize(("text", "fmt"), [
    (jsonl(QVH_LINE), "qvhighlights"),
    (json.dumps(QVH_LINE), "qvhighlights"),
    ("v 1 2##q\n", "charades-sta"),
    (json.dumps({"a": {"match": [1]}}), "youtube"),
    (json.dumps({"a": {"anno": [[1]]}}), "tvsum"),
])
def test_detect_format(text: str, fmt: str) -> None:
    assert detect_format(text) == fmt


@pytest.mark.parametrize(("text", "fmt", "message"), [
    ('{"qid": 1, "vid": "v", "query": "q"}\nnot json\n', "auto", "line 2: not JSON"),
    ('{"qid": 1, "query": "q"}\n', "qvhighlights", "line 1: missing vid"),
    ('{"qid": 1, "vid": "v", "query": " "}\n', "qvhighlights", "query must be a non-empty string"),
    ('{"qid": 1, "vid": "v", "query": "q", "duration": -3}\n', "qvhighlights", "duration must be > 0"),
    ('{"qid": 1, "vid": "v", "query": "q", "relevant_windows": [[1]]}\n', "qvhighlights", "[start, end]"),
    ('{"qid": 1, "vid": "v", "query": "q", "relevant_windows": [[1, "x"]]}\n', "qvhighlights", "finite number"),
    (jsonl({"qid": 1, "vid": "v", "query": "q"}, {"qid": 1, "vid": "w", "query": "r"}), "qvhighlights",
     "more than once"),
    ("v 1##q\n", "charades-sta", "VID START END##sentence"),
    (json.dumps({"a": {"match": []}}), "youtube", "non-empty list"),
    (json.dumps({"a": {"match": [1]}}), "youtube", "no query"),
    (json.dumps({"a": {"anno": [[1, 2], [1]], "title": "t"}}), "tvsum", "same number of annotator ratings"),
    ("hello", "auto", "cannot tell the format"),
    ("x", "csv", "unknown annotation format"),
])
def test_bad_annotations_say_where_and_what(text: str, fmt: str, message: str) -> None:
    with pytest.raises(AnnotationError) as err:
        parse_annotations(text, fmt, "train.jsonl")
    assert message in str(err.value)
    assert len(str(err.value)) < 400


def test_long_bad_values_are_cut_in_messages() -> None:
    with pytest.raises(AnnotationError) as err:
        parse_annotations(json.dumps({"qid": 1, "vid": "v", "query": "q", "duration": "x" * 10_000}) + "\n")
    assert len(str(err.value)) < 300


def test_splits_and_select(tmp_path) -> None:
    doc = {v: {"match": [1, -1], "query": "dog"} for v in ("a", "b", "c")}
    annotations = parse_annotations(json.dumps(doc))
    flat = tmp_path / "splits.json"
    flat.write_text(json.dumps({"train": ["a", "c"], "val": ["b"]}))
    by_domain = tmp_path / "domains.json"
    by_domain.write_text(json.dumps({"dog": {"train": ["b"], "val": []}}))
    assert read_split_file(flat) == {"train": ["a", "c"], "val": ["b"]}
    assert read_split_file(by_domain, "dog") == {"train": ["b"], "val": []}
    assert select(annotations, ["c", "a"]).vids == ["a", "c"]  # file order kept
    with pytest.raises(AnnotationError, match="no annotation"):
        select(annotations, ["zzz"])
    with pytest.raises(AnnotationError, match="domain 'cat' not found"):
        read_split_file(by_domain, "cat")
