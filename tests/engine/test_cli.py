"""The `r2tuning` command, in-process, on a real mp4 with the fixtures' tiny CLIP and R2 weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models.video import FrameSpec, load_frames, probe_video
from r2tuning.cli import main

from engine_helpers import tiny_grounder, tiny_paths
from fixture_sets import fixture_path, read_listing


def _a_fixture_video() -> str:
    first = read_listing("preprocess", "preprocess.json")["videos"][0]
    return str(fixture_path("preprocess", first["file"]))


def _tiny_args() -> list[str]:
    r2, clip = tiny_paths()
    return ["--checkpoint", r2, "--clip-path", clip]


def _registry(tmp_path, **extra) -> str:
    r2, clip = tiny_paths()
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{"name": "mine", "checkpoint_path": r2, "clip_path": clip,
                                            "clip": "tiny", **extra}]}))
    return str(path)


def test_ground_json_matches_engine(capsys) -> None:
    video = _a_fixture_video()
    assert main(["ground", video, "a moving disc", "a rectangle", *_tiny_args(), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["query"] for o in out] == ["a moving disc", "a rectangle"]

    g = tiny_grounder()
    info = probe_video(video)
    features = g.encode_video(load_frames(video, FrameSpec(fps=0.5, size=g.clip.image_size)))
    expected = g.ground(features, ["a moving disc", "a rectangle"], duration=info.duration)
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got["saliency"], want.saliency, atol=1e-6)
        got_rows = np.array([[m["start"], m["end"], m["score"]] for m in got["moments"]])
        np.testing.assert_allclose(got_rows, np.array(want.moments), atol=1e-4)
        assert got["duration"] == pytest.approx(info.duration)
        assert all(0 <= m["start"] <= m["end"] <= info.duration for m in got["moments"])


def test_ground_table_output(capsys) -> None:
    assert main(["ground", _a_fixture_video(), "a disc", *_tiny_args()]) == 0
    out = capsys.readouterr().out
    assert "query: a disc" in out and "saliency:" in out and "start" in out


def test_ground_with_a_registered_model_and_checkpoint_settings(tmp_path, capsys) -> None:
    video = _a_fixture_video()
    assert main(["ground", video, "a disc", "--registry", _registry(tmp_path, fps=1.0), "--model", "mine",
                 "--json"]) == 0
    registered = json.loads(capsys.readouterr().out)
    assert registered["clip_seconds"] == pytest.approx(1.0)
    # The same model as a one-off checkpoint with the same settings gives the same answer.
    assert main(["ground", video, "a disc", *_tiny_args(), "--fps", "1", "--unit", "2", "--nms", "normal",
                 "--json"]) == 0
    one_off = json.loads(capsys.readouterr().out)
    assert one_off["saliency"] == pytest.approx(registered["saliency"], abs=1e-6)
    # Another unit and NMS change the rounding of the boundaries.
    assert main(["ground", video, "a disc", *_tiny_args(), "--fps", "1", "--unit", "0.1", "--nms", "linear",
                 "--json"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert [m["start"] for m in other["moments"]] != [m["start"] for m in one_off["moments"]]


def test_registry_from_the_environment(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("R2_REGISTRY_FILE", _registry(tmp_path))
    # argparse reads the default when the parser is built, i.e. inside main().
    assert main(["models"]) == 0
    assert "mine" in capsys.readouterr().out


def test_ground_rejects_a_file_that_is_not_a_video(tmp_path, capsys) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is a text file, not a video\n" * 20)
    assert main(["ground", str(bogus), "anything", *_tiny_args()]) == 2
    err = capsys.readouterr().err
    assert "r2tuning: error:" in err and "notes.mp4" in err


def test_ground_missing_weights_is_a_clear_error(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("R2_CHECKPOINT_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["ground", _a_fixture_video(), "x", "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    err = capsys.readouterr().err
    # One error names every missing file: the checkpoint and the (not downloaded) CLIP weights.
    assert err.startswith("r2tuning: error:") and "nope.pth" in err and "ViT-B-32.pt" in err


def test_clip_of_the_wrong_width_is_a_one_line_error(tmp_path, capsys) -> None:
    """A checkpoint for another CLIP (here: the R2 head fixture, made for ViT-B/32 widths) is the user's
    mistake, not a crash."""
    r2_head = fixture_path("r2_head", read_listing("r2_head", "cases.json")["checkpoint"])
    _, clip = tiny_paths()
    assert main(["ground", _a_fixture_video(), "x", "--checkpoint", str(r2_head), "--clip-path", clip]) == 2
    err = capsys.readouterr().err
    assert err.startswith("r2tuning: error:") and "CLIP" in err


def test_models_lists_the_zoo(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("qvhighlights", "charades", "ego4d", "tacos", "youtube-dog", "tvsum-bk"):
        assert name in out


def test_missing_names_the_files(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("R2_CHECKPOINT_DIR", str(tmp_path))
    assert main(["missing", "qvhighlights"]) == 1
    out = capsys.readouterr().out
    assert "r2_tuning_qvhighlights-ed516355.pth" in out and "ViT-B-32.pt" in out
    assert main(["missing", "--registry", _registry(tmp_path), "mine"]) == 0
    assert "mine: complete" in capsys.readouterr().out


def test_models_is_fast_and_imports_no_torch() -> None:
    """`r2tuning models` answers at once: neither torch nor open_clip is imported (a fresh process)."""
    code = ("import sys; from r2tuning.cli import main; main(['models']); "
            "print('heavy', [m for m in ('torch', 'open_clip') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    assert "heavy []" in proc.stdout  # its time is a bench target (models_command_s)
