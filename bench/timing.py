"""Small timing helpers: percentiles, and the engine's cold path with its decode / encode split."""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import Tensor

from models.engine import Grounder
from models.video import VideoInfo


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean / min / max in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return dict(n=len(ms), p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95), p99_ms=percentile(ms, 99),
                mean_ms=statistics.fmean(ms) if ms else math.nan, min_ms=min(ms, default=math.nan),
                max_ms=max(ms, default=math.nan))


def median_of(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else math.nan


def timed_encode_file(grounder: Grounder, path: str | Path, timeout_s: float = 1800.0,
                      chunk_size: int = 16) -> tuple[dict[str, float], Tensor, VideoInfo]:
    """Run the engine's own ``Grounder.encode_file`` and split its time with its stage hook.

    ``encode_s`` is the time spent encoding chunks (CLIP); ``decode_wait_s`` is the time spent waiting for the
    isolated decoder (decode that did not overlap with encoding, plus the hand-over of chunks).
    """
    spent: dict[str, float] = {"decode": 0.0, "encode": 0.0}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent[name] += time.perf_counter() - started

    started = time.perf_counter()
    info, features = grounder.encode_file(path, timeout_s=timeout_s, chunk_size=chunk_size, stage=stage)
    total = time.perf_counter() - started
    frames = features.shape[1]
    return dict(total_s=total, encode_s=spent["encode"], decode_wait_s=total - spent["encode"], frames=frames,
                frames_per_s=frames / total, video_seconds=info.duration), features, info
