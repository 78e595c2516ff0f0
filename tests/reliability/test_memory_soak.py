"""A memory soak with a negative control: the same check (RSS growth of the API over a few hundred mixed
requests, after a warm-up) runs against the real API and against a deliberately leaking variant of it
(tests/reliability/soak_app.py --leak). The real one must stay under the bound, and the leaking one must be
caught by it: a check that could not fail would prove nothing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from tests.reliability.figures import record

from service_helpers import (
    REDIS_URL,
    REPO_ROOT,
    Proc,
    delete_prefix,
    free_port,
    redis_client,
    service_env,
    wait_until,
    write_registry,
)

pytestmark = [pytest.mark.reliability, pytest.mark.redis]

MiB = 1 << 20
WARMUP, REQUESTS = 200, 600
GROWTH_BOUND = 16 * MiB  # over REQUESTS requests once warm; the leaking variant keeps 75 MiB over them


def mixed_requests(http: httpx.Client, n: int) -> None:
    """What clients do all day: health checks, uploads, queries on unknown videos, bad requests."""
    for i in range(n):
        match i % 5:
            case 0:
                assert http.get("/healthz").status_code == 200
            case 1:
                assert http.post("/v1/videos", content=os.urandom(8192) + i.to_bytes(4, "big"),
                                 headers={"Content-Type": "video/mp4"}).status_code == 202
            case 2:
                assert http.post(f"/v1/videos/{os.urandom(32).hex()}/moments",
                                 json={"queries": [f"query {i}"]}).status_code == 404
            case 3:
                assert http.post(f"/v1/videos/{'ab' * 32}/moments", json={"queries": "x" * 300}).status_code == 422
            case 4:
                assert http.get(f"/v1/videos/{os.urandom(32).hex()}").status_code == 404


def soak(base: str, pid: int) -> float:
    """RSS growth (bytes) of the API over ``REQUESTS`` mixed requests after ``WARMUP`` of them."""
    process = psutil.Process(pid)
    with httpx.Client(base_url=base, timeout=30) as http:
        mixed_requests(http, WARMUP)
        before = process.memory_info().rss
        mixed_requests(http, REQUESTS)
        return process.memory_info().rss - before


@pytest.mark.parametrize("variant", ["service", "leaking control"])
def test_memory_soak_passes_the_service_and_catches_a_leak(variant: str, tmp_path: Path) -> None:
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = {**service_env(prefix, write_registry(tmp_path), upload_dir=tmp_path / "uploads", log_level="warning",
                         max_stored_results=100), "REDIS_URL": REDIS_URL}
    port = free_port()
    args = [str(REPO_ROOT / "tests" / "reliability" / "soak_app.py"), "--port", str(port)]
    api = Proc(args + (["--leak"] if variant == "leaking control" else []), env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: api.proc.poll() is None and httpx.get(f"{base}/healthz").status_code == 200, 60,
                   f"the API (log: {api.log_path})")
        growth = soak(base, api.proc.pid)
    finally:
        api.stop()
        client = redis_client()
        delete_prefix(client, prefix)
        client.close()
    caught = growth >= GROWTH_BOUND
    record(f"memory-soak-{variant.replace(' ', '-')}", requests=REQUESTS, warmup=WARMUP,
           rss_growth_mib=round(growth / MiB, 1), bound_mib=GROWTH_BOUND // MiB, leak_caught=caught)
    if variant == "service":
        assert not caught, f"the API grew {growth / MiB:.1f} MiB over {REQUESTS} requests"
    else:
        assert caught, f"the check missed a leak of 75 MiB: growth {growth / MiB:.1f} MiB"
