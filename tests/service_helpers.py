"""Shared pieces of the service tests: the real Redis, the tiny model, test videos, API/worker subprocesses.

Tests that need Redis use the database named by ``R2_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``)
and a unique key prefix per test, and delete only their own keys. Redis being down fails them (CI starts it).
Tests that run on a Redis Cluster too take the ``redis_target`` fixture (``single`` and ``cluster``); the
cluster is the 6-node one ``.ci/redis-cluster start`` runs on loopback (``R2_TEST_REDIS_CLUSTER_URL``, default
``redis://127.0.0.1:7000``); it being down fails them too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fixture_sets import fixture_path, read_listing

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("R2_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CLUSTER_URL = os.environ.get("R2_TEST_REDIS_CLUSTER_URL", "redis://127.0.0.1:7000")


@dataclass(frozen=True)
class RedisTarget:
    """Where a test's Redis is: the single server or the cluster."""

    name: str
    url: str
    cluster: bool

    def settings(self) -> dict[str, Any]:
        """``Settings`` fields that point the service at this Redis."""
        return dict(redis_url=self.url, redis_cluster=self.cluster)

    def env(self) -> dict[str, str]:
        """The same as environment variables of a subprocess."""
        return {"REDIS_URL": self.url, "R2_REDIS_CLUSTER": "1" if self.cluster else "0"}

    def __str__(self) -> str:
        return self.name


SINGLE = RedisTarget("single", REDIS_URL, False)
CLUSTER = RedisTarget("cluster", CLUSTER_URL, True)
_used: set[RedisTarget] = set()  # what the running test connected to (its keys are deleted there)
_clients: list[Any] = []  # every client redis_client() made (tests/conftest.py closes a test's own after it)


def redis_client(target: RedisTarget = SINGLE) -> Any:
    """A client of the test Redis (``redis.Redis``, or ``redis.RedisCluster`` for the cluster)."""
    options = dict(socket_connect_timeout=3, socket_timeout=10)
    try:
        if target.cluster:
            client: Any = redis.RedisCluster.from_url(target.url, **options)
        else:
            client = redis.Redis.from_url(target.url, **options)
        client.ping()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as err:  # fail, never skip: CI starts it
        variable = "R2_TEST_REDIS_CLUSTER_URL; start it with .ci/redis-cluster start" if target.cluster else \
            "R2_TEST_REDIS_URL"
        pytest.fail(f"Redis {target.name} at {target.url} ({variable}) does not answer: {err}")
    _used.add(target)
    _clients.append(client)
    return client


def close_clients(since: int = 0) -> None:
    """Close the clients made since ``len(_clients)`` was ``since`` (a cluster client left open warns)."""
    while len(_clients) > since:
        _clients.pop().close()


def clients_made() -> int:
    return len(_clients)


@pytest.fixture(params=[SINGLE, CLUSTER], ids=str)
def redis_target(request) -> RedisTarget:
    """Run the test on the single Redis and on the Redis Cluster."""
    return request.param


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix in the test database (and the cluster, when the test used it); its keys are deleted
    afterwards."""
    _used.clear()
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    yield prefix
    for target in list(_used) or [SINGLE]:
        client = redis_client(target)
        delete_prefix(client, prefix)
        client.close()


def delete_prefix(client: Any, prefix: str) -> None:
    """Delete every key of a prefix (SCAN: fine in a test, never on the service's serving path)."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


# ---------------------------------------------------------------------------------------------------- the model


@contextlib.contextmanager
def worker_thread(settings: Any) -> Iterator[Any]:
    """A worker (``service.worker.loop.Worker``) running in a thread of this process; stopped and joined after."""
    import threading

    from service.worker.loop import Worker

    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive()


def tiny_model_paths() -> tuple[Path, Path]:
    """(R2 checkpoint, CLIP file) of the fixtures' end-to-end tiny model, from its listing."""
    listing = read_listing("e2e_tiny", "cases.json")
    r2 = fixture_path("e2e_tiny", listing["checkpoint"])
    return r2, (r2.parent / listing["clip"]).resolve()


def write_registry(folder: Path, name: str = "tiny", **extra: Any) -> Path:
    """A model registry file naming the tiny fixture model (as a user would register their own)."""
    r2, clip = tiny_model_paths()
    entry = {"name": name, "checkpoint_path": str(r2), "clip_path": str(clip), "clip": "tiny", "fps": 0.5,
             "unit": 2.0, **extra}
    path = folder / "models.json"
    path.write_text(json.dumps({"models": [entry]}))
    return path


def direct_answers(registry: Path, name: str, video: Path, queries: list[str], top_k: int = 10,
                   preprocess: str | None = None) -> list:
    """What the engine itself answers (the reference for the service's answers), with frames made by
    ``preprocess`` (default: the model's pipeline)."""
    from models import zoo
    from models.engine import Grounder

    zoo.load_registry_file(registry, overwrite=True)
    grounder = Grounder.from_spec(zoo.get_model(name)).variant(preprocess=preprocess)
    info, features = grounder.encode_file(video, timeout_s=120)
    return grounder.ground(features, queries, duration=info.duration, top_k=top_k,
                           clip_times=info.player_clip_times())


def assert_same_answers(service_results: list[dict], engine_results: list) -> None:
    assert len(service_results) == len(engine_results)
    for got, want in zip(service_results, engine_results, strict=True):
        assert got["query"] == want.query
        assert got["clip_seconds"] == pytest.approx(want.clip_seconds)
        assert got["duration"] == pytest.approx(want.duration)
        assert got["saliency"] == pytest.approx(want.saliency, abs=1e-5)
        assert len(got["moments"]) == len(want.moments)
        for m, (s, e, c) in zip(got["moments"], want.moments, strict=True):
            assert (m["start"], m["end"], m["score"]) == pytest.approx((s, e, c), abs=1e-4)
            assert (m["start"], m["end"], m["score"]) == (round(m["start"], 4), round(m["end"], 4),
                                                          round(m["score"], 6))  # no float32 noise
        assert got["clip_times"] == pytest.approx(want.clip_times, abs=1e-6)  # each clip's real time


def sample_features(shape: tuple[int, ...] = (2, 3, 5, 64), seed: int = 1) -> Any:
    """A small, deterministic feature-cache entry (``CachedFeatures``)."""
    from service.store.features import CachedFeatures

    count = 1
    for d in shape:
        count *= d
    data = bytes((i * seed * 31 + 7) % 251 for i in range(count * 2))
    video = dict(num_frames=90, avg_fps=15.0, width=160, height=120, duration=6.0)
    return CachedFeatures("float16", shape, data, video)


# ---------------------------------------------------------------------------------------------------- videos


def fixture_video() -> Path:
    """The smallest real mp4 of the fixture set (from its listing)."""
    listing = read_listing("preprocess", "preprocess.json")
    paths = [fixture_path("preprocess", v["file"]) for v in listing["videos"]]
    return min(paths, key=lambda p: p.stat().st_size)


def make_video(path: Path, seconds: float, fps: int = 5, size: tuple[int, int] = (160, 120), seed: int = 0) -> Path:
    """A small H.264 mp4 with moving content, written with PyAV."""
    import av
    import numpy as np

    width, height = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.roll(base, shift=i * 3, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def corrupt_video(path: Path, source: Path) -> Path:
    """An mp4 whose header survives but whose data is garbage after the first kilobytes."""
    data = bytearray(source.read_bytes())
    cut = min(len(data) // 3, 2048)
    data[cut:] = bytes((i * 7 + 13) % 256 for i in range(len(data) - cut))
    path.write_bytes(bytes(data))
    return path


# ---------------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class Proc:
    """A service process (API or worker) with its log file, stopped at the end of the test."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        self.proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crashed or OOM-killed worker)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def service_env(prefix: str, registry: Path, *, target: RedisTarget = SINGLE, **overrides: Any) -> dict[str, str]:
    """Environment of API and worker subprocesses for the tiny model (fast heartbeats and take-over)."""
    env = {
        **target.env(), "R2_KEY_PREFIX": prefix, "R2_MODELS": "tiny", "R2_REGISTRY_FILE": str(registry),
        "R2_HEARTBEAT_INTERVAL_S": "0.5", "R2_HEARTBEAT_TTL_S": "3", "R2_VISIBILITY_TIMEOUT_S": "2",
        "R2_CHUNK_BYTES": "4096", "R2_MOMENTS_WAIT_S": "60", "R2_GROUND_WAIT_S": "60", "R2_LOG_LEVEL": "info",
        "OMP_NUM_THREADS": "1", "R2_DOWNLOAD_WEIGHTS": "false",
    }
    env.update({f"R2_{k.upper()}": str(v) for k, v in overrides.items()})
    return env


@contextlib.contextmanager
def api_process(env: dict[str, str], folder: Path, name: str = "api") -> Iterator[tuple[Proc, str]]:
    """``r2tuning serve`` on a free port; yields (process, base URL)."""
    port = free_port()
    proc = Proc(["-m", "r2tuning", "serve", "--host", "127.0.0.1", "--port", str(port)], env,
                folder / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.proc.poll() is None and httpx.get(f"{base}/healthz", timeout=2).status_code == 200,
                   60, f"the API to start (log: {proc.log_path})")
        yield proc, base
    finally:
        proc.stop()


def worker_process(env: dict[str, str], folder: Path, name: str, *, delay_s: float | None = None,
                   **overrides: Any) -> Proc:
    """``r2tuning worker`` with extra settings; with ``delay_s``, one that sleeps before decoding each video
    (``tests/slow_worker.py``), so a test can kill it in the middle of a job."""
    extra = {f"R2_{k.upper()}": str(v) for k, v in overrides.items()}
    if delay_s is None:
        return Proc(["-m", "r2tuning", "worker"], {**env, "R2_WORKER_ID": name, **extra}, folder / f"{name}.log")
    return Proc([str(REPO_ROOT / "tests" / "slow_worker.py")],
                {**env, "R2_WORKER_ID": name, "SLOW_WORKER_DELAY_S": str(delay_s), **extra}, folder / f"{name}.log")


@contextlib.contextmanager
def redis_server(folder: Path, *args: str) -> Iterator[str]:
    """A throwaway ``redis-server`` on a free port with extra options (e.g. ``--maxmemory``); yields its URL.
    Debian's redis-server must be installed (``.ci/run`` does it); missing, the test fails."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = open(folder / f"redis-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder), *args], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        wait_until(lambda: proc.poll() is None and _pings(client), 20, f"redis-server on port {port}")
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    for line in text.splitlines():
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return 0.0


def post_chunked(base: str, path: str, chunks: Iterator[bytes], content_type: str) -> tuple[int, dict, bytes]:
    """POST with ``Transfer-Encoding: chunked`` (no Content-Length); (status, headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        try:
            conn.request("POST", path, body=chunks, headers={"Content-Type": content_type}, encode_chunked=True)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before we finished sending: read its answer
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()
