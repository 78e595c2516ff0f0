"""Shared pieces of the service tests: the real Redis, the tiny model, test videos, API/worker subprocesses.

Tests that need Redis use the database named by ``R2_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/15``)
and a unique key prefix per test, and delete only their own keys. Redis being down fails them (CI starts it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from fixture_sets import fixture_path, read_listing

REPO_ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("R2_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except redis.ConnectionError as err:  # fail, never skip: CI starts Redis
        pytest.fail(f"Redis at {REDIS_URL} (R2_TEST_REDIS_URL) does not answer: {err}")
    return client


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix in the test database; its keys are deleted afterwards."""
    client = redis_client()
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    yield prefix
    delete_prefix(client, prefix)
    client.close()


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


# ---------------------------------------------------------------------------------------------------- the model


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
    return grounder.ground(features, queries, duration=info.duration, top_k=top_k)


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


def service_env(prefix: str, registry: Path, **overrides: Any) -> dict[str, str]:
    """Environment of API and worker subprocesses for the tiny model (fast heartbeats and take-over)."""
    env = {
        "REDIS_URL": REDIS_URL, "R2_KEY_PREFIX": prefix, "R2_MODELS": "tiny", "R2_REGISTRY_FILE": str(registry),
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
