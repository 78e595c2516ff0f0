"""The service under load: API (uvicorn) + one worker + Redis on loopback, N concurrent HTTP clients.

Starts ``python -m r2tuning serve`` and the service's worker (through :mod:`bench.probe_worker`, which only adds
a timing probe) as subprocesses with a user model registered from files, uploads one video and waits until it
is encoded, then:

* sequential requests (one at a time) give the API overhead: HTTP latency minus the worker's pipeline time
  for that job, split into the part before the worker picked the job up and the part after it finished. They
  are sent with the standard library's client on one keep-alive connection, whose own work per request is a few
  microseconds, so the latency is the service's; the same requests through httpx are reported beside them
  (httpx spends about a millisecond of CPU per request, on the cores the service uses);
* N clients, each sending a fixed number of requests back to back, give requests/s, latency percentiles and
  errors (anything but a 200, including a 202 "still computing" answer, counts as an error).

Every query text is new (no request can be answered from the service's result cache or its text cache), so
each request costs the worker a text encode and an adapter pass. Only 127.0.0.1 is contacted; every loop is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from bench.timing import summary_ms
from service.contract.schemas import JobRecord

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300.0
ENCODE_TIMEOUT_S = 1800.0
REQUEST_TIMEOUT_S = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Proc:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env={**os.environ, **env},
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def _wait(check: Callable[[], Any], timeout_s: float, what: str, procs: list[_Proc]) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if not p.alive():
                raise RuntimeError(f"{p.log_path.name} exited while waiting for {what}:\n{p.tail()}")
        with contextlib.suppress(httpx.HTTPError, OSError):
            value = check()
            if value:
                return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


@contextlib.contextmanager
def service_processes(registry: Path, redis_url: str, prefix: str, folder: Path, device: str,
                      model: str = "bench", workers: int = 1) -> Iterator[tuple[str, list[_Proc]]]:
    port = _free_port()
    env = {"REDIS_URL": redis_url, "R2_KEY_PREFIX": prefix, "R2_MODELS": model, "R2_REGISTRY_FILE": str(registry),
           "R2_DOWNLOAD_WEIGHTS": "false", "R2_DEVICE": device, "R2_MOMENTS_WAIT_S": str(REQUEST_TIMEOUT_S / 2),
           "R2_UPLOAD_DIR": str(folder), "R2_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"}
    procs = [_Proc(["-m", "bench.probe_worker"], {**env, "R2_WORKER_ID": f"bench-worker-{i}"},
                   folder / f"worker-{i}.log") for i in range(workers)]
    api = _Proc(["-m", "r2tuning", "serve", "--host", "127.0.0.1", "--port", str(port)], env, folder / "api.log")
    procs.insert(0, api)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{base}/healthz", timeout=2).status_code == 200, START_TIMEOUT_S, "the API", procs)
        _wait(lambda: (r := httpx.get(f"{base}/readyz", timeout=5)).status_code == 200
              and r.json()["workers"] == workers, START_TIMEOUT_S, f"{workers} ready worker(s)", procs)
        yield base, procs
    finally:
        codes = {p.log_path.name: p.stop() for p in procs}
        if any(c not in (0, -signal.SIGTERM) for c in codes.values()):
            print(f"[bench] service processes exited with {codes}", file=sys.stderr)


def _job_table(client: redis.Redis, prefix: str) -> dict[str, dict[str, Any]]:
    """query text -> job record fields and the probe's pipeline timing."""
    from bench.probe_worker import PIPELINE_KEY
    from service.contract.keys import Keys
    from service.store.records import decode_fields

    keys = Keys(prefix)
    probe = {k.decode(): json.loads(v) for k, v in client.hgetall(PIPELINE_KEY.format(prefix=prefix)).items()}
    out: dict[str, dict[str, Any]] = {}
    for job_id in probe:
        raw = client.hgetall(keys.job(job_id))
        record = JobRecord.model_validate(decode_fields(raw)) if raw else None
        if record is None or not record.result or job_id not in probe:
            continue
        for result in record.result.get("results", []):
            timing = {f"pipeline_{k}": v for k, v in probe[job_id].items()}
            out[result["query"]] = dict(job_id=job_id, created_at=record.created_at, updated_at=record.updated_at,
                                        seconds=record.seconds, **timing)
    return out


def _breakdown(samples: list[dict[str, Any]], jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per request: HTTP latency, worker pipeline time, and what is left (the API + hand-off overhead)."""
    http, worker, overhead, before, after, ground, batch = [], [], [], [], [], [], []
    for s in samples:
        job = jobs.get(s["query"])
        if job is None or s["status"] != 200:
            continue
        w = job["pipeline_end"] - job["pipeline_start"]
        http.append(s["seconds"])
        worker.append(w)
        overhead.append(s["seconds"] - w)
        before.append(job["pipeline_start"] - s["sent_at"])
        after.append(s["received_at"] - job["pipeline_end"])
        ground.append(job["seconds"].get("ground", 0.0))
        batch.append(job["pipeline_batch"])
    if not http:
        return dict(matched=0)
    return dict(matched=len(http), http=summary_ms(http), worker_pipeline=summary_ms(worker),
                model_ground=summary_ms(ground), overhead=summary_ms(overhead),
                before_pickup=summary_ms(before), after_finish=summary_ms(after),
                mean_batch=statistics.fmean(batch))


async def _load(base: str, video_id: str, texts: list[list[str]], timeout_s: float) -> tuple[list[dict], float]:
    """One task per client, each sending its requests back to back; (samples, wall seconds)."""
    samples: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=len(texts), max_keepalive_connections=len(texts))
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as http:
        async def client(queries: list[str]) -> None:
            for q in queries:
                sent, t0 = time.time(), time.perf_counter()
                try:
                    r = await http.post(f"/v1/videos/{video_id}/moments", json={"queries": [q], "top_k": 5})
                    status, ok = r.status_code, r.status_code == 200 and len(r.json()["results"]) == 1
                except (httpx.HTTPError, ValueError, KeyError) as err:
                    status, ok = f"{type(err).__name__}", False
                samples.append(dict(query=q, status=status if ok or status != 200 else "bad body",
                                    seconds=time.perf_counter() - t0, sent_at=sent, received_at=time.time()))

        started = time.perf_counter()
        await asyncio.gather(*(client(qs) for qs in texts))
        return samples, time.perf_counter() - started


def _sequential(base: str, video_id: str, texts: list[str]) -> list[dict[str, Any]]:
    """One request at a time on one keep-alive connection of ``http.client``."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=REQUEST_TIMEOUT_S)
    samples: list[dict[str, Any]] = []
    try:
        for q in texts:
            body = json.dumps({"queries": [q], "top_k": 5}).encode()
            sent, t = time.time(), time.perf_counter()
            conn.request("POST", f"/v1/videos/{video_id}/moments", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            samples.append(dict(query=q, status=response.status, seconds=time.perf_counter() - t, sent_at=sent,
                                received_at=time.time()))
    finally:
        conn.close()
    return samples


def run_service_bench(*, video: Path, registry: Path, redis_url: str, prefix: str, folder: Path, clients: int,
                      requests_per_client: int, sequential: int, queries: Any, device: str,
                      log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    folder = folder / "service"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with service_processes(registry, redis_url, prefix, folder, device) as (base, procs):
        out["start_s"] = time.perf_counter() - started
        http = httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S)
        # Upload once and wait for the worker to encode it (the service's own cold path).
        t0 = time.perf_counter()
        with open(video, "rb") as f:
            r = http.post("/v1/videos", files={"file": (video.name, f, "video/mp4")})
        r.raise_for_status()
        video_id = r.json()["video_id"]
        out["upload_s"] = time.perf_counter() - t0
        status = _wait(lambda: (b := http.get(f"/v1/videos/{video_id}").json())["status"] in ("ready", "failed")
                       and b, ENCODE_TIMEOUT_S, "the video to be encoded", procs)
        if status["status"] != "ready":
            raise RuntimeError(f"the service failed to encode the video: {status}")
        out["upload_to_ready_s"] = time.perf_counter() - t0
        out["video"] = dict(seconds=status["duration"], clips=status["num_clips"])
        log(f"service: video encoded in {out['upload_to_ready_s']:.1f} s after upload")

        # Sequential requests: the API overhead without queueing.
        http.post(f"/v1/videos/{video_id}/moments", json={"queries": queries.new(1)})  # warm-up
        seq = _sequential(base, video_id, queries.new(sequential))
        seq_httpx = []
        for q in queries.new(sequential):
            t = time.perf_counter()
            r = http.post(f"/v1/videos/{video_id}/moments", json={"queries": [q], "top_k": 5})
            seq_httpx.append(dict(status=r.status_code, seconds=time.perf_counter() - t))
        http.close()

        # N concurrent clients.
        texts = [queries.new(requests_per_client) for _ in range(clients)]
        log(f"service: {clients} clients x {requests_per_client} requests")
        samples, wall = asyncio.run(_load(base, video_id, texts, REQUEST_TIMEOUT_S))
        client = redis.Redis.from_url(redis_url, socket_timeout=30)
        try:
            jobs = _job_table(client, prefix)
        finally:
            client.close()
        alive = all(p.alive() for p in procs)

    seq_break = _breakdown(seq, jobs)
    out["sequential"] = dict(requests=len(seq), errors=sum(1 for s in seq if s["status"] != 200),
                             latency=summary_ms([s["seconds"] for s in seq]), breakdown=seq_break,
                             client="http.client, one keep-alive connection",
                             httpx_latency=summary_ms([s["seconds"] for s in seq_httpx if s["status"] == 200]))
    out["overhead"] = dict(p50_ms=seq_break.get("overhead", {}).get("p50_ms"),
                           p95_ms=seq_break.get("overhead", {}).get("p95_ms"),
                           worker_p50_ms=seq_break.get("worker_pipeline", {}).get("p50_ms"),
                           model_p50_ms=seq_break.get("model_ground", {}).get("p50_ms"),
                           before_pickup_p50_ms=seq_break.get("before_pickup", {}).get("p50_ms"),
                           after_finish_p50_ms=seq_break.get("after_finish", {}).get("p50_ms"),
                           http_p50_ms=seq_break.get("http", {}).get("p50_ms"),
                           definition="HTTP latency of one request (no queueing) minus the worker's pipeline time "
                                      "for its job (cache lookup + adapter + post-processing + storing the answer)")
    ok = [s["seconds"] for s in samples if s["status"] == 200]
    codes: dict[str, int] = {}
    for s in samples:
        codes[str(s["status"])] = codes.get(str(s["status"]), 0) + 1
    lat = summary_ms(ok)
    out["load"] = dict(clients=clients, requests=len(samples), requests_per_client=requests_per_client,
                       wall_s=wall, rps=len(samples) / wall if wall else None, errors=len(samples) - len(ok),
                       status_codes=codes, p50_ms=lat["p50_ms"], p95_ms=lat["p95_ms"], p99_ms=lat["p99_ms"],
                       mean_ms=lat["mean_ms"], max_ms=lat["max_ms"], breakdown=_breakdown(samples, jobs),
                       processes_alive_after=alive)
    return out
