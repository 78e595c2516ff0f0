"""The "extract" pipeline on generated videos: which frames it picks, rotation, errors and limits, and how its
output differs from the "script" pipeline through ``Grounder.encode_file``.

The frames each clip should take are computed here from the rule of fixture README section 8, on the timestamps
PyAV reads back from the written file: slot n takes the last frame with round((t - start) * F) <= n, halves up,
``start`` being the container's start time; there are round(F * (end - start)) slots; a video that starts after
its container (audio first) repeats its first pick for the slots before its own first slot.
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from models.engine import Grounder
from models.extract import ExtractSource, extract_geometry
from models.video import (
    CLIP_MEAN,
    CLIP_STD,
    INFERENCE_MEAN,
    CorruptVideoError,
    EmptyVideoError,
    FrameSpec,
    NotAVideoError,
    VideoLimitError,
    VideoNotFoundError,
    decode_in_subprocess,
    iter_decoded,
    iter_frames,
    load_frames,
    probe_video,
)

from engine_helpers import tiny_grounder, tiny_spec

TIMEOUT = 120.0  # generous: the first isolated decode may start the forkserver (imports torch)


# ------------------------------------------------------------------------------------------------ videos


def level(i: int) -> int:
    """Grey level of generated frame i: distinct for the first 48 frames, so that an output frame tells which of
    them it came from."""
    return 8 + 5 * (i % 48)


def write_video(path: Path, pts: list[int], time_base: Fraction, *, size: tuple[int, int] = (96, 64),
                content: str = "levels", fmt: str | None = None, audio_seconds: float | None = None,
                rotation: int = 0) -> Path:
    """A libx264 video whose frame i has pts ``pts[i]`` (in ``time_base``); ``audio_seconds`` adds a silent audio
    stream starting at 0 (written first), ``rotation`` a display matrix. ``content``: "levels" (flat grey
    ``level(i)``) or "smooth" (gradients and a moving disc)."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=round(1 / time_base) if time_base.numerator == 1 else 10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        audio = container.add_stream("aac", rate=8000) if audio_seconds is not None else None
        if audio is not None:
            audio.layout = "mono"
            for k in range(math.ceil(audio_seconds * 8000 / 1024)):
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 8000, k * 1024
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
        for i, p in enumerate(pts):
            if content == "levels":
                img = np.full((height, width, 3), level(i), np.uint8)
            else:
                disc = (xx - (20 + 3 * i) % width) ** 2 + (yy - height / 3) ** 2 < (height / 5) ** 2
                img = np.stack([xx * 255 // width, yy * 255 // height, 255 * disc], axis=-1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = p
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def stored_timing(path: Path) -> tuple[list[Fraction], Fraction, Fraction]:
    """(frame times in presentation order, end of the last of them, container start), exact, as PyAV reads them.
    The end is the last frame's pts plus its packet's duration, as the demuxer reports it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = stream.time_base
        last = max((p for p in container.demux(stream) if p.size), key=lambda p: p.pts)
        end = (last.pts + last.duration) * tb
        start = Fraction(container.start_time or 0, av.time_base)
    with av.open(str(path)) as container:
        times = sorted(f.pts * tb for f in container.decode(video=0))
    return times, end, start


def rule_picks(times: list[Fraction], end: Fraction, start: Fraction, fps: float) -> list[int]:
    """The frame index each clip takes (fixture README section 8, and the CLI's fill of leading slots)."""
    rate = Fraction(repr(float(fps)))  # FFmpeg parses "0.5" into 1/2

    def slot(t: Fraction) -> int:
        return math.floor((t - start) * rate + Fraction(1, 2))

    slots = [slot(t) for t in times]

    def pick(n: int) -> int:
        return max(i for i, s in enumerate(slots) if s <= n)

    first = slots[0]
    return [pick(first)] * max(0, first) + [pick(n) for n in range(first, slot(end))]


def picked_levels(frames: np.ndarray) -> list[int]:
    """Which generated frame each output frame shows (``content="levels"``)."""
    return [round((float(f.mean()) - level(0)) / (level(1) - level(0))) for f in frames]


def extract_all(path: Path, spec: FrameSpec, chunk_size: int = 4) -> tuple[np.ndarray, list[float]]:
    parts = list(ExtractSource(path, spec, chunk_size=chunk_size).frames())
    return np.concatenate([f for f, _ in parts]), [t for _, ts in parts for t in ts]


SPEC_SIZE = 32

# name -> (pts, time base, writer options). Frame i of "levels" content shows level(i).
TIMELINES = {
    # Video-only files whose first timestamp is 1.5 s: the CLI counts slots from there.
    "offset_mp4": ([15 + i for i in range(45)], Fraction(1, 10), {}),
    "offset_mkv": ([15 + i for i in range(45)], Fraction(1, 10), {"fmt": "matroska"}),
    # VFR with a 3.3 s gap: the slots inside the gap repeat the frame before it.
    "vfr_gap_mp4": ([0, 40, 80, 120, 3400, 3440, 3520, 3600, 3700, 5000, 5040, 5080], Fraction(1, 1000), {}),
    # Audio from 0, video from 2.5 s: the slots before the video's first one repeat its first pick.
    "audio_first_mp4": ([25 + i for i in range(40)], Fraction(1, 10), {"audio_seconds": 7.0}),
}


# ------------------------------------------------------------------------------------------------ frame choice


@pytest.mark.parametrize("fps", [0.5, 1.0])
@pytest.mark.parametrize("name", list(TIMELINES))
def test_picks_follow_the_rule(tmp_path, name, fps):
    pts, time_base, options = TIMELINES[name]
    path = write_video(tmp_path / f"{name}.{'mkv' if options.get('fmt') else 'mp4'}", pts, time_base, **options)
    times, end, start = stored_timing(path)
    assert len(times) == len(pts)
    expected = rule_picks(times, end, start, fps)

    spec = FrameSpec(fps=fps, size=SPEC_SIZE, preprocess="extract")
    frames, clip_times = extract_all(path, spec)
    assert len(frames) == len(expected)
    assert picked_levels(frames) == expected  # what the frames show
    assert clip_times == pytest.approx([float(times[i]) for i in expected], abs=1e-9)  # what the decoder says

    # The rule's details matter for these files: without them other frames would be picked.
    if name.startswith("offset"):
        assert start > 0 and rule_picks(times, end, Fraction(0), fps) != expected  # no start shift
    if name == "audio_first_mp4":
        assert start == 0 and expected[0] == expected[1]  # the leading fill
        assert rule_picks(times, end, times[0], fps) != expected  # shifting by the video's own first frame
    if name == "vfr_gap_mp4" and fps == 1.0:
        assert len(set(expected)) < len(expected)  # a frame repeated over the gap


def test_first_clip_is_the_frame_before_half_a_clip(tmp_path):
    """30 fps at 0.5 fps: the first clip takes frame 29 (0.967 s), the script pipeline frame 0."""
    path = write_video(tmp_path / "v.mp4", list(range(150)), Fraction(1, 30), size=(64, 48))
    extract = probe_video(path, "extract")
    assert (extract.num_frames, extract.avg_fps, extract.duration) == (150, 30.0, 5.0)
    info, _ = list(iter_decoded(path, FrameSpec(fps=0.5, size=SPEC_SIZE, preprocess="extract")))[-1]
    assert info.clip_times == pytest.approx([29 / 30, 89 / 30, 149 / 30])  # round(0.5 x 5) = 3 clips
    script, _ = list(iter_decoded(path, FrameSpec(fps=0.5, size=SPEC_SIZE)))[-1]
    assert script.clip_times == pytest.approx([0.0, 2.0, 4.0], abs=1e-6)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_video_comes_out_upright_and_unsquashed(tmp_path, rotation):
    pts = list(range(20))
    plain = write_video(tmp_path / "plain.mp4", pts, Fraction(1, 10), size=(160, 96), content="smooth")
    turned = write_video(tmp_path / "turned.mp4", pts, Fraction(1, 10), size=(160, 96), content="smooth",
                         rotation=rotation)
    spec = FrameSpec(fps=2.0, size=64, preprocess="extract")
    info = probe_video(turned, "extract")
    assert (info.width, info.height) == ((160, 96) if rotation == 180 else (96, 160))
    # The scaled size follows the displayed frame (the official tool would squash 90/270: see models/extract.py).
    assert ExtractSource(turned, spec).geometry == extract_geometry(info.width, info.height, 64)
    expected = np.rot90(extract_all(plain, spec)[0], k=rotation // 90, axes=(2, 3)).astype(np.int16)
    got = extract_all(turned, spec)[0].astype(np.int16)
    # Rotating before scaling changes the chroma siting, so only nearly the same pixels.
    assert got.shape == expected.shape and np.abs(got - expected).mean() < 3.0  # squashed: 26, turned wrong: 85


# ------------------------------------------------------------------------------------------------ decoding


def test_chunks_isolation_and_normalisation_agree(tmp_path):
    path = write_video(tmp_path / "v.mp4", list(range(65)), Fraction(1, 10), content="smooth")
    spec = FrameSpec(fps=3.0, size=SPEC_SIZE, preprocess="extract")
    assert (spec.mean, spec.std) == (CLIP_MEAN, CLIP_STD)
    frames, times = extract_all(path, spec, chunk_size=100)
    assert frames.shape == (20, 3, SPEC_SIZE, SPEC_SIZE)  # round(3 x 6.5) = 19.5 -> 20
    for chunk_size in (1, 3):
        assert np.array_equal(extract_all(path, spec, chunk_size)[0], frames)
    # extract_feat.py's normalisation of those frames, in process and in the child.
    normalized = (torch.from_numpy(frames).float() / 255 - torch.tensor(CLIP_MEAN).view(3, 1, 1)) \
        / torch.tensor(CLIP_STD).view(3, 1, 1)
    in_process = load_frames(path, spec, chunk_size=7)
    torch.testing.assert_close(in_process, normalized, rtol=0, atol=1e-6)
    pairs = list(decode_in_subprocess(path, spec, timeout_s=TIMEOUT, chunk_size=7))
    assert [c.shape[0] for _, c in pairs] == [7, 7, 6]
    assert torch.equal(torch.cat([c for _, c in pairs]), in_process)
    assert list(pairs[-1][0].clip_times) == times


def test_too_short_for_one_clip(tmp_path):
    path = write_video(tmp_path / "short.mp4", list(range(8)), Fraction(1, 10))  # 0.8 s x 0.5 fps = 0.4 -> 0
    with pytest.raises(EmptyVideoError, match="too short"):
        load_frames(path, FrameSpec(fps=0.5, size=SPEC_SIZE, preprocess="extract"))


def _bad_file(kind: str, folder: Path, good: Path) -> Path:
    path = folder / f"{kind}.mp4"
    data = good.read_bytes()
    if kind == "corrupt":  # container intact, garbage in place of the coded frames
        noise = np.random.default_rng(1).integers(0, 256, len(data) - 4000, dtype=np.uint8).tobytes()
        path.write_bytes(data[:2000] + noise + data[-2000:])
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 50)
    return path


BAD_FILES = {"corrupt": CorruptVideoError, "truncated": CorruptVideoError, "random": NotAVideoError,
             "empty": EmptyVideoError, "text": NotAVideoError, "missing": VideoNotFoundError}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_raise_the_same_typed_errors(tmp_path, kind):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.mp4"
    with av.open(str(good), "w") as container:  # noise: big enough frames for the corruption to hit them
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for _ in range(40):
            img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path = _bad_file(kind, tmp_path, good)
    spec = FrameSpec(fps=1.0, size=SPEC_SIZE, preprocess="extract")
    with pytest.raises(BAD_FILES[kind]) as direct:
        load_frames(path, spec)
    assert str(direct.value).startswith(path.name + ":") and str(tmp_path) not in str(direct.value)
    with pytest.raises(BAD_FILES[kind]) as isolated:
        list(decode_in_subprocess(path, spec, timeout_s=TIMEOUT))
    assert isolated.value.code == direct.value.code and str(isolated.value).startswith(path.name + ":")


def test_limits(tmp_path):
    path = write_video(tmp_path / "v.mp4", list(range(65)), Fraction(1, 10), size=(96, 64))
    spec = FrameSpec(fps=1.0, size=SPEC_SIZE, preprocess="extract")
    assert load_frames(path, spec, max_duration=6.5, max_pixels=96 * 64).shape[0] == 7  # limits are inclusive
    for limits in (dict(max_duration=6.4), dict(max_pixels=96 * 64 - 1)):
        with pytest.raises(VideoLimitError) as direct:
            load_frames(path, spec, **limits)
        with pytest.raises(VideoLimitError) as isolated:
            list(decode_in_subprocess(path, spec, timeout_s=TIMEOUT, **limits))
        assert str(isolated.value) == str(direct.value)


def test_start_offset_counts_in_the_duration_limit(tmp_path):
    """max_duration applies to the clips' timeline, which starts at the container's start."""
    path = write_video(tmp_path / "v.mp4", [30 + i for i in range(40)], Fraction(1, 10), audio_seconds=7.0)
    info = probe_video(path, "extract")
    assert info.duration == pytest.approx(7.0) and info.start_time == 0
    with pytest.raises(VideoLimitError):
        load_frames(path, FrameSpec(fps=1.0, size=SPEC_SIZE, preprocess="extract"), max_duration=6.9)


# ------------------------------------------------------------------------------------------------ engine


def grounder_for(preprocess: str) -> Grounder:
    script = tiny_grounder()
    return Grounder(script.clip, script.model, replace(tiny_spec(), preprocess=preprocess))


def test_feature_ids_and_constants_differ_between_pipelines():
    script, extract = tiny_grounder(), grounder_for("extract")
    assert script.frame_spec.preprocess == "script" and script.frame_spec.mean == INFERENCE_MEAN
    assert extract.frame_spec.preprocess == "extract" and extract.frame_spec.mean == CLIP_MEAN
    assert script.feature_id != extract.feature_id
    assert grounder_for("script").feature_id == script.feature_id


def test_encode_file_in_both_pipelines(tmp_path):
    """6.5 s at 10 fps, 0.5 fps: script takes frames 0, 20, 40, 60 (ceil(65 / 20) = 4 clips), extract the frames
    just before 1, 3, 5 s (round(0.5 x 6.5) = 3 clips); different pixels and constants, different features."""
    path = write_video(tmp_path / "v.mp4", list(range(65)), Fraction(1, 10), size=(96, 64), content="smooth")
    results = {}
    for preprocess in ("script", "extract"):
        g = grounder_for(preprocess)
        progress: list[float] = []
        info, features = g.encode_file(path, timeout_s=TIMEOUT, chunk_size=2, progress=progress.append)
        assert progress[-1] == 1.0
        # The same features as encoding the in-process frames of that pipeline.
        assert torch.equal(features, g.encode_video(iter_frames(path, g.frame_spec, chunk_size=2)))
        (answer,) = g.ground(features, ["a moving disc"], duration=info.duration)
        assert len(answer.saliency) == features.shape[1] == len(info.clip_times)
        results[preprocess] = info, features
    script, extract = results["script"][0], results["extract"][0]
    assert script.clip_times == pytest.approx([0.0, 2.0, 4.0, 6.0], abs=1e-6)
    assert extract.clip_times == pytest.approx([0.9, 2.9, 4.9])
    assert script.duration == extract.duration == pytest.approx(6.5)
    assert not torch.equal(results["script"][1][:, :3], results["extract"][1])
