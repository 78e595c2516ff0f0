"""The `r2tuning` command end to end, on a real mp4 with the fixtures' tiny CLIP and R2 weights."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from models.video import FrameSpec, load_frames, probe_video

from engine_helpers import tiny_grounder, tiny_paths
from fixture_sets import fixture_path, read_listing


def _a_fixture_video() -> str:
    first = read_listing("preprocess", "preprocess.json")["videos"][0]
    return str(fixture_path("preprocess", first["file"]))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r2tuning_cli", *args], capture_output=True, text=True,
                          timeout=300)


def _tiny_args() -> list[str]:
    r2, clip = tiny_paths()
    return ["--checkpoint", r2, "--clip-path", clip]


def test_ground_json_matches_engine() -> None:
    video = _a_fixture_video()
    proc = _run("ground", video, "a moving disc", "a rectangle", *_tiny_args(), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
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


def test_ground_table_output() -> None:
    proc = _run("ground", _a_fixture_video(), "a disc", *_tiny_args())
    assert proc.returncode == 0, proc.stderr
    assert "query: a disc" in proc.stdout and "saliency:" in proc.stdout and "start" in proc.stdout


def test_ground_rejects_a_file_that_is_not_a_video(tmp_path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is a text file, not a video\n" * 20)
    proc = _run("ground", str(bogus), "anything", *_tiny_args())
    assert proc.returncode != 0
    assert "r2tuning: error:" in proc.stderr and "notes.mp4" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ground_missing_weights_is_a_clear_error(tmp_path) -> None:
    proc = _run("ground", _a_fixture_video(), "x", "--checkpoint", str(tmp_path / "nope.pth"))
    assert proc.returncode != 0 and "nope.pth" in proc.stderr and "Traceback" not in proc.stderr


def test_models_lists_the_zoo() -> None:
    proc = _run("models")
    assert proc.returncode == 0, proc.stderr
    for name in ("qvhighlights", "charades", "ego4d", "tacos", "youtube-dog", "tvsum-bk"):
        assert name in proc.stdout
