"""The API's Prometheus metrics: its own request counters, and the workers' shared counters read at scrape time.

Run one uvicorn process per API container (scale with containers): request counters live in the process.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.contract.metrics import (
    CACHE_CORRUPT,
    CACHE_HITS,
    CACHE_MISSES,
    FAMILIES,
    LABEL_RE,
    SAMPLE_RE,
    buckets_of,
    family_of,
    le_label,
)

if TYPE_CHECKING:
    from service.store.backend import Backend

log = logging.getLogger(__name__)


class RequestMetrics:
    """Counts requests by route template, method and status, and times them."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("r2_http_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.seconds = Histogram("r2_http_request_seconds", "HTTP request time by route.", ["route"],
                                 registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.requests.labels(route, scope["method"], str(status)).inc()
            self.seconds.labels(route).observe(time.perf_counter() - started)


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
            raw = backend.records.read_metrics()
            queue_length = backend.jobs.length()
            workers = len(backend.records.live_workers())
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
        buckets: dict[tuple[str, tuple[tuple[str, str], ...]], dict[float, float]] = defaultdict(dict)
        for key, value in sorted(raw.items()):
            match = SAMPLE_RE.match(key)
            family = family_of(match.group("name")) if match else None
            if match is None or family is None:
                continue
            labels = dict(LABEL_RE.findall(match.group("labels") or ""))
            if match.group("name").endswith("_bucket"):  # stored per bucket: made cumulative below
                bound = float(labels.pop("le", "inf"))
                buckets[(family, tuple(sorted(labels.items())))][bound] = value
            else:
                families[family].add_sample(match.group("name"), labels, value)
        for (family, label_items), counts in buckets.items():
            total = 0.0
            for bound in (*buckets_of(family), float("inf")):
                total += counts.get(bound, 0.0)
                families[family].add_sample(f"{family}_bucket", {**dict(label_items), "le": le_label(bound)}, total)
        for name in (CACHE_HITS, CACHE_MISSES, CACHE_CORRUPT):  # always present, 0 before the first job
            counter = families[name[: -len("_total")]]
            if not counter.samples:
                counter.add_sample(name, {}, 0.0)
        yield from (family for family in families.values() if family.samples)
