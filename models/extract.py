"""The ``"extract"`` pipeline: frames as the released checkpoints were trained on them.

The checkpoints' features were made from the frames of the official ``tools/extract_frames.py``, which runs the
ffmpeg CLI on the chain ``fps=F`` -> ``scale=W:H`` -> ``crop=S:S:x:y`` -> rawvideo rgb24, normalised by
``tools/extract_feat.py`` (x / 255, then CLIP's mean/std). This module builds the same chain from FFmpeg's own
filters (PyAV's filter graph) rather than rewriting them: the frames are byte-identical to ffmpeg 5.1's
(fixture section 8). What the filters do, in short:

* ``fps``: output slot n (time n / F) takes the last frame whose time t has round(t * F) <= n, halves rounded up,
  so the first clip is the frame just before 0.5 / F, not frame 0; it emits round(F * end of the last frame)
  slots, repeating a frame when the video has a gap (VFR) and dropping the rest;
* ``scale``: short side to S, the other side int(long * S / short); bicubic, and the yuv -> rgb24 conversion;
* ``crop``: an S x S square at offsets int((scaled - S) / 2), on the rgb24 image.

Around the graph this module does what the ffmpeg CLI does (checked against ffmpeg 5.1 on generated files):

* timestamps are shifted by the container's start time before filtering (no ``-copyts``);
* when the video starts after the container (an audio stream starts first), the fps filter's first slot is not 0;
  the CLI's constant-rate output then repeats the first frame for the slots before it;
* the display matrix is applied before scaling (the CLI's autorotate: ``transpose`` or ``hflip`` + ``vflip``).

One deliberate difference: for a video shown rotated by 90 or 270 degrees the official tool computes the scaled size
from the stored (unrotated) width and height, so its upright frames come out squashed (a 16:9 portrait phone video
about 3x too narrow). Here the size comes from the displayed frame, as for any upright video: no dataset video is
rotated, so the checkpoints never saw squashed frames.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import av.filter
import numpy as np
import torch
from torch import Tensor

from .video import (
    CorruptVideoError,
    EmptyVideoError,
    FrameSpec,
    VideoInfo,
    _check_duration,
    _check_file,
    _check_pixels,
    _first_line,
    _probe_stream,
    _video_stream,
)

# The ffmpeg CLI's autorotate filters per display rotation (degrees counter-clockwise, as PyAV reports it).
ROTATION_FILTERS: dict[int, tuple[tuple[str, str | None], ...]] = {
    0: (),
    90: (("transpose", "cclock"),),
    180: (("hflip", None), ("vflip", None)),
    270: (("transpose", "clock"),),
}


class Geometry(NamedTuple):
    """The official tool's scaled size and crop offsets for one video."""

    scale_w: int
    scale_h: int
    crop_x: int
    crop_y: int


def extract_geometry(width: int, height: int, size: int) -> Geometry:
    """Short side to ``size``, the other side ``int(long * size / short)`` (float arithmetic, truncated: a square
    video becomes size x size); crop offsets ``int((scaled - size) / 2)``, truncated (298 -> 37)."""
    if width > height:
        w, h = int(width * size / height), size
    else:
        w, h = size, int(height * size / width)
    return Geometry(w, h, int((w - size) / 2), int((h - size) / 2))


def fps_filter_rate(fps: float) -> str:
    """The rate as the official tool hands it to the fps filter (ffmpeg-python prints the float: "0.5", "1.0"),
    which FFmpeg parses into a rational (0.37 -> 37/100)."""
    return repr(float(fps))


def normalize(frames: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 (n, 3, S, S) -> float32 (n, 3, S, S): extract_feat.py's ``float() / 255`` then ``T.Normalize``."""
    out = torch.from_numpy(frames).float() / 255  # (n, 3, S, S)
    return out.sub_(torch.tensor(mean).view(3, 1, 1)).div_(torch.tensor(std).view(3, 1, 1))


def _rescale(value: int, src: Fraction, dst: Fraction) -> int:
    """FFmpeg's av_rescale_q: value * src / dst, rounded to nearest, halves away from zero."""
    exact = value * src / dst
    return int(exact + Fraction(1, 2)) if exact >= 0 else -int(-exact + Fraction(1, 2))


class _Timing(NamedTuple):
    shift: int  # pts subtracted before filtering (the container's start time), stream time base
    end: int  # shifted pts at which the last frame ends
    packets: int  # video packets with data (the frame count, for information)


def _scan_timing(container: Any, stream: Any, name: str) -> _Timing:
    """Read the packets once (no decoding) to know where the video ends, before the first frame is decoded."""
    tb = stream.time_base
    start = 0 if container.start_time is None else container.start_time  # AV_TIME_BASE units
    shift = _rescale(start, Fraction(1, av.time_base), tb)
    rate = stream.average_rate or stream.guessed_rate
    fallback = _rescale(1, 1 / Fraction(rate), tb) if rate else 0  # a packet without a duration lasts one frame
    # The fps filter's end of stream is where the last frame (in presentation order) ends: its pts plus its own
    # packet's duration (with B-frames, other packets' pts + duration can reach further).
    packets, last = 0, None
    for packet in container.demux(stream):
        if not packet.size or packet.is_discard:
            continue  # the flush packet; frames an edit list hides
        packets += 1
        if packet.pts is not None and (last is None or packet.pts >= last[0]):
            last = packet.pts, packet.duration or fallback
    if packets == 0:
        raise EmptyVideoError(f"{name}: the video stream has no frames; upload a video with content")
    if last is None:
        raise CorruptVideoError(f"{name}: the video has no timestamps; remux it into MP4 (e.g. ffmpeg -c copy)")
    return _Timing(shift, last[0] + last[1] - shift, packets)


class ExtractSource:
    """A video opened in the "extract" pipeline: ``info`` at once (one pass over the packets, no decoding), then
    :meth:`frames` (the uint8 frames the official tool dumps) or :meth:`chunks` (normalised) decode it once.

    Same checks, limits and typed errors as the "script" pipeline; ``max_duration`` applies to the end of the last
    frame on the start-shifted timeline (``info.duration``).
    """

    def __init__(self, path: str | os.PathLike[str], spec: FrameSpec, chunk_size: int = 16, num_threads: int = 0,
                 max_duration: float | None = None, max_pixels: int | None = None) -> None:
        if spec.preprocess != "extract":
            raise ValueError(f"ExtractSource needs a FrameSpec with preprocess='extract', got {spec.preprocess!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self._path, self._name = Path(path), Path(path).name
        self._spec, self._chunk_size, self._num_threads = spec, chunk_size, num_threads
        _check_file(self._path)
        probe = _probe_stream(self._path)
        _check_pixels(self._name, probe.width, probe.height, max_pixels)
        self._rotation = probe.rotation
        with self._open() as container:
            stream = _video_stream(container)
            try:
                self._timing = _scan_timing(container, stream, self._name)
            except av.error.FFmpegError as e:
                raise CorruptVideoError(f"{self._name}: the video container is damaged ({_first_line(e)}); "
                                        f"re-upload or re-encode it") from None
            self._time_base = stream.time_base
            rate = stream.average_rate or stream.guessed_rate
        width, height = (probe.height, probe.width) if probe.rotation in (90, 270) else (probe.width, probe.height)
        duration = float(self._timing.end * self._time_base)
        if not duration > 0:
            raise CorruptVideoError(f"{self._name}: the video's timestamps end before they start; re-encode it")
        self.geometry = extract_geometry(width, height, spec.size)  # from the displayed size (see module doc)
        self.info = VideoInfo(num_frames=self._timing.packets,
                              avg_fps=float(rate) if rate else self._timing.packets / duration,
                              width=width, height=height, duration=duration, start_time=probe.start_time)
        _check_duration(self._name, duration, max_duration)

    def _open(self) -> Any:
        return av.open(str(self._path), options={"protocol_whitelist": "file"})  # local files only

    def _graph(self, stream: Any) -> av.filter.Graph:
        size, geo = self._spec.size, self.geometry
        graph = av.filter.Graph()
        graph.threads = 1  # the parent encodes meanwhile; only the sampled frames are scaled
        chain = [graph.add_buffer(template=stream), graph.add("fps", fps_filter_rate(self._spec.fps))]
        chain += [graph.add(name, args) for name, args in ROTATION_FILTERS[self._rotation]]
        chain += [graph.add("scale", f"{geo.scale_w}:{geo.scale_h}:flags=bicubic"),  # the CLI's sws flags
                  graph.add("crop", f"{size}:{size}:{geo.crop_x}:{geo.crop_y}"),
                  graph.add("format", "rgb24"), graph.add("buffersink")]
        graph.link_nodes(*chain).configure()
        return graph

    def _filtered(self) -> Iterator[tuple[np.ndarray, float]]:
        """Each output frame as (S, S, 3) uint8 with the source pts (seconds) of the frame it took."""
        with self._open() as container:
            stream = _video_stream(container)
            stream.thread_type = "AUTO"
            if self._num_threads > 0:
                stream.codec_context.thread_count = self._num_threads
            try:
                graph = self._graph(stream)
            except (av.error.FFmpegError, ValueError) as e:
                raise CorruptVideoError(f"{self._name}: its frames cannot be converted ({_first_line(e)}); "
                                        f"re-encode it (e.g. MP4/H.264, yuv420p)") from None
            shift, tb, first_slot = self._timing.shift, self._time_base, None
            frames = container.decode(stream)
            at = 0.0  # seconds, where decoding has got to (for error messages)
            while True:
                try:
                    frame = next(frames, None)
                    if frame is not None:
                        if frame.pts is None:
                            raise CorruptVideoError(f"{self._name}: a frame near {at:.1f} s has no timestamp; "
                                                    f"remux the video into MP4 (e.g. ffmpeg -c copy)")
                        at = float(frame.pts * tb)
                        frame.opaque = frame.pts  # survives the filters: which source frame an output took
                        frame.pts -= shift
                    graph.push(frame)  # None: end of stream, the filter emits its last slots
                    outputs = _pull_all(graph)
                except av.error.FFmpegError as e:
                    raise CorruptVideoError(f"{self._name}: decoding failed near {at:.1f} s ({_first_line(e)}); "
                                            f"the file is damaged or truncated, re-encode it") from None
                for out in outputs:
                    src = float(out.opaque * tb)
                    image = out.to_ndarray(format="rgb24")  # (S, S, 3)
                    if first_slot is None:
                        first_slot = out.pts  # the output time base is 1 / F: pts counts slots
                        for _ in range(max(0, first_slot)):  # the CLI's constant-rate fill, see module doc
                            yield image, src
                    yield image, src
                if frame is None:
                    break
        if first_slot is None:
            raise EmptyVideoError(f"{self._name}: the video is {self.info.duration:.2f} s long, too short for one "
                                  f"clip at {self._spec.fps:g} fps (at least {0.5 / self._spec.fps:g} s); "
                                  f"use a longer video")

    def frames(self) -> Iterator[tuple[np.ndarray, list[float]]]:
        """uint8 (n, 3, S, S) chunks of the official tool's frames (RGB, channel-major) with their source pts."""
        images: list[np.ndarray] = []
        times: list[float] = []
        for image, src in self._filtered():
            images.append(image)
            times.append(src)
            if len(images) == self._chunk_size:
                yield np.stack(images).transpose(0, 3, 1, 2), times
                images, times = [], []
        if images:
            yield np.stack(images).transpose(0, 3, 1, 2), times

    def chunks(self) -> Iterator[tuple[Tensor, list[float]]]:
        """float32 (n, 3, S, S) chunks normalised as extract_feat.py does, with their source pts (seconds)."""
        for frames, times in self.frames():
            yield normalize(np.ascontiguousarray(frames), self._spec.mean, self._spec.std), times

    def close(self) -> None:
        """Nothing stays open between calls (each decode opens and closes the file)."""


def _pull_all(graph: av.filter.Graph) -> list[Any]:
    out = []
    while True:
        try:
            out.append(graph.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            return out
