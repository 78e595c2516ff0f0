"""Video decoding and preprocessing, in one of two official pipelines (``FrameSpec.preprocess``).

* ``"script"``: the official single-video script ``tools/inference.py`` (this module, described below);
* ``"extract"``: the official training-time tools ``tools/extract_frames.py`` + ``tools/extract_feat.py``, the frames
  the released checkpoints' features were made from (:mod:`models.extract`, FFmpeg's own filters).

What the official ``load_video`` of the script does, and what the ``"script"`` pipeline reproduces:

* frame indices: ``stride = decord average fps / target fps``; candidate positions are a float
  ``numpy.arange(0, num_frames, stride)``; each is rounded with Python's ``round`` (half to even) and clamped to
  the last frame;
* decode those frames with decord (RGB uint8), convert to float in [0, 1], centre-crop a square of side
  ``min(H, W)`` (offsets with Python ``round``), resize to ``size x size`` with antialiased bilinear interpolation
  on floats (torchvision's ``resize`` on a tensor), normalise with the short constants of the script.

Unlike the official script, frames are decoded in bounded chunks and turned into small normalised tensors at once,
so a long 720p/1080p video never holds more than one chunk of full-resolution frames in memory.

Untrusted files can hang or crash FFmpeg-based decoders; :class:`IsolatedDecoder` (and the
:func:`decode_in_subprocess` generator around it) runs probing and decoding in a child process with a time limit,
so the calling process survives anything a file does. Every failure a file can cause is a :class:`VideoError`
with a stable ``code``. Both pipelines run in that child with the same limits and errors, and both report the real
timestamp (source pts) of the frame behind each clip in :attr:`VideoInfo.clip_times`.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import multiprocessing.context as mp_context
import multiprocessing.forkserver as mp_forkserver
import multiprocessing.popen_forkserver as popen_forkserver
import multiprocessing.spawn as mp_spawn
import multiprocessing.util as mp_util
import os
import re
import resource
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import av
import decord
import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.dlpack
from torch import Tensor

# The short constants hard-coded in the official tools/inference.py (what the end-to-end script uses).
INFERENCE_MEAN: tuple[float, float, float] = (0.481, 0.459, 0.408)
INFERENCE_STD: tuple[float, float, float] = (0.269, 0.261, 0.276)
# OpenAI CLIP's constants (used by the official dataset and feature-extraction code).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

# "script": tools/inference.py (decord, frame indices by stride, bilinear resize); "extract": the training-time
# tools/extract_frames.py + extract_feat.py (ffmpeg fps/scale/crop filters), see models/extract.py.
Preprocess = Literal["script", "extract"]
# The normalisation constants each official pipeline uses: the script hard-codes short ones, extract_feat.py CLIP's.
PIPELINE_CONSTANTS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "script": (INFERENCE_MEAN, INFERENCE_STD),
    "extract": (CLIP_MEAN, CLIP_STD),
}

# Raw RGB bytes handed to one decord call: bounds memory whatever the resolution (1080p: 10 frames, 4K: 2 frames).
DECODE_BUDGET_BYTES = 64 << 20

# Containers whose first bytes are recognisable: such a file that cannot be opened is damaged, not "not a video".
_CONTAINER_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"free"), (4, b"wide"), (4, b"skip"),  # MP4 / MOV / 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (8, b"AVI "),  # RIFF/AVI
    (0, b"FLV"),
    (0, b"OggS"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),  # ASF / WMV
    (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3"),  # MPEG program / elementary stream
)
# FFmpeg demuxers that turn non-video files into a "video" stream (text art, still images) or that open other
# files/URLs (playlists): rejected before decord ever sees the file.
_REJECTED_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf", "image2", "hls", "concat", "dash", "sdp", "rtp",
                               "rtsp", "mpjpeg", "ffmetadata"})

# decord prefixes its messages with "[hh:mm:ss] /path/to/file.cc:line: " (possibly several times).
_DECORD_PREFIX = re.compile(r"(\[[0-9:]+\] \S+:\d+: )+")


# ------------------------------------------------------------------------------------------------------ errors


class VideoError(Exception):
    """Base class of every problem a video file can cause; ``code`` is stable, the message is for people."""

    code: ClassVar[str] = "video_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.message,)


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The path does not exist."""

    code = "video_not_found"


class NotAVideoError(VideoError):
    """The file is not a video: unknown format, text, an image, or a container without a video stream."""

    code = "not_a_video"


class EmptyVideoError(VideoError):
    """The file is empty or its video stream has no frames."""

    code = "empty_video"


class CorruptVideoError(VideoError):
    """A video that cannot be decoded: truncated, damaged, or the decoder failed or crashed."""

    code = "corrupt_video"


class DecodeTimeoutError(VideoError, TimeoutError):
    """Decoding took longer than the allowed time."""

    code = "decode_timeout"


class VideoLimitError(VideoError):
    """The video exceeds a configured limit (duration or resolution)."""

    code = "video_too_large"


_ERROR_TYPES: dict[str, type[VideoError]] = {
    cls.__name__: cls for cls in (VideoError, VideoNotFoundError, NotAVideoError, EmptyVideoError,
                                  CorruptVideoError, DecodeTimeoutError, VideoLimitError)}


# ------------------------------------------------------------------------------------------------ data types


@dataclass(frozen=True)
class VideoInfo:
    """What the decoder reports about a video.

    For ``"script"`` ``num_frames`` and ``avg_fps`` are decord's (they set the indices) and ``duration`` is
    num_frames / avg_fps; for ``"extract"`` they are the demuxer's packet count and average rate, and ``duration``
    is the end of the last frame on the start-shifted timeline the clips are counted on (see models/extract.py).
    """

    num_frames: int
    avg_fps: float
    width: int  # as displayed (rotation applied)
    height: int
    duration: float  # seconds
    start_time: float = 0.0  # the container's start time, seconds: a player shows clip_times[i] - start_time
    # Source pts (seconds, the file's own timeline) of the frame behind each clip decoded so far: complete once
    # decoding has ended. Not i / fps: the frame a clip takes depends on the pipeline, and a VFR video's frames are
    # not evenly spaced. ("script": decord's timestamps, float32.)
    clip_times: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip_times", tuple(float(t) for t in self.clip_times))  # JSON gives a list

    def player_clip_times(self) -> list[float]:
        """``clip_times`` as a player shows them (0 = the container's start), to the millisecond: the time of each
        clip's saliency value. Empty until decoding has ended (and for features cached without them)."""
        return [round(t - self.start_time, 3) for t in self.clip_times]


@dataclass(frozen=True)
class FrameSpec:
    """How frames are sampled and preprocessed.

    ``fps`` is the target sampling rate (0.5 for QVHighlights), ``size`` the CLIP input side (224 for ViT-B/32,
    336 for ViT-L/14-336); ``preprocess`` names the official pipeline (see :data:`Preprocess`); ``mean``/``std``
    default to that pipeline's constants (:data:`PIPELINE_CONSTANTS`).
    """

    fps: float
    size: int = 224
    mean: tuple[float, float, float] | None = None  # None: the pipeline's own constants
    std: tuple[float, float, float] | None = None
    # "script" (tools/inference.py) for now; "extract" gives the frames the checkpoints were trained on.
    preprocess: Preprocess = "script"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"FrameSpec.fps must be a positive number, got {self.fps!r}")
        if self.size < 1:
            raise ValueError(f"FrameSpec.size must be positive, got {self.size!r}")
        if self.preprocess not in PIPELINE_CONSTANTS:
            raise ValueError(f"FrameSpec.preprocess must be one of {sorted(PIPELINE_CONSTANTS)}, "
                             f"got {self.preprocess!r}")
        mean, std = PIPELINE_CONSTANTS[self.preprocess]
        object.__setattr__(self, "mean", tuple(float(v) for v in (mean if self.mean is None else self.mean)))
        object.__setattr__(self, "std", tuple(float(v) for v in (std if self.std is None else self.std)))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"FrameSpec mean/std must be 3 values (std > 0), got {self.mean!r} / {self.std!r}")


# ------------------------------------------------------------------------------------------------ sampling


def sample_indices(num_frames: int, avg_fps: float, target_fps: float) -> list[int]:
    """Frame indices the official script decodes: ``min(round(p), num_frames - 1)`` for ``p`` in a float
    ``arange(0, num_frames, avg_fps / target_fps)``; Python ``round`` is half to even (12.5 -> 12)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    if not (math.isfinite(avg_fps) and avg_fps > 0 and math.isfinite(target_fps) and target_fps > 0):
        raise ValueError(f"frame rates must be positive, got avg_fps={avg_fps!r} target_fps={target_fps!r}")
    # numpy's float arange (not a Python loop of additions) decides how many positions there are and their values.
    positions = np.arange(0, num_frames, avg_fps / target_fps).tolist()
    return [min(round(p), num_frames - 1) for p in positions]


# ------------------------------------------------------------------------------------------------ probing


def _looks_like_video_container(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 1 and head[0] == 0x47:  # MPEG-TS: sync byte every 188 bytes
        with open(path, "rb") as f:
            f.seek(188)
            if f.read(1) == b"\x47":
                return True
    return any(head[at:at + len(sig)] == sig for at, sig in _CONTAINER_SIGNATURES)


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise VideoNotFoundError(f"{path.name}: no such file; check the path or upload the video again") from None
    except OSError as e:
        raise CorruptVideoError(f"{path.name}: the file cannot be read ({e.strerror}); check its permissions") from None
    if not path.is_file():
        raise NotAVideoError(f"{path.name}: not a regular file; pass the path of a video file")
    if st.st_size == 0:
        raise EmptyVideoError(f"{path.name}: the file is empty (0 bytes); the upload or copy probably failed")


class StreamProbe(NamedTuple):
    """What :func:`_probe_stream` finds out about the video stream and its container."""

    width: int  # of the first frame, as stored
    height: int
    rotation: int  # display rotation, degrees counter-clockwise: 0, 90, 180 or 270
    start_time: float  # the container's start time, seconds (0 when unknown)
    stream_start: float  # the video stream's start time, seconds (0 when unknown)


def _probe_stream(path: Path) -> StreamProbe:
    """Check with PyAV that the file has a video stream that decodes, and describe it."""
    name = path.name
    try:
        # Only local files: a playlist must not make FFmpeg open URLs or other files.
        with av.open(str(path), options={"protocol_whitelist": "file"}) as container:
            fmt = container.format.name
            if fmt in _REJECTED_FORMATS or fmt.endswith("_pipe"):
                kind = "an image" if ("image" in fmt or fmt.endswith("_pipe")) else f"a {fmt!r} file"
                raise NotAVideoError(f"{name}: this is {kind}, not a video; upload a video file (e.g. MP4/H.264)")
            stream = _video_stream(container)
            if stream is None:
                what = "only audio" if container.streams.audio else "no video stream"
                raise NotAVideoError(f"{name}: the file contains {what}; upload a file with a video track")
            packets, first = 0, None
            for packet in container.demux(stream):  # the last (empty) packet flushes the decoder
                packets += bool(packet.size)
                first = next(iter(packet.decode()), None)
                if first is not None:
                    break
            if first is None and packets == 0:
                raise EmptyVideoError(f"{name}: the video stream has no frames; upload a video with content")
            if first is None or first.width <= 0 or first.height <= 0:
                raise CorruptVideoError(f"{name}: no frame of the video stream can be decoded; re-encode the video")
            start = 0.0 if container.start_time is None else container.start_time / av.time_base
            stream_start = 0.0 if stream.start_time is None else float(stream.start_time * stream.time_base)
            return StreamProbe(first.width, first.height, round(first.rotation) % 360, start, stream_start)
    except VideoError:
        raise
    except av.error.FileNotFoundError:
        raise VideoNotFoundError(f"{name}: no such file; check the path or upload the video again") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        if _looks_like_video_container(path):
            raise CorruptVideoError(f"{name}: the video container is damaged or truncated ({_first_line(e)}); "
                                    f"re-upload or re-encode it") from None
        raise NotAVideoError(f"{name}: not a recognised video format; upload a video file (e.g. MP4/H.264)") from None


def _video_stream(container: Any) -> Any:
    """The first video stream that is not cover art."""
    return next((s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)


class FrameFetcher(Protocol):
    """Reads the frames at the given non-decreasing indices as an (n, H, W, 3) uint8 RGB tensor, upright, and keeps
    their source pts (seconds, the file's timeline) in ``last_times``."""

    last_times: list[float]

    def __call__(self, indices: list[int]) -> Tensor: ...


class _DecordFetcher:
    """decord's frames (as the official script reads them)."""

    def __init__(self, reader: decord.VideoReader, stream_start: float) -> None:
        self._reader = reader
        self._stream_start = stream_start  # decord's timestamps count from the video stream's start
        self.last_times: list[float] = []

    def __call__(self, indices: list[int]) -> Tensor:
        batch = self._reader.get_batch(indices)
        frames = torch.utils.dlpack.from_dlpack(batch.to_dlpack())  # zero-copy
        # decord reads packets ahead of its decoding thread, which keeps turning them into RGB frames after
        # get_batch returns (measured: +1.4 GB for an idle 720p reader). A seek stops that thread and drops its
        # queues; the next get_batch seeks accurately anyway.
        self._reader.seek(0)
        starts = self._reader.get_frame_timestamp(indices)[:, 0]  # (n,) float32 seconds
        self.last_times = [round(float(t) + self._stream_start, 6) for t in starts]
        return frames


class _SequentialFetcher:
    """PyAV fallback for videos shown rotated by 90/270 degrees, on which decord 0.6 fails (so the official script
    cannot read them): decodes forward once, keeps the frames at the requested indices (presentation order, as
    decord counts) and applies the display rotation as decord does for 180 degrees."""

    def __init__(self, path: Path, rotation: int, num_threads: int) -> None:
        self._container = av.open(str(path), options={"protocol_whitelist": "file"})
        stream = _video_stream(self._container)
        stream.thread_type = "AUTO"
        if num_threads > 0:
            stream.codec_context.thread_count = num_threads
        self._frames = self._container.decode(stream)
        self._turns = rotation // 90  # np.rot90 turns counter-clockwise
        self._pos, self._last = -1, None
        self.last_times: list[float] = []

    def __call__(self, indices: list[int]) -> Tensor:
        out, times = [], []
        for index in indices:
            while self._pos < index:
                frame = next(self._frames, None)
                if frame is None:
                    raise IndexError(f"the stream ended at frame {self._pos + 1}")
                self._pos, self._last = self._pos + 1, frame
            out.append(np.rot90(self._last.to_ndarray(format="rgb24"), self._turns))
            times.append(float(self._last.time))
        self.last_times = times
        return torch.from_numpy(np.ascontiguousarray(np.stack(out)))

    def close(self) -> None:
        self._container.close()


def _open_reader(path: str | os.PathLike[str], num_threads: int = 0, max_duration: float | None = None,
                 max_pixels: int | None = None) -> tuple[VideoInfo, FrameFetcher]:
    """Validate the file, apply the limits, and open the reader the frames come from (decord, as the script)."""
    path = Path(path)
    _check_file(path)
    probe = _probe_stream(path)
    width, height, rotation = probe.width, probe.height, probe.rotation
    _check_pixels(path.name, width, height, max_pixels)
    decord.logging.set_level(decord.logging.QUIET)  # failures are reported as typed errors, not FFmpeg log lines
    try:
        reader = decord.VideoReader(str(path), num_threads=num_threads)
        num_frames, avg_fps = len(reader), float(reader.get_avg_fps())
    except AssertionError:  # decord asserts a positive frame count
        raise EmptyVideoError(f"{path.name}: the video stream has no frames; upload a video with content") from None
    except (decord.DECORDError, RuntimeError, ValueError) as e:
        raise CorruptVideoError(f"{path.name}: the decoder cannot open the video ({_first_line(e)}); "
                                f"re-encode it (e.g. MP4/H.264)") from None
    if num_frames < 1:
        raise EmptyVideoError(f"{path.name}: the video stream has no frames; upload a video with content")
    if not (math.isfinite(avg_fps) and avg_fps > 0):
        raise CorruptVideoError(f"{path.name}: the video has no valid frame rate ({avg_fps}); re-encode it")
    if rotation in (90, 270):  # frames come out upright, so width and height swap
        width, height = height, width
    info = VideoInfo(num_frames=num_frames, avg_fps=avg_fps, width=width, height=height,
                     duration=num_frames / avg_fps, start_time=probe.start_time)
    _check_duration(path.name, info.duration, max_duration)
    if rotation in (90, 270):
        del reader  # frame count and rate still come from decord, the frames from PyAV
        return info, _SequentialFetcher(path, rotation, num_threads)
    return info, _DecordFetcher(reader, probe.stream_start)


def _check_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise VideoLimitError(f"{name}: resolution {width}x{height} is above the limit of {max_pixels} pixels "
                              f"per frame; downscale the video and try again")


def _check_duration(name: str, duration: float, max_duration: float | None) -> None:
    if max_duration is not None and duration > max_duration:
        raise VideoLimitError(f"{name}: the video is {duration:.1f} s long, above the limit of "
                              f"{max_duration:g} s; trim it and try again")


def _first_line(e: BaseException) -> str:
    """A short reason for an error message: FFmpeg's own wording, without decord's "[time] file.cc:line:" noise
    or the file's full path."""
    text = getattr(e, "strerror", None) or next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return _DECORD_PREFIX.sub("", str(text)).strip()[:160]


def probe_video(path: str | os.PathLike[str], preprocess: Preprocess = "script") -> VideoInfo:
    """Frame count, average fps, frame size and duration of a video, as the pipeline sees them (for "script"
    decord's, as the official script uses); ``clip_times`` stays empty.

    Raises a :class:`VideoError` subclass for files that are missing, empty, not videos or damaged.
    """
    source = open_source(path, FrameSpec(fps=1.0, preprocess=preprocess))
    source.close()
    return source.info


# ------------------------------------------------------------------------------------------------ frames


def _preprocess(frames: Tensor, spec: FrameSpec) -> Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, size, size) float32, the official operations in the official order."""
    n, h, w, _ = frames.shape
    side = min(h, w)
    top, left = round((h - side) / 2), round((w - side) / 2)  # Python round: half to even, as the script does
    frames = frames[:, top:top + side, left:left + side]  # crop the uint8 frames first: the same pixels, less work
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    out = torch.empty(n, 3, spec.size, spec.size)
    # Convert a few frames at a time: at most DECODE_BUDGET_BYTES of full-resolution floats are alive (one call per
    # frame would be slow for small frames, one call per chunk too big for 1080p ones).
    step = max(1, DECODE_BUDGET_BYTES // (side * side * 3 * 4))
    for at in range(0, n, step):
        # permute gives the same (channels-last) layout as in the script, so interpolation sees the same tensor.
        part = frames[at:at + step].permute(0, 3, 1, 2).float() / 255
        if side != spec.size:  # torchvision's resize returns the input unchanged when the size already matches
            part = F.interpolate(part, size=(spec.size, spec.size), mode="bilinear", align_corners=False,
                                 antialias=True)
        out[at:at + step] = part.sub_(mean).div_(std)
    return out


def _iter_chunks(fetch: FrameFetcher, info: VideoInfo, spec: FrameSpec, chunk_size: int,
                 name: str) -> Iterator[tuple[Tensor, list[float]]]:
    """(chunk, source pts of its frames) pairs of the "script" pipeline."""
    indices = sample_indices(info.num_frames, info.avg_fps, spec.fps)
    per_call = max(1, min(chunk_size, DECODE_BUDGET_BYTES // max(1, info.width * info.height * 3)))
    for start in range(0, len(indices), chunk_size):
        wanted = indices[start:start + chunk_size]
        parts, times = [], []
        for at in range(0, len(wanted), per_call):
            try:
                frames = fetch(wanted[at:at + per_call])
            except (decord.DECORDError, av.error.FFmpegError, RuntimeError, IndexError, ValueError) as e:
                raise CorruptVideoError(f"{name}: decoding failed near frame {wanted[at]} of {info.num_frames} "
                                        f"({_first_line(e)}); the file is damaged or truncated, re-encode it") from None
            parts.append(_preprocess(frames, spec))
            times += fetch.last_times
            del frames
        yield (parts[0] if len(parts) == 1 else torch.cat(parts)), times


class FrameSource(Protocol):
    """An opened video in one pipeline: what it is (``info``, read before any frame is decoded), then its clips."""

    info: VideoInfo

    def chunks(self) -> Iterator[tuple[Tensor, list[float]]]:
        """(n, 3, size, size) float32 chunks with the source pts (seconds) of their n frames."""
        ...

    def close(self) -> None: ...


class _ScriptSource:
    """The "script" pipeline (tools/inference.py), decord's frames."""

    def __init__(self, path: str | os.PathLike[str], spec: FrameSpec, chunk_size: int, num_threads: int,
                 max_duration: float | None, max_pixels: int | None) -> None:
        self.info, self._fetch = _open_reader(path, num_threads, max_duration, max_pixels)
        self._spec, self._chunk_size, self._name = spec, chunk_size, Path(path).name

    def chunks(self) -> Iterator[tuple[Tensor, list[float]]]:
        return _iter_chunks(self._fetch, self.info, self._spec, self._chunk_size, self._name)

    def close(self) -> None:
        if isinstance(self._fetch, _SequentialFetcher):
            self._fetch.close()


def open_source(path: str | os.PathLike[str], spec: FrameSpec, chunk_size: int = 16, num_threads: int = 0,
                max_duration: float | None = None, max_pixels: int | None = None) -> FrameSource:
    """Validate the file, apply the limits and open it in ``spec.preprocess``'s pipeline (see :func:`iter_frames`)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if spec.preprocess == "extract":
        from .extract import ExtractSource  # imported here: models.extract builds on this module

        return ExtractSource(path, spec, chunk_size, num_threads, max_duration, max_pixels)
    return _ScriptSource(path, spec, chunk_size, num_threads, max_duration, max_pixels)


def iter_decoded(path: str | os.PathLike[str], spec: FrameSpec, chunk_size: int = 16, num_threads: int = 0,
                 max_duration: float | None = None, max_pixels: int | None = None
                 ) -> Iterator[tuple[VideoInfo, Tensor]]:
    """:func:`iter_frames` with the video's info: ``(info, chunk)`` pairs, as :func:`decode_in_subprocess` gives
    them; ``info.clip_times`` covers the clips of every chunk so far."""
    source = open_source(path, spec, chunk_size, num_threads, max_duration, max_pixels)
    try:
        info = source.info
        for chunk, times in source.chunks():
            info = replace(info, clip_times=info.clip_times + tuple(times))
            yield info, chunk
    finally:
        source.close()


def iter_frames(path: str | os.PathLike[str], spec: FrameSpec, chunk_size: int = 16, num_threads: int = 0,
                max_duration: float | None = None, max_pixels: int | None = None) -> Iterator[Tensor]:
    """Sampled, preprocessed frames as (n, 3, size, size) float32 chunks of ``chunk_size`` (last may be shorter).

    Same values as the official pipeline ``spec.preprocess`` names ("script": ``load_video`` of tools/inference.py;
    "extract": tools/extract_frames.py + extract_feat.py); frames are decoded chunk by chunk so memory stays bounded.
    ``max_duration`` (seconds) and ``max_pixels`` (width x height) raise :class:`VideoLimitError` before decoding.
    Runs in this process: use :func:`decode_in_subprocess` for untrusted files.
    """
    for _, chunk in iter_decoded(path, spec, chunk_size, num_threads, max_duration, max_pixels):
        yield chunk


def load_frames(path: str | os.PathLike[str], spec: FrameSpec, **kwargs: Any) -> Tensor:
    """All sampled frames of a video as one (n, 3, size, size) float32 tensor (arguments as :func:`iter_frames`)."""
    return torch.cat(list(iter_frames(path, spec, **kwargs)))


# ------------------------------------------------------------------------------------------------ isolation

# Waiting for a child to start is not counted against the decode time limit (a spawned child imports torch).
STARTUP_TIMEOUT_S = 120.0

_preload_requested = False


def _context(start_method: str) -> Any:
    global _preload_requested
    ctx = mp.get_context(start_method)
    if start_method == "forkserver" and not _preload_requested:
        # Children fork from a server that has already imported torch and the decoders (importing torch takes
        # seconds); only effective if the server is not running yet (a service may start it earlier with its own
        # preload list, which should include this module).
        ctx.set_forkserver_preload([__name__])
        _preload_requested = True
    return ctx


class _WithoutMainPopen(popen_forkserver.Popen):
    """The standard library's forkserver launcher, except that the child does not run the parent's main module.

    The stdlib sends each child the path of the parent's ``__main__`` and the child executes that file again (as
    ``__mp_main__``) so that functions defined there can be unpickled. The decoder's target and arguments all live
    in this package, so that is never needed here; skipping it is what lets a plain script use the engine without
    an ``if __name__ == "__main__":`` guard (otherwise the script would run again in every decoder child, which
    then fails as it tries to start its own decoder). Same steps as ``popen_forkserver.Popen._launch`` otherwise.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = mp_spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            mp_context.reduction.dump(prep_data, buf)
            mp_context.reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        self.sentinel, w = mp_forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)  # the child's sentinel of its parent, as in the stdlib
        self.finalizer = mp_util.Finalize(self, mp_util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = mp_forkserver.read_signed(self.sentinel)


class _DecoderProcess(mp_context.ForkServerProcess):
    """A forkserver child started by :class:`_WithoutMainPopen`."""

    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _WithoutMainPopen(process_obj)


def _child_main(conn: Any, path: str, spec: FrameSpec, chunk_size: int, num_threads: int,
                max_duration: float | None, max_pixels: int | None, fault: str | None) -> None:
    """Child process. Messages: ("ready",), ("info", fields), then per chunk ("chunk", shape, clip times) followed
    by the raw float32 bytes, and finally ("done", peak RSS bytes) or ("error", type name, message)."""
    torch.set_num_threads(1)  # leave the cores to the parent, which encodes while this decodes
    try:
        conn.send(("ready",))
        if fault == "hang":
            time.sleep(3600)
        elif fault == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        source = open_source(path, spec, chunk_size, num_threads, max_duration, max_pixels)
        try:
            conn.send(("info", asdict(source.info)))
            for chunk, times in source.chunks():
                conn.send(("chunk", tuple(chunk.shape), times))
                conn.send_bytes(chunk.numpy().reshape(-1).view(np.uint8))
        finally:
            source.close()
        conn.send(("done", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent stopped listening
    except VideoError as e:
        _send_quietly(conn, ("error", type(e).__name__, e.message))
    except Exception as e:  # anything else the file provokes in the decoder is still the file's fault
        _send_quietly(conn, ("error", "CorruptVideoError",
                             f"{Path(path).name}: the decoder failed ({type(e).__name__}: {_first_line(e)}); "
                             f"re-encode it"))
    finally:
        conn.close()


def _send_quietly(conn: Any, msg: tuple[Any, ...]) -> None:
    try:
        conn.send(msg)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent stopped listening


class IsolatedDecoder:
    """Probe and decode a video in a child process; iterate to get ``(VideoInfo, chunk)`` pairs in order
    (``VideoInfo.clip_times`` covers the clips of every chunk so far).

    * ``timeout_s`` bounds the total time spent waiting for the child once it runs (its start-up is excluded, and
      so is the consumer's own time between chunks); when it runs out the child is killed and
      :class:`DecodeTimeoutError` raised.
    * A child that crashes or exits abnormally gives :class:`CorruptVideoError`; errors raised in the child come
      back with their own type, code and message. A child that cannot start at all raises ``RuntimeError``
      (an environment problem, not the file's).
    * The child is killed and reaped by :meth:`close`, which runs when iteration ends, fails or is abandoned, and
      on leaving a ``with`` block. Chunks come through a pipe; the child runs at most one chunk ahead.

    The default ``"forkserver"`` start method forks children from a server that preloads this module, and its
    children do not re-run the caller's main module, so a script needs no ``if __name__ == "__main__":`` guard (with
    ``"spawn"``, the standard library's, it does).
    ``_test_fault`` is a test-only hook: ``"hang"`` makes the child sleep, ``"crash"`` makes it die of SIGSEGV.
    """

    def __init__(self, path: str | os.PathLike[str], spec: FrameSpec, *, timeout_s: float, chunk_size: int = 16,
                 num_threads: int = 0, max_duration: float | None = None, max_pixels: int | None = None,
                 start_method: str = "forkserver", _test_fault: Literal["hang", "crash"] | None = None) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.name = Path(path).name
        self.timeout_s = float(timeout_s)
        self.child_max_rss: int | None = None  # bytes, reported by a child that finished normally
        self._waited = 0.0
        self._started = False
        self._info: VideoInfo | None = None
        ctx = _context(start_method)
        self._conn, child_conn = ctx.Pipe(duplex=False)
        process_type = _DecoderProcess if start_method == "forkserver" else ctx.Process
        self._proc = process_type(
            target=_child_main, name=f"video-decoder:{self.name}", daemon=True,
            args=(child_conn, str(path), spec, chunk_size, num_threads, max_duration, max_pixels, _test_fault))
        try:
            self._proc.start()
        finally:
            child_conn.close()  # the child holds the write end now; its death then shows up as EOF here
        self._pid = self._proc.pid
        self._closed = False

    @property
    def pid(self) -> int | None:
        """Process id of the child (for monitoring and tests)."""
        return self._pid

    def __enter__(self) -> IsolatedDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the child if it still runs, reap it and release the pipe; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._proc.is_alive():
            self._proc.kill()  # nothing in the child is worth a graceful shutdown
        self._proc.join(10)
        self._conn.close()
        if self._proc.exitcode is not None:
            self._proc.close()

    def _poll(self) -> None:
        """Wait for the next message within the remaining time, or kill the child and raise."""
        limit = self.timeout_s - self._waited if self._started else STARTUP_TIMEOUT_S
        began = time.monotonic()
        ready = limit > 0 and self._conn.poll(limit)
        if self._started:
            self._waited += time.monotonic() - began
        if ready:
            return
        self.close()
        if not self._started:
            raise RuntimeError(f"the video decoder process did not start within {STARTUP_TIMEOUT_S:g} s")
        raise DecodeTimeoutError(f"{self.name}: decoding took longer than {self.timeout_s:g} s; the file may be "
                                 f"damaged or too long, try a shorter or re-encoded video")

    def _failure(self) -> Exception:
        """The error for a child that went away without saying why (crash, kill, failed start)."""
        self._proc.join(10)
        code = self._proc.exitcode
        self.close()
        if not self._started:
            return RuntimeError(f"the video decoder process failed to start (exit status {code})")
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
            if -code == signal.SIGKILL:
                how += " (possibly out of memory)"
        else:
            how = f"exited with status {code}"
        return CorruptVideoError(f"{self.name}: the decoder process {how} while reading the file; the video is "
                                 f"probably damaged, re-encode it")

    def _recv(self) -> tuple[Any, ...]:
        self._poll()
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._failure() from None

    def _recv_chunk(self, shape: tuple[int, ...]) -> Tensor:
        out = torch.empty(shape, dtype=torch.float32)
        self._poll()
        try:
            self._conn.recv_bytes_into(out.numpy().reshape(-1).view(np.uint8))
        except (EOFError, OSError):
            raise self._failure() from None
        return out

    def __iter__(self) -> Iterator[tuple[VideoInfo, Tensor]]:
        if self._closed:
            raise RuntimeError("IsolatedDecoder is closed")
        try:
            while True:
                msg = self._recv()
                if msg[0] == "ready":
                    self._started = True
                elif msg[0] == "info":
                    self._info = VideoInfo(**msg[1])
                elif msg[0] == "chunk":
                    chunk = self._recv_chunk(msg[1])
                    assert self._info is not None, "decoder sent frames before the video info"
                    self._info = replace(self._info, clip_times=self._info.clip_times + tuple(msg[2]))
                    yield self._info, chunk
                elif msg[0] == "error":
                    raise _ERROR_TYPES.get(msg[1], CorruptVideoError)(msg[2])
                else:  # "done"
                    self.child_max_rss = msg[1]
                    return
        finally:
            self.close()


def decode_in_subprocess(path: str | os.PathLike[str], spec: FrameSpec, timeout_s: float, chunk_size: int = 16,
                         max_duration: float | None = None, max_pixels: int | None = None, num_threads: int = 0,
                         **kwargs: Any) -> Iterator[tuple[VideoInfo, Tensor]]:
    """:func:`iter_frames` run in a killable child process: yields ``(info, chunk)`` pairs in order.

    See :class:`IsolatedDecoder` for the time limit and error handling (``kwargs`` go to it); the child is
    cleaned up when the generator finishes, fails, or is closed early (e.g. the consumer breaks out of the loop).
    """
    with IsolatedDecoder(path, spec, timeout_s=timeout_s, chunk_size=chunk_size, num_threads=num_threads,
                         max_duration=max_duration, max_pixels=max_pixels, **kwargs) as decoder:
        yield from decoder
