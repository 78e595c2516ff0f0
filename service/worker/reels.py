"""Highlight reels: a summary's segments cut from the video's own frames into one H.264 mp4 with PyAV.

Every frame of a segment is decoded and re-encoded (cuts need not fall on keyframes, and the segments of a
reel come from several places of the video): the simplest cut that is right at every boundary. Frames keep
their order and the source's frame rate, so the reel lasts the segments' total. Reels are silent.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av

from service.contract.errors import InvalidRequest, ServiceError

_SIZE_CHECK_EVERY = 25  # frames between two checks of the output size


def reel_too_long(seconds: float, limit: float) -> InvalidRequest:
    return InvalidRequest(f"the summary's segments last {seconds:.1f} s; a reel may last at most {limit:g} s "
                          "(R2_REEL_MAX_SECONDS): ask a smaller budget", code="reel_too_long")


def render_reel(source: Path, segments: list[tuple[float, float]], target: Path, *, max_height: int,
                max_bytes: int, timeout_s: float) -> float:
    """Write the reel of ``segments`` (seconds, in time order) to ``target``; its duration in seconds."""
    deadline = time.monotonic() + timeout_s
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        rate = Fraction(rate).limit_denominator(1001)
        time_base = stream.time_base or Fraction(1, 90000)
        origin = float(stream.start_time * time_base) if stream.start_time else 0.0  # segments count from it
        scale = min(1.0, max_height / stream.codec_context.height)
        width = max(2, int(stream.codec_context.width * scale) // 2 * 2)
        height = max(2, int(stream.codec_context.height * scale) // 2 * 2)
        written = 0
        with av.open(str(target), "w", format="mp4") as out:
            encoder = out.add_stream("libx264", rate=rate)
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.options = {"preset": "veryfast", "crf": "26"}
            for start, end in segments:
                src.seek(int((start + origin) / time_base), stream=stream, backward=True)
                for frame in src.decode(stream):
                    t = (frame.time if frame.time is not None else origin) - origin
                    if t >= end - 1e-6:
                        break
                    if t < start - 1e-6:
                        continue
                    picture = frame.reformat(width=width, height=height, format="yuv420p")
                    picture.pts = written
                    picture.time_base = Fraction(1) / rate
                    out.mux(encoder.encode(picture))
                    written += 1
                    if time.monotonic() > deadline:
                        raise ServiceError(f"rendering the reel took longer than {timeout_s:g} s "
                                           "(R2_REEL_TIMEOUT_S)", code="reel_timeout", status=504)
                    if written % _SIZE_CHECK_EVERY == 0 and target.stat().st_size > max_bytes:
                        raise too_large(max_bytes)
            out.mux(encoder.encode(None))
    if written == 0:
        raise InvalidRequest("the summary's segments hold no frame of the video", code="empty_reel")
    if target.stat().st_size > max_bytes:
        raise too_large(max_bytes)
    return float(written / rate)


def too_large(max_bytes: int) -> InvalidRequest:
    return InvalidRequest(f"the reel is larger than {max_bytes} bytes (R2_REEL_MAX_BYTES): ask a smaller budget",
                          code="reel_too_large")
