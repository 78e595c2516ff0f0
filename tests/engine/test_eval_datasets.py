"""`r2tuning eval` on small generated annotation files of every official format (QVHighlights, Charades-STA,
YouTube Highlights, TVSum), from videos and from pre-extracted features, with the fixtures' tiny weights.

Each run must print the official table (the numbers equal the official metric functions applied to the
predictions it wrote) and report, not die on, the videos it could not use.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from models.eval_runner import VIDEO_EXTENSIONS, VideoFolder
from models.evaluation import evaluate_grounding, highlight_map, tvsum_top5_map
from r2tuning.cli import main

from engine_helpers import tiny_grounder, tiny_paths

CODECS = {"mp4": "libx264", "mkv": "libx264", "avi": "mpeg4"}


def write_video(path: Path, seconds: float, fps: int = 5, seed: int = 0) -> Path:
    """A small video with moving content, in the container its suffix names."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix[1:]], rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.roll(base, shift=i * 5, axis=1), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def tiny_args() -> list[str]:
    r2, clip = tiny_paths()
    return ["--checkpoint", r2, "--clip-path", clip]


def run_eval(capsys, *args: str) -> tuple[int, dict[str, float], str]:
    """(exit code, the printed table as {metric: value}, stderr)."""
    code = main(["eval", *args, *tiny_args()])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split() == ["metric", "value"] and set(lines[1]) <= {"-", " "}, captured.out
    table = {name: float(value) for name, value in (line.split() for line in lines[2:])}
    return code, table, captured.err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, list)
                    else "".join(json.dumps(r) + "\n" for r in document))
    return path


def save_video_features(folder: Path, name: str, features: torch.Tensor) -> None:
    """(K, T, P, C) -> the official (T, K*P*C) float16 file."""
    folder.mkdir(exist_ok=True)
    np.save(folder / f"{name}.npy", features.permute(1, 0, 2, 3).reshape(features.shape[1], -1).half().numpy())


def save_query_features(folder: Path, name: object, query: torch.Tensor) -> None:
    """(K, L, Cq) -> the official (L, K*Cq) float16 file."""
    folder.mkdir(exist_ok=True)
    np.save(folder / f"{name}.npy", query.permute(1, 0, 2).reshape(query.shape[1], -1).half().numpy())


def random_features(g, clips: int, seed: int) -> torch.Tensor:
    frames = torch.randn(clips, 3, g.clip.image_size, g.clip.image_size, generator=torch.Generator().manual_seed(seed))
    return g.encode_video(frames)


# ---------------------------------------------------------------------------------------------------- grounding


def test_qvhighlights_from_videos_reports_bad_videos_and_scores_the_rest(tmp_path, capsys) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "va_0.0_6.0.mp4", 6, seed=1)  # a dotted id, as QVHighlights has
    write_video(videos / "vb.mkv", 6, seed=2)
    write_video(videos / "vc.avi", 6, seed=3)
    (videos / "vd.mp4").write_bytes(b"not a video at all" * 40)
    annotations = [
        dict(qid=1, vid="va_0.0_6.0", query="a moving pattern", duration=6, relevant_windows=[[0, 2]],
             relevant_clip_ids=[0], saliency_scores=[[4, 3, 2]]),
        dict(qid=2, vid="vb", query="colours slide to the right", duration=6, relevant_windows=[[2, 6]],
             relevant_clip_ids=[1, 2], saliency_scores=[[1, 2, 3], [4, 4, 0]]),
        dict(qid=3, vid="va_0.0_6.0", query="noise", duration=6, relevant_windows=[[4, 6]],
             relevant_clip_ids=[2], saliency_scores=[[2, 2, 2]]),
        dict(qid=4, vid="vc", query="a still frame", duration=6, relevant_windows=[[0, 4]],
             relevant_clip_ids=[0, 1], saliency_scores=[[0, 1, 2], [3, 3, 3]]),
        dict(qid=5, vid="vd", query="broken", duration=6, relevant_windows=[[0, 2]],
             relevant_clip_ids=[0], saliency_scores=[[1, 1, 1]]),
        dict(qid=6, vid="ve", query="missing", duration=6, relevant_windows=[[0, 2]],
             relevant_clip_ids=[0], saliency_scores=[[1, 1, 1]]),
    ]
    anno = write_json(tmp_path / "qvhighlights_val.jsonl", annotations)
    out = tmp_path / "submission.jsonl"

    code, table, err = run_eval(capsys, str(anno), "--videos", str(videos), "--out", str(out))

    assert code == 1  # some videos failed: reported, the rest scored
    assert "video vd left out: " in err and "video ve left out: no video file ve." in err
    assert "evaluated 3 of 5 videos; 2 failed" in err
    submission = read_jsonl(out)
    assert [s["qid"] for s in submission] == [1, 2, 3, 4]
    expected = evaluate_grounding(submission, annotations[:4])["brief"]
    assert table == expected and "HL-min-VeryGood-mAP" in table and "MR-full-R1@0.5" in table
    # The predictions are the engine's own answers, all rows kept.
    g = tiny_grounder()
    info, features = g.encode_file(videos / "vb.mkv")
    (direct,) = g.ground(features, ["colours slide to the right"], duration=6.0, top_k=None)
    np.testing.assert_allclose(submission[1]["pred_saliency_scores"], direct.saliency, atol=1e-6)
    np.testing.assert_allclose(np.array(submission[1]["pred_relevant_windows"]), np.array(direct.moments), atol=1e-4)


def test_charades_from_features(tmp_path, capsys) -> None:
    g = tiny_grounder()
    video_dir, query_dir = tmp_path / "vid", tmp_path / "txt"
    annotations = []
    for i, duration in enumerate((17.3, 24.8)):
        save_video_features(video_dir, f"C{i}", random_features(g, int(duration), seed=i))
        for j, text in enumerate(("person opens a door", "person sits down")):
            qid = 2 * i + j
            save_query_features(query_dir, qid, g._text_features([text], full_context=False)[0])
            annotations.append(dict(qid=qid, vid=f"C{i}", query=text, duration=duration,
                                    relevant_windows=[[1.5 + j, 6.2 + 3 * i]]))
    anno = write_json(tmp_path / "charades_test.jsonl", annotations)
    out = tmp_path / "sub.jsonl"

    code, table, err = run_eval(capsys, str(anno), "--video-features", str(video_dir), "--query-features",
                                str(query_dir), "--out", str(out))

    assert code == 0 and "evaluated 2 of 2 videos" in err
    submission = read_jsonl(out)
    assert table == evaluate_grounding(submission, annotations)["brief"]
    assert "MR-full-R1@0.7" in table and not any(k.startswith("HL-") for k in table)  # no saliency labels


# ---------------------------------------------------------------------------------------------------- YouTube


def youtube_entry(match: list[int], seconds: float, source_fps: int = 25) -> dict:
    return {"match": match, "frames": str(int(seconds * source_fps)), "fps": source_fps,
            "info": ["", "", "", "", "", "moving stripes"]}


def test_youtube_from_videos_samples_each_video_at_its_annotated_rate(tmp_path, capsys) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "long.mp4", 20, seed=4)
    write_video(videos / "short.mp4", 8, seed=5)
    rng = np.random.default_rng(0)
    document = {
        "long": youtube_entry([int(v) for v in rng.choice([-1, 1], 20)], 20),  # 20 clips / 20 s: 1 fps
        "short": youtube_entry([1, -1, -1, 1], 8),  # 4 clips / 8 s: 0.5 fps
    }
    anno = write_json(tmp_path / "youtube_anno.json", document)
    out = tmp_path / "pred.jsonl"

    code, table, err = run_eval(capsys, str(anno), "--videos", str(videos), "--out", str(out))

    assert code == 0, err
    predictions = read_jsonl(out)
    assert [(p["vid"], len(p["pred_saliency_scores"])) for p in predictions] == [("long", 20), ("short", 4)]
    assert table == {"mAP": highlight_map([p["pred_saliency_scores"] for p in predictions],
                                          [document["long"]["match"], document["short"]["match"]])}
    assert "no splits file: all 2 annotated videos" in err
    # The long video really was sampled at 1 fps: the engine at that rate gives the same curve.
    g = tiny_grounder().variant(fps=1.0)
    _, features = g.encode_file(videos / "long.mp4")
    (direct,) = g.ground(features, ["moving stripes"], top_k=None)
    np.testing.assert_allclose(predictions[0]["pred_saliency_scores"], direct.saliency, atol=1e-6)

    # At the model's 0.5 fps the long video has 10 clips for 20 labels: reported, the other still scored.
    code, table, err = run_eval(capsys, str(anno), "--videos", str(videos), "--model-fps")
    assert code == 1 and "video long left out: 10 clips for 20 annotated clips" in err
    assert set(table) == {"mAP"}


def test_youtube_and_tvsum_from_features_on_the_official_split(tmp_path, capsys) -> None:
    g = tiny_grounder()
    constants = tmp_path / "constants.py"
    constants.write_text(
        "YOUTUBE_SPLITS = {'dog': {'train': ['d1'], 'val': ['d2']},\n"
        "                  'gymnastics': {'train': ['g1'], 'val': ['g2', 'g3', 'g_absent']}}\n"
        "TVSUM_SPLITS = {'BK': {'train': ['t0'], 'val': ['t1', 't2', 't3']}}\n")

    # YouTube Highlights: features at the annotated rate (one row per label), query features per video.
    video_dir, query_dir = tmp_path / "yt_vid", tmp_path / "yt_txt"
    rng = np.random.default_rng(1)
    document = {}
    for n, vid in enumerate(("d1", "d2", "g1", "g2", "g3")):
        clips = 6 + n
        document[vid] = youtube_entry([int(v) for v in rng.choice([-1, 1], clips)], clips * 2.0)
        save_video_features(video_dir, vid, random_features(g, clips, seed=10 + n))
        save_query_features(query_dir, vid, g._text_features([f"domain query {n}"], full_context=False)[0])
    anno = write_json(tmp_path / "youtube_anno.json", document)
    out = tmp_path / "yt.jsonl"
    code, table, err = run_eval(capsys, str(anno), "--video-features", str(video_dir), "--query-features",
                                str(query_dir), "--splits", str(constants), "--domain", "gym", "--out", str(out))
    assert code == 0, err
    predictions = read_jsonl(out)
    assert [p["vid"] for p in predictions] == ["g2", "g3"]  # the val split of gymnastics only
    assert "split 'val' of domain 'gym': 3 videos, 1 of them not in the annotation file" in err
    assert table == {"mAP": highlight_map([p["pred_saliency_scores"] for p in predictions],
                                          [document["g2"]["match"], document["g3"]["match"]])}

    # TVSum: 20 annotators; features may be a few clips short of the annotation (the official loader cuts),
    # but not many.
    video_dir, query_dir = tmp_path / "tv_vid", tmp_path / "tv_txt"
    tvsum = {}
    for n, (vid, clips, feature_clips) in enumerate((("t0", 9, 9), ("t1", 12, 12), ("t2", 10, 8),
                                                      ("t3", 8, 15))):
        tvsum[vid] = {"title": f"video {vid}", "anno": rng.integers(1, 6, size=(clips, 20)).tolist()}
        save_video_features(video_dir, vid, random_features(g, feature_clips, seed=20 + n))
        save_query_features(query_dir, vid, g._text_features([f"title {n}"], full_context=False)[0])
    anno = write_json(tmp_path / "tvsum_anno.json", tvsum)
    out = tmp_path / "tv.jsonl"
    code, table, err = run_eval(capsys, str(anno), "--video-features", str(video_dir), "--query-features",
                                str(query_dir), "--splits", str(constants), "--domain", "BK", "--out", str(out))
    assert code == 1 and "video t3 left out: 15 clips for 8 annotated clips" in err
    predictions = read_jsonl(out)
    assert [(p["vid"], len(p["pred_saliency_scores"])) for p in predictions] == [("t1", 12), ("t2", 8)]
    assert table == {"mAP": tvsum_top5_map([p["pred_saliency_scores"] for p in predictions],
                                           [tvsum["t1"]["anno"], tvsum["t2"]["anno"]])}


def test_tvsum_from_videos_with_title_queries(tmp_path, capsys) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "bk1.mkv", 10, seed=6)
    write_video(videos / "bk2.mp4", 6, seed=7)
    rng = np.random.default_rng(2)
    tvsum = {"bk1": {"title": "Beekeeping", "anno": rng.integers(1, 6, size=(5, 20)).tolist()},
             "bk2": {"title": "Bees in a hive", "anno": rng.integers(1, 6, size=(3, 20)).tolist()}}
    anno = write_json(tmp_path / "tvsum_anno.json", tvsum)
    out = tmp_path / "pred.jsonl"
    code, table, err = run_eval(capsys, str(anno), "--videos", str(videos), "--out", str(out))
    assert code == 0, err
    predictions = read_jsonl(out)
    assert [(p["vid"], len(p["pred_saliency_scores"])) for p in predictions] == [("bk1", 5), ("bk2", 3)]
    assert table == {"mAP": tvsum_top5_map([p["pred_saliency_scores"] for p in predictions],
                                           [tvsum["bk1"]["anno"], tvsum["bk2"]["anno"]])}


# ---------------------------------------------------------------------------------------------------- CLI details


def test_every_video_failing_is_an_error_with_the_reasons(tmp_path, capsys) -> None:
    (tmp_path / "videos").mkdir()
    anno = write_json(tmp_path / "tvsum_anno.json", {"x": {"title": "t", "anno": [[1, 2]]}})
    assert main(["eval", str(anno), "--videos", str(tmp_path / "videos"), *tiny_args()]) == 2
    assert "all 1 videos failed (x: no video file x." in capsys.readouterr().err


def test_an_unlabelled_grounding_file_is_refused(tmp_path, capsys) -> None:
    anno = write_json(tmp_path / "qvhighlights_test.jsonl", [dict(qid=1, vid="a", query="q", duration=4)])
    (tmp_path / "v").mkdir()
    assert main(["eval", str(anno), "--videos", str(tmp_path / "v"), *tiny_args()]) == 2
    assert "no relevant_windows" in capsys.readouterr().err


def test_video_folder_finds_the_usual_extensions(tmp_path) -> None:
    for name in ("a.MP4", "b.mkv", "b.avi", "c.d.webm", "notes.txt", "e.mov"):
        (tmp_path / name).write_bytes(b"")
    folder = VideoFolder(tmp_path)
    assert folder.find("a").name == "a.MP4"
    assert folder.find("b").name == "b.mkv"  # mkv before avi (VIDEO_EXTENSIONS order)
    assert folder.find("c.d").name == "c.d.webm"
    assert folder.find("e").name == "e.mov"
    with pytest.raises(FileNotFoundError, match="no video file notes"):
        folder.find("notes")
    assert VIDEO_EXTENSIONS[:3] == ("mp4", "mkv", "webm")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFolder(tmp_path / "absent")


def test_ground_and_eval_take_a_frame_pipeline(tmp_path, capsys) -> None:
    video = write_video(tmp_path / "v.mp4", 6, seed=8)
    assert main(["ground", str(video), "stripes", *tiny_args(), "--preprocess", "extract", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    g = tiny_grounder().variant(preprocess="extract")
    info, features = g.encode_file(video)
    (direct,) = g.ground(features, ["stripes"], duration=info.duration)
    assert out["preprocess"] == "extract"
    np.testing.assert_allclose(out["saliency"], direct.saliency, atol=1e-6)

    assert main(["ground", str(video), "stripes", *tiny_args(), "--preprocess", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown frame pipeline 'nope'; choose one of: script, extract" in err and err.count("\n") == 1
