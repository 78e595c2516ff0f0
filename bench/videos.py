"""Synthetic H.264 test videos, generated once with PyAV (libx264) and cached on disk (never in git).

The frames are built directly as yuv420p planes (no RGB conversion) so that a 10 min 720p video is made in
about a minute: a slowly drifting textured background whose palette changes every "scene", a few moving
boxes, and a fixed bank of film grain so the encoder has real detail to code. The result decodes like
ordinary camera footage would (a few Mbit/s, all frame types), which is what the timings need; the content
itself does not matter to random-weight models.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Bump to regenerate every cached video after a change of the generator.
GENERATOR_VERSION = 1
# Longer videos repeat a segment of this length.
SEGMENT_SECONDS = 30.0


@dataclass(frozen=True)
class VideoSpec:
    """One test video: duration and frame rate set the frame count, keyint the GOP (x264's default is 250)."""

    seconds: float
    width: int = 1280
    height: int = 720
    fps: int = 30
    crf: int = 23
    preset: str = "veryfast"
    keyint: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", float(self.seconds))  # 30 and 30.0 name the same file

    @property
    def num_frames(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def label(self) -> str:
        s = self.seconds
        dur = f"{s / 60:g}min" if s >= 60 and s % 60 == 0 else f"{s:g}s"
        return f"{dur}_{self.height}p"

    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps({**asdict(self), "v": GENERATOR_VERSION}, sort_keys=True).encode())
        return f"bench_{self.label}_{digest.hexdigest()[:10]}.mp4"


def cache_dir() -> Path:
    """``$R2_BENCH_CACHE``, else ``$XDG_CACHE_HOME/r2tuning-bench`` (``~/.cache``), else the temp dir."""
    env = os.environ.get("R2_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    path = Path(base) / "r2tuning-bench"
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        return Path(tempfile.gettempdir()) / "r2tuning-bench"


def ensure_video(spec: VideoSpec, directory: Path | None = None, log=print) -> Path:
    """Path of the cached video for ``spec``, generating it first when missing.

    A video longer than ``SEGMENT_SECONDS`` is the cached segment repeated by stream copy (every repeat starts
    with an IDR frame, so it is a valid stream that decodes like any other): encoding 10 min of 720p with
    x264 would take several minutes on 2 cores, remuxing takes a second.
    """
    directory = Path(directory or cache_dir())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / spec.file_name()
    if path.is_file() and path.stat().st_size > 0:
        return path
    started = time.perf_counter()
    tmp = path.with_suffix(f".tmp{os.getpid()}.mp4")
    try:
        segment = replace(spec, seconds=min(spec.seconds, SEGMENT_SECONDS))
        if segment == spec:
            write_video(tmp, spec)
        else:
            repeats = spec.num_frames / segment.num_frames
            if repeats != int(repeats):
                raise ValueError(f"{spec.seconds} s is not a multiple of the {SEGMENT_SECONDS} s segment")
            repeat_video(ensure_video(segment, directory, log), tmp, int(repeats))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"generated {path.name}: {spec.num_frames} frames {spec.width}x{spec.height} in "
        f"{time.perf_counter() - started:.1f} s ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def repeat_video(src: Path, dst: Path, repeats: int) -> None:
    """Concatenate ``repeats`` copies of a video stream by stream copy, shifting the timestamps."""
    with av.open(str(src)) as probe:
        stream = probe.streams.video[0]
        frames = sum(1 for p in probe.demux(stream) if p.size)
        step = round(1 / (stream.average_rate * stream.time_base))  # ticks per frame
    with av.open(str(dst), "w", format="mp4") as out:
        with av.open(str(src)) as first:
            template = first.streams.video[0]
            ostream = out.add_stream_from_template(template)
        for r in range(repeats):
            with av.open(str(src)) as inp:
                istream = inp.streams.video[0]
                for packet in inp.demux(istream):
                    if not packet.size:
                        continue
                    packet.pts += r * frames * step
                    packet.dts += r * frames * step
                    packet.stream = ostream
                    out.mux(packet)


def write_video(path: Path, spec: VideoSpec) -> None:
    w, h = spec.width, spec.height
    if w % 2 or h % 2:
        raise ValueError("yuv420p needs an even width and height")
    rng = np.random.default_rng(spec.seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Static texture and a grain bank: per-frame work is then a few array additions.
    texture = (24 * np.sin(xx / 37.0) * np.cos(yy / 23.0) + 16 * np.sin((xx + yy) / 11.0)).astype(np.float32)
    grain = [rng.normal(0, 5, (h, w)).astype(np.float32) for _ in range(6)]
    scene_len = max(1, 8 * spec.fps)  # a new palette every 8 s
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(spec.fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(spec.crf), "preset": spec.preset, "g": str(spec.keyint)}
        stream.codec_context.thread_count = 0
        boxes = rng.uniform(0, 1, (4, 4))  # x, y, vx, vy in relative units
        for i in range(spec.num_frames):
            scene = i // scene_len
            srng = np.random.default_rng((spec.seed, scene))
            base_y, base_u, base_v = srng.uniform(60, 190), srng.uniform(80, 176), srng.uniform(80, 176)
            shift = (i % scene_len) * 2
            luma = base_y + np.roll(texture, shift, axis=1) + grain[i % len(grain)]
            for b in range(len(boxes)):
                bx = int(((boxes[b, 0] + boxes[b, 2] * i / 300) % 1.0) * (w - 160))
                by = int(((boxes[b, 1] + boxes[b, 3] * i / 300) % 1.0) * (h - 120))
                luma[by:by + 120, bx:bx + 160] = 40 + 50 * b
            y = np.clip(luma, 16, 235).astype(np.uint8)
            u = np.full((h // 2, w // 2), base_u + 20 * np.sin(i / 50.0), np.uint8)
            v = np.full((h // 2, w // 2), base_v, np.uint8)
            planes = np.concatenate([y, u.reshape(h // 4, w), v.reshape(h // 4, w)])  # (h * 3/2, w)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
