"""Video decoding: sampling, preprocessing, typed errors for bad files, limits, and the isolated decoder.

All videos are generated here with PyAV (libx264) in temporary directories.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

import models.video as video
from models.video import (
    CLIP_MEAN,
    CLIP_STD,
    INFERENCE_MEAN,
    INFERENCE_STD,
    CorruptVideoError,
    DecodeTimeoutError,
    EmptyVideoError,
    FrameSpec,
    IsolatedDecoder,
    NotAVideoError,
    VideoInfo,
    VideoLimitError,
    VideoNotFoundError,
    decode_in_subprocess,
    iter_frames,
    load_frames,
    probe_video,
    sample_indices,
)

TIMEOUT = 120.0  # generous: the first isolated decode may start the forkserver (imports torch)


def write_video(path: Path, width: int = 64, height: int = 48, frames: int = 30, rate: int | Fraction = 10,
                pix_fmt: str = "yuv420p", fmt: str | None = None, audio: bool = False, seed: int = 0,
                rotation: int = 0) -> Path:
    """A small libx264 video whose frames all differ (noise plus a moving bar); ``rotation`` sets the display
    matrix (degrees counter-clockwise), as phones do for portrait recordings."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation:
            stream.set_display_rotation(rotation)
        sound = _audio_stream(container) if audio else None  # every stream must exist before muxing starts
        for i in range(frames):
            img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            img[:, (3 * i) % width] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _write_silence(container, sound)
    return path


def _audio_stream(container: av.container.OutputContainer) -> av.AudioStream:
    stream = container.add_stream("aac", rate=44100)
    stream.layout = "mono"
    return stream


def _write_silence(container: av.container.OutputContainer, stream: av.AudioStream, blocks: int = 20) -> None:
    for k in range(blocks):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, k * 1024
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def official_reference(path: Path, spec: FrameSpec) -> torch.Tensor:
    """The official load_video steps, literally: one batch, torchvision resize/normalize (n, 3, S, S)."""
    reader = decord.VideoReader(str(path))
    stride = reader.get_avg_fps() / spec.fps
    idx = [min(round(i), len(reader) - 1) for i in np.arange(0, len(reader), stride).tolist()]
    frames = torch.from_numpy(reader.get_batch(idx).asnumpy()).permute(0, 3, 1, 2).float() / 255
    h, w = frames.shape[-2:]
    s = min(h, w)
    x, y = round((h - s) / 2), round((w - s) / 2)
    frames = TF.resize(frames[..., x:x + s, y:y + s], size=[spec.size, spec.size])
    return TF.normalize(frames, spec.mean, spec.std)


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "clip.mp4", width=96, height=64, frames=60, rate=10)


# ------------------------------------------------------------------------------------------------ sampling


def test_sample_indices_round_half_to_even_and_clamp():
    # 12.5 fps at 1 fps: positions 12.5, 37.5, 62.5 round to even.
    assert sample_indices(75, 12.5, 1.0) == [0, 12, 25, 38, 50, 62]
    # 29.97 fps at 1 fps: the last position 299.7 rounds to 300 and is clamped to frame 299.
    assert sample_indices(300, 30000 / 1001, 1.0)[-1] == 299
    assert sample_indices(630, 30.0, 0.5) == list(range(0, 630, 60))
    # Slower than the target rate: frames repeat, as in the official script.
    assert sample_indices(3, 0.25, 0.5) == [0, 0, 1, 2, 2, 2]
    assert sample_indices(1, 30.0, 0.5) == [0]


@pytest.mark.parametrize("args", [(0, 30.0, 1.0), (10, 0.0, 1.0), (10, float("nan"), 1.0), (10, 30.0, -1.0)])
def test_sample_indices_rejects_bad_input(args):
    with pytest.raises(ValueError):
        sample_indices(*args)


def test_frame_spec_defaults_and_validation():
    spec = FrameSpec(fps=0.5)
    assert (spec.size, spec.mean, spec.std) == (224, INFERENCE_MEAN, INFERENCE_STD)
    assert FrameSpec(fps=1, mean=list(CLIP_MEAN), std=list(CLIP_STD)).mean == CLIP_MEAN  # lists become tuples
    hash(spec)  # frozen, usable as a key
    for bad in (dict(fps=0), dict(fps=float("inf")), dict(fps=1, size=0), dict(fps=1, std=(1, 0, 1)),
                dict(fps=1, mean=(0.5, 0.5))):
        with pytest.raises(ValueError):
            FrameSpec(**bad)


# ------------------------------------------------------------------------------------------------ decoding


def test_probe_video(clip_mp4):
    info = probe_video(clip_mp4)
    assert info == VideoInfo(num_frames=60, avg_fps=10.0, width=96, height=64, duration=6.0)


@pytest.mark.parametrize("size", [(96, 64), (69, 50), (50, 69), (64, 64)])
def test_frames_match_official_steps(tmp_path, size):
    """Landscape, portrait and square frames; 69 - 50 = 19 gives the half-to-even crop offset round(9.5) = 10."""
    width, height = size
    path = write_video(tmp_path / "v.mp4", width=width, height=height, frames=25, rate=10, pix_fmt="yuv444p")
    for spec in (FrameSpec(fps=2.0, size=32), FrameSpec(fps=1.0, size=64, mean=CLIP_MEAN, std=CLIP_STD)):
        expected = official_reference(path, spec)
        got = load_frames(path, spec)
        assert got.dtype == torch.float32 and got.is_contiguous()
        torch.testing.assert_close(got, expected.contiguous(), rtol=0, atol=1e-6)


def test_chunking_does_not_change_frames(clip_mp4, monkeypatch):
    spec = FrameSpec(fps=3.0, size=32)
    whole = load_frames(clip_mp4, spec, chunk_size=1000)
    assert whole.shape == (18, 3, 32, 32)
    chunks = list(iter_frames(clip_mp4, spec, chunk_size=4))
    assert [c.shape[0] for c in chunks] == [4, 4, 4, 4, 2]
    assert torch.equal(torch.cat(chunks), whole)
    # A tiny decode budget forces one frame per decord call inside each chunk.
    monkeypatch.setattr(video, "DECODE_BUDGET_BYTES", 1)
    chunks = list(iter_frames(clip_mp4, spec, chunk_size=5))
    assert [c.shape[0] for c in chunks] == [5, 5, 5, 3]
    assert torch.equal(torch.cat(chunks), whole)
    with pytest.raises(ValueError):
        next(iter_frames(clip_mp4, spec, chunk_size=0))


def test_other_containers(tmp_path):
    spec = FrameSpec(fps=2.0, size=32)
    mkv = write_video(tmp_path / "v.mkv", fmt="matroska", frames=20, audio=True)
    assert probe_video(mkv).num_frames == 20
    torch.testing.assert_close(load_frames(mkv, spec), official_reference(mkv, spec).contiguous(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_videos_come_out_upright(tmp_path, rotation):
    """Frames are turned as the display matrix says: by decord for 180 degrees (as the official script), by the
    PyAV fallback for 90/270 (decord 0.6 cannot read those at all)."""
    kw = dict(width=80, height=48, frames=20, pix_fmt="yuv444p")
    plain = write_video(tmp_path / "plain.mp4", **kw)
    turned = write_video(tmp_path / "turned.mp4", rotation=rotation, **kw)
    info = probe_video(turned)
    assert (info.width, info.height) == ((80, 48) if rotation == 180 else (48, 80))
    spec = FrameSpec(fps=2.0, size=32)
    expected = torch.rot90(load_frames(plain, spec), k=rotation // 90, dims=(2, 3))
    torch.testing.assert_close(load_frames(turned, spec), expected, rtol=0, atol=1e-5)
    isolated = torch.cat([chunk for _, chunk in decode_in_subprocess(turned, spec, timeout_s=TIMEOUT, chunk_size=3)])
    assert torch.equal(isolated, load_frames(turned, spec))


# ------------------------------------------------------------------------------------------------ bad files


def _bad_file(kind: str, tmp_path: Path, good: Path) -> Path:
    path = tmp_path / f"{kind}.mp4"
    data = good.read_bytes()
    if kind == "corrupt":  # valid container, garbage in place of the coded frames
        noise = np.random.default_rng(1).integers(0, 256, len(data) - 4000, dtype=np.uint8).tobytes()
        path.write_bytes(data[:2000] + noise + data[-2000:])
    elif kind == "truncated":  # cut in half: the index (moov, written last) is gone
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zero_frames":  # a video stream without a single frame (next to an audio stream)
        path = tmp_path / "zero_frames.mkv"
        with av.open(str(path), "w", format="matroska") as container:
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            _write_silence(container, _audio_stream(container))
    elif kind == "audio_only":
        path = tmp_path / "audio_only.m4a"
        with av.open(str(path), "w", format="mp4") as container:
            _write_silence(container, _audio_stream(container))
    elif kind in ("text", "text_txt"):  # FFmpeg would read a .txt file as ANSI art "video"
        path = tmp_path / ("notes.txt" if kind == "text_txt" else "notes.mp4")
        path.write_text("this is not a video\n" * 50)
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        path = tmp_path / "missing.mp4"
    return path


BAD_FILES = {
    "corrupt": CorruptVideoError,
    "truncated": CorruptVideoError,
    "random": NotAVideoError,
    "empty": EmptyVideoError,
    "zero_frames": EmptyVideoError,
    "audio_only": NotAVideoError,
    "text": NotAVideoError,
    "text_txt": NotAVideoError,
    "directory": NotAVideoError,
    "missing": VideoNotFoundError,
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_raise_typed_errors(kind, tmp_path, clip_mp4):
    path = _bad_file(kind, tmp_path, clip_mp4)
    spec = FrameSpec(fps=1.0, size=32)
    with pytest.raises(BAD_FILES[kind]) as direct:
        load_frames(path, spec)
    err = direct.value
    assert type(err) is BAD_FILES[kind] and err.code == BAD_FILES[kind].code
    assert str(err).startswith(path.name + ":") and str(path.parent) not in str(err)  # no server paths leak
    if kind == "missing":
        assert isinstance(err, FileNotFoundError)
    # Through the child process: same type, code and message.
    with pytest.raises(BAD_FILES[kind]) as isolated:
        list(decode_in_subprocess(path, spec, timeout_s=TIMEOUT))
    assert isolated.value.code == err.code and str(isolated.value).startswith(path.name + ":")
    if kind != "corrupt":  # the decoder's own detail for damaged data can vary from run to run
        assert str(isolated.value) == str(err)


def test_truncated_faststart_mp4(tmp_path):
    """Index at the front, half of the frame data missing: the container opens, decoding must still fail cleanly."""
    path = tmp_path / "fs.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(40):
            img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    assert data[4:8] == b"ftyp" and b"moov" in data[:200]
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptVideoError):
        load_frames(path, FrameSpec(fps=1.0, size=32))


def test_error_types_are_stable():
    codes = {cls.code for cls in video._ERROR_TYPES.values()}
    assert len(codes) == len(video._ERROR_TYPES)
    assert issubclass(DecodeTimeoutError, TimeoutError) and issubclass(VideoNotFoundError, FileNotFoundError)
    for cls in video._ERROR_TYPES.values():
        err = pickle.loads(pickle.dumps(cls("x.mp4: what happened; what to do")))
        assert type(err) is cls and str(err) == err.message == "x.mp4: what happened; what to do"


# ------------------------------------------------------------------------------------------------ limits


def test_limits(clip_mp4):
    spec = FrameSpec(fps=1.0, size=32)
    assert load_frames(clip_mp4, spec, max_duration=6.0, max_pixels=96 * 64).shape[0] == 6  # limits are inclusive
    for limits in (dict(max_duration=5.9), dict(max_pixels=96 * 64 - 1)):
        with pytest.raises(VideoLimitError) as direct:
            load_frames(clip_mp4, spec, **limits)
        assert direct.value.code == "video_too_large"
        with pytest.raises(VideoLimitError) as isolated:
            list(decode_in_subprocess(clip_mp4, spec, timeout_s=TIMEOUT, **limits))
        assert str(isolated.value) == str(direct.value)


# ------------------------------------------------------------------------------------------------ isolation


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_isolated_matches_in_process(clip_mp4):
    spec = FrameSpec(fps=3.0, size=32)
    decoder = IsolatedDecoder(clip_mp4, spec, timeout_s=TIMEOUT, chunk_size=4)
    pairs = list(decoder)
    assert decoder.child_max_rss is not None and decoder.child_max_rss > 0
    assert all(replace(info, clip_times=()) == probe_video(clip_mp4) for info, _ in pairs)
    assert [c.shape[0] for _, c in pairs] == [4, 4, 4, 4, 2]
    # Each pair's info holds the timestamps of the clips so far; here frame i is at i / 10 s.
    assert [len(info.clip_times) for info, _ in pairs] == [4, 8, 12, 16, 18]
    expected = [i / 10 for i in sample_indices(60, 10.0, 3.0)]
    assert pairs[-1][0].clip_times == pytest.approx(expected, abs=1e-6)
    assert torch.equal(torch.cat([c for _, c in pairs]), load_frames(clip_mp4, spec))


def test_isolated_stops_child_when_consumer_stops(clip_mp4):
    spec = FrameSpec(fps=5.0, size=32)
    with IsolatedDecoder(clip_mp4, spec, timeout_s=TIMEOUT, chunk_size=2) as decoder:
        pid = decoder.pid
        for _info, chunk in decoder:
            assert chunk.shape == (2, 3, 32, 32)
            break
    assert _gone(pid)
    # The generator form cleans up when it is closed early as well.
    gen = decode_in_subprocess(clip_mp4, spec, timeout_s=TIMEOUT, chunk_size=2)
    next(gen)
    gen.close()
    assert not [p for p in mp.active_children() if p.name.startswith("video-decoder")]


def test_isolated_timeout_kills_hanging_child(clip_mp4):
    decoder = IsolatedDecoder(clip_mp4, FrameSpec(fps=1.0, size=32), timeout_s=0.5, _test_fault="hang")
    started = time.monotonic()
    with pytest.raises(DecodeTimeoutError) as err:
        list(decoder)
    assert time.monotonic() - started < 15
    assert err.value.code == "decode_timeout" and "0.5 s" in str(err.value)
    assert _gone(decoder.pid)


def test_isolated_crash_becomes_corrupt_video_error(clip_mp4):
    decoder = IsolatedDecoder(clip_mp4, FrameSpec(fps=1.0, size=32), timeout_s=TIMEOUT, _test_fault="crash")
    with pytest.raises(CorruptVideoError, match="SIGSEGV"):
        list(decoder)
    assert _gone(decoder.pid)


def test_isolated_timeout_ignores_consumer_time(clip_mp4):
    """The limit covers waiting for the decoder, not the time the consumer spends on each chunk."""
    spec = FrameSpec(fps=1.0, size=32)
    chunks = 0
    for _info, _chunk in decode_in_subprocess(clip_mp4, spec, timeout_s=2.0, chunk_size=3):
        chunks += 1
        time.sleep(1.2)
    assert chunks == 2


def test_isolated_argument_checks(clip_mp4):
    spec = FrameSpec(fps=1.0, size=32)
    with pytest.raises(ValueError):
        IsolatedDecoder(clip_mp4, spec, timeout_s=0)
    with pytest.raises(ValueError):
        IsolatedDecoder(clip_mp4, spec, timeout_s=1, chunk_size=0)
