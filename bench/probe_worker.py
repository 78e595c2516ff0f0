"""``python -m bench.probe_worker``: the service's own worker, with one timing probe added.

It wraps ``service.worker.pipeline.Pipeline.run`` (the whole per-batch pipeline: cache lookup, adapter,
post-processing, storing the answers) and records, for every job it handled, the wall-clock start and end of
that call in the Redis hash ``{R2_KEY_PREFIX}:bench:pipeline`` (job id -> JSON). The load test reads it to split a
request's HTTP latency into queue hand-off, worker time and the API's own part. Nothing else changes.
"""

from __future__ import annotations

import functools
import json
import os
import time

import redis

from service.worker import main as worker_main
from service.worker import pipeline

PIPELINE_KEY = "{prefix}:bench:pipeline"


def _install() -> None:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    key = PIPELINE_KEY.format(prefix=os.environ.get("R2_KEY_PREFIX", "r2"))
    original = pipeline.Pipeline.run

    @functools.wraps(original)
    def run(self, *args, **kwargs):
        deliveries = kwargs.get("deliveries")
        if deliveries is None:
            deliveries = next((a for a in args if isinstance(a, list)), [])
        start = time.time()
        try:
            return original(self, *args, **kwargs)
        finally:
            end = time.time()
            ids = [d.job.job_id for d in deliveries if getattr(d, "job", None) is not None]
            if ids:
                value = json.dumps(dict(start=start, end=end, batch=len(ids)))
                client.hset(key, mapping={job_id: value for job_id in ids})

    pipeline.Pipeline.run = run  # type: ignore[method-assign]


if __name__ == "__main__":
    _install()
    raise SystemExit(worker_main.main())
