"""Metric names and their encoding, shared by the workers (who count) and the API (who exposes them).

Workers may run on other machines, so a per-host multiprocess directory would not see them; instead each
worker adds its numbers to one Redis hash (``{p}:{q}:metrics``, ``HINCRBYFLOAT``; in memory in embedded mode),
keyed by the Prometheus sample name with its labels (:func:`sample`), and the API's ``/metrics`` reads that hash
at scrape time (:mod:`service.api.metrics`). Counters are cluster-wide totals since the hash was created.
"""

from __future__ import annotations

import re

# Shared sample names (counters) and histogram families.
CACHE_HITS = "r2_feature_cache_hits_total"
CACHE_MISSES = "r2_feature_cache_misses_total"
CACHE_CORRUPT = "r2_feature_cache_corrupt_total"
ADAPTER_HITS = "r2_adapter_cache_hits_total"
JOBS_RECLAIMED = "r2_jobs_reclaimed_total"
# The two tiers (labelled kind="features" or kind="video"): the hot copy in Redis (or embedded memory), and
# the cold tier read when the hot copy is missing (service/store/cold.py).
HOT_HITS = "r2_hot_hits_total"
HOT_MISSES = "r2_hot_misses_total"
COLD_HITS = "r2_cold_hits_total"
COLD_MISSES = "r2_cold_misses_total"
COLD_CORRUPT = "r2_cold_corrupt_total"
JOB_SECONDS = "r2_job_seconds"
BATCH_SIZE = "r2_batch_size"
WEBHOOKS = "r2_webhooks_total"  # labelled outcome="delivered" | "failed" (to be retried) | "given_up"
URL_FETCHES = "r2_url_fetches_total"  # labelled outcome="ready" | "failed"

SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

FAMILIES: dict[str, tuple[str, str]] = {
    "r2_jobs": ("counter", "Jobs finished by workers, by kind (encode/ground) and outcome (ready/failed)."),
    "r2_feature_cache_hits": ("counter", "Feature cache lookups that found the video's features."),
    "r2_feature_cache_misses": ("counter", "Feature cache lookups that had to decode and encode the video."),
    "r2_feature_cache_corrupt": ("counter", "Feature cache entries that failed verification (then misses)."),
    "r2_adapter_cache_hits": ("counter", "Model calls that reused a worker's in-memory adapter state."),
    "r2_jobs_reclaimed": ("counter", "Jobs taken over from a worker that stopped (XAUTOCLAIM)."),
    "r2_hot_hits": ("counter", "Reads that found the hot copy (Redis, or embedded memory), by kind."),
    "r2_hot_misses": ("counter", "Reads that found no hot copy (never stored, expired or evicted), by kind."),
    "r2_cold_hits": ("counter", "Reads served by the cold tier, by kind (features after a hot miss; video bytes)."),
    "r2_cold_misses": ("counter", "Reads the cold tier could not serve either, by kind."),
    "r2_cold_corrupt": ("counter", "Cold-tier entries that failed verification (deleted, then misses)."),
    "r2_webhooks": ("counter", "Webhook delivery attempts, by outcome (delivered, failed and retried, given_up)."),
    "r2_url_fetches": ("counter", "Videos fetched by URL, by outcome (ready, failed)."),
    JOB_SECONDS: ("histogram", "Worker time per job stage: decode, encode, ground."),
    BATCH_SIZE: ("histogram", "Queries answered by one model call (queries batched on the same video)."),
}

SAMPLE_RE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


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

    def inc(self, name: str, amount: float = 1.0, /, **labels: object) -> None:
        key = sample(name, **labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def observe(self, family: str, value: float, **labels: object) -> None:
        """One histogram observation: only the bucket it falls in is counted here (three increments instead of one
        per bucket, on the answer's round trip); the API makes the buckets cumulative when it is scraped."""
        bound = next(b for b in (*buckets_of(family), float("inf")) if value <= b)
        self.inc(f"{family}_bucket", 1.0, le=le_label(bound), **labels)
        self.inc(f"{family}_sum", value, **labels)
        self.inc(f"{family}_count", 1, **labels)


def buckets_of(family: str) -> tuple[float, ...]:
    """The finite upper bounds of a histogram family's buckets."""
    return tuple(float(b) for b in (BATCH_BUCKETS if family == BATCH_SIZE else SECONDS_BUCKETS))


def le_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def family_of(name: str) -> str | None:
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in FAMILIES:
            return name[: -len(suffix)]
    return None
