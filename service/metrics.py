"""Prometheus metrics across processes: workers add to counters in the backend, the API exposes them.

Workers may run on other machines, so a per-host multiprocess directory would not see them; instead each
worker adds its numbers to one Redis hash (``{p}:metrics``, ``HINCRBYFLOAT``; in memory in embedded mode),
keyed by the Prometheus sample name with its labels, and the API's ``/metrics`` reads that hash at scrape time
through :class:`SharedCollector`. Counters are cluster-wide totals since the hash was created. The API's own
request counters live in the API process (run one uvicorn process per API container; scale with containers).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .backend import Backend

log = logging.getLogger(__name__)

# Shared sample names (counters) and histogram families.
CACHE_HITS = "r2_feature_cache_hits_total"
CACHE_MISSES = "r2_feature_cache_misses_total"
CACHE_CORRUPT = "r2_feature_cache_corrupt_total"
ADAPTER_HITS = "r2_adapter_cache_hits_total"
JOBS_RECLAIMED = "r2_jobs_reclaimed_total"
JOB_SECONDS = "r2_job_seconds"
BATCH_SIZE = "r2_batch_size"

SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

FAMILIES: dict[str, tuple[str, str]] = {
    "r2_jobs": ("counter", "Jobs finished by workers, by kind (encode/ground) and outcome (ready/failed)."),
    "r2_feature_cache_hits": ("counter", "Feature cache lookups that found the video's features."),
    "r2_feature_cache_misses": ("counter", "Feature cache lookups that had to decode and encode the video."),
    "r2_feature_cache_corrupt": ("counter", "Feature cache entries that failed verification (then misses)."),
    "r2_adapter_cache_hits": ("counter", "Model calls that reused a worker's in-memory adapter state."),
    "r2_jobs_reclaimed": ("counter", "Jobs taken over from a worker that stopped (XAUTOCLAIM)."),
    JOB_SECONDS: ("histogram", "Worker time per job stage: decode, encode, ground."),
    BATCH_SIZE: ("histogram", "Queries answered by one model call (queries batched on the same video)."),
}

_SAMPLE_RE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?$")
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def sample(name: str, **labels: object) -> str:
    """The sample name with labels as stored in the shared hash, e.g. ``r2_jobs_total{kind="encode"}``."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


class MetricsBatch:
    """Numbers a worker collects while running a batch of jobs, written to the backend in one round trip."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: object) -> None:
        key = sample(name, **labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def observe(self, family: str, value: float, **labels: object) -> None:
        buckets = BATCH_BUCKETS if family == BATCH_SIZE else SECONDS_BUCKETS
        for bound in (*buckets, float("inf")):
            if value <= bound:
                self.inc(f"{family}_bucket", le=_le(bound), **labels)
        self.inc(f"{family}_sum", value, **labels)
        self.inc(f"{family}_count", 1, **labels)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _family_of(name: str) -> str | None:
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in FAMILIES:
            return name[: -len(suffix)]
    return None


class SharedCollector(Collector):
    """Exposes, at scrape time, the workers' shared counters plus the queue length and live workers."""

    def __init__(self, backend: Callable[[], Backend | None]) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        backend = self.backend()
        up = Metric("r2_backend_up", "1 when Redis (or the embedded backend) answers.", "gauge")
        if backend is None:
            up.add_sample("r2_backend_up", {}, 0.0)
            yield up
            return
        try:
            raw = backend.state.read_metrics()
            queue_length = backend.queue.length()
            workers = len(backend.state.live_workers())
        except Exception as err:  # a scrape must still answer when Redis is down
            log.warning("metrics: backend unavailable (%s)", err)
            up.add_sample("r2_backend_up", {}, 0.0)
            yield up
            return
        up.add_sample("r2_backend_up", {}, 1.0)
        yield up
        gauge = Metric("r2_queue_length", "Jobs waiting or running.", "gauge")
        gauge.add_sample("r2_queue_length", {}, float(queue_length))
        yield gauge
        gauge = Metric("r2_workers_live", "Workers with a fresh heartbeat.", "gauge")
        gauge.add_sample("r2_workers_live", {}, float(workers))
        yield gauge

        families = {name: Metric(name, doc, kind) for name, (kind, doc) in FAMILIES.items()}
        for key, value in sorted(raw.items()):
            match = _SAMPLE_RE.match(key)
            family = _family_of(match.group("name")) if match else None
            if match is None or family is None:
                continue
            labels = dict(_LABEL_RE.findall(match.group("labels") or ""))
            families[family].add_sample(match.group("name"), labels, value)
        for name in (CACHE_HITS, CACHE_MISSES, CACHE_CORRUPT):  # always present, 0 before the first job
            family = families[name[: -len("_total")]]
            if not family.samples:
                family.add_sample(name, {}, 0.0)
        yield from (family for family in families.values() if family.samples)
