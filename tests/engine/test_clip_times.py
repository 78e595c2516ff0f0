"""What a newcomer sees in the numbers: each clip's real timestamp next to its saliency (a variable-frame-rate
video is sampled by frame index, so clip i is not at i x clip_seconds), and boundaries without float32 noise.

The VFR video is generated here with PyAV and explicit pts; the fixtures' tiny model answers.
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from models.postprocess import round_rows, time_decimals
from models.video import sample_indices
from r2tuning.cli import main
from service.contract.schemas import Job, JobKind, Mode
from service.worker.pipeline import Video, clip_times, shape_answer

from engine_helpers import tiny_grounder, tiny_paths

# 0-4 s at 20 fps, then 4-10 s at 2 fps: the frame index of 2 s (the second clip at fps 0.5) is nowhere near 2 s.
PTS_MS = [50 * i for i in range(80)] + [4000 + 500 * i for i in range(12)]


def _vfr_video(path: Path) -> Path:
    import av

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(PTS_MS):
            frame = av.VideoFrame.from_ndarray(np.roll(base, shift=i * 3, axis=1), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    grounder = tiny_grounder()
    video = _vfr_video(tmp_path_factory.mktemp("vfr") / "vfr.mp4")
    info, features = grounder.encode_file(video, timeout_s=120)
    return grounder, video, info, features


def test_a_vfr_video_reports_the_real_time_of_each_clip(encoded) -> None:
    grounder, _, info, features = encoded
    assert info.num_frames == len(PTS_MS)
    # The official script's sampling: frame indices by stride of the average rate, whatever the frames' times.
    wanted = [PTS_MS[i] / 1000 for i in sample_indices(info.num_frames, info.avg_fps, grounder.spec.fps)]
    times = info.player_clip_times()
    assert times == pytest.approx(wanted, abs=1e-3) and len(times) == features.shape[1]
    nominal = [i / grounder.spec.fps for i in range(len(times))]
    assert max(abs(t - n) for t, n in zip(times, nominal, strict=True)) > 1.0  # the drift this reports

    (result,) = grounder.ground(features, ["a moving disc"], duration=info.duration, clip_times=times)
    assert result.clip_times == times and len(result.saliency) == len(times)
    with pytest.raises(ValueError, match="clip_times"):
        grounder.ground(features, ["x"], clip_times=times[:-1])


def test_service_answers_carry_clip_times(encoded) -> None:
    grounder, _, info, features = encoded
    video = Video(info=info, features=features)
    times = clip_times(video)
    assert times == info.player_clip_times()
    assert clip_times(dataclasses.replace(video, info=dataclasses.replace(info, clip_times=()))) is None  # old cache
    results = grounder.ground(features, ["a moving disc"], duration=info.duration, top_k=None, clip_times=times)
    job = dict(job_id="j", kind=JobKind.ground, video_id="ab" * 32, model="tiny", queries=["a moving disc"])
    moments = shape_answer(Job(**job, mode=Mode.moments, top_k=3), results, grounder)
    assert moments["results"][0]["clip_times"] == times
    highlights = shape_answer(Job(**job, mode=Mode.highlights, top_k=2), results, grounder)
    assert highlights["clip_times"] == times and len(highlights["highlights"]) == 2


def test_reported_numbers_are_rounded_to_the_unit() -> None:
    assert [time_decimals(u) for u in (2.0, 0.1, None, 0.00005)] == [4, 4, 4, 5]
    assert round_rows([(14.100000381469727, 20.200000762939453, 0.5374916791915894)], 0.1) == [(14.1, 20.2, 0.537492)]


def test_cli_json_has_clip_times_and_no_float32_noise(encoded, capsys) -> None:
    _, video, info, _ = encoded
    r2, clip = tiny_paths()
    # A 0.1 s unit: the grid values are what float32 cannot hold exactly.
    assert main(["ground", str(video), "a moving disc", "--checkpoint", r2, "--clip-path", clip, "--unit", "0.1",
                 "--fps", "1", "--json", "--top-k", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["clip_times"]) == len(out["saliency"]) and out["clip_times"][0] == 0.0
    assert out["moments"]
    for m in out["moments"]:
        assert m["start"] == round(m["start"], 4) and m["end"] == round(m["end"], 4)
        assert m["score"] == round(m["score"], 6)
        if m["end"] < info.duration - 1e-3:  # a window that reached the end keeps un-rounded values (official)
            assert m["start"] == round(m["start"], 1) and m["end"] == round(m["end"], 1)
