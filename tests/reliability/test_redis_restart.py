"""Redis stopped under a running API and worker, then restarted empty on the same port: the API answers 503
with a code (never 500, never a hang) while Redis is gone, and the service recovers by itself (same PIDs):
the worker re-creates its queue group, a new upload is encoded and answered."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
import redis

from tests.reliability.figures import record

from service_helpers import api_process, free_port, make_video, service_env, wait_until, worker_process, write_registry

pytestmark = [pytest.mark.reliability, pytest.mark.redis]

REDIS_TIMEOUT_S = 1.0


class PrivateRedis:
    """A throwaway redis-server on a fixed port that the test can kill and start again (empty: no persistence)."""

    def __init__(self, folder: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
        self.exe, self.folder, self.port = exe, folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.log: BinaryIO | None = None

    def start(self) -> None:
        self.log = open(self.folder / f"redis-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            wait_until(lambda: self.proc.poll() is None and _pings(client), 20, "redis-server", 0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.log is not None:
            self.log.close()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def upload_ready(http: httpx.Client, video: Path) -> str:
    video_id = http.post("/v1/videos", content=video.read_bytes(), headers={"Content-Type": "video/mp4"}).json()[
        "video_id"]
    wait_until(lambda: http.get(f"/v1/videos/{video_id}").json()["status"] == "ready", 90, "the video")
    return video_id


def test_redis_lost_and_restarted_empty_is_503_then_recovery_without_restarts(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    env = service_env(f"r2test-{uuid.uuid4().hex[:10]}", write_registry(tmp_path), redis_timeout_s=REDIS_TIMEOUT_S,
                      upload_dir=tmp_path / "uploads")
    env["REDIS_URL"] = server.url
    video = make_video(tmp_path / "v.mp4", seconds=4, seed=31)
    figures: dict[str, object] = {}
    server.start()
    worker = worker_process(env, tmp_path, "worker")
    try:
        with api_process(env, tmp_path) as (api, base), httpx.Client(base_url=base, timeout=30) as http:
            wait_until(lambda: http.get("/readyz").status_code == 200, 120, "the worker")
            pids = (api.proc.pid, worker.proc.pid)
            video_id = upload_ready(http, video)
            assert http.post(f"/v1/videos/{video_id}/moments", json={"queries": ["before"]}).status_code == 200

            server.kill()
            down: Counter = Counter()
            slowest = 0.0
            for n in range(6):
                for method, path, body in (("GET", f"/v1/videos/{video_id}", None),
                                           ("POST", f"/v1/videos/{video_id}/moments", {"queries": [f"down {n}"]}),
                                           ("POST", "/v1/videos", None), ("GET", "/readyz", None)):
                    started = time.monotonic()
                    if path == "/v1/videos":
                        response = http.post(path, content=b"\0" * 5000, headers={"Content-Type": "video/mp4"})
                    else:
                        response = http.request(method, path, json=body)
                    slowest = max(slowest, time.monotonic() - started)
                    code = response.json()["error"]["code"] if response.status_code >= 400 else "-"
                    down[f"{response.status_code} {code}"] += 1
            assert http.get("/healthz").status_code == 200

            server.start()
            restarted = time.monotonic()
            wait_until(lambda: http.get("/readyz").status_code == 200, 30, "/readyz after the restart", 0.1)
            ready_after = time.monotonic() - restarted
            assert http.get(f"/v1/videos/{video_id}").status_code == 404  # restarted empty: the video is gone
            new_id = upload_ready(http, video)
            answer = http.post(f"/v1/videos/{new_id}/moments", json={"queries": ["after"]})
            recovered_after = time.monotonic() - restarted
            figures = dict(responses_while_down=dict(down), slowest_answer_while_down_s=round(slowest, 2),
                           redis_timeout_s=REDIS_TIMEOUT_S, ready_after_restart_s=round(ready_after, 2),
                           answered_after_restart_s=round(recovered_after, 2))
            assert answer.status_code == 200, answer.text
            assert set(down) <= {"503 redis_unavailable"}, figures
            assert slowest < REDIS_TIMEOUT_S * 3 + 1, figures
            assert (api.proc.pid, worker.proc.pid) == pids and worker.proc.poll() is None
    finally:
        worker.stop()
        server.kill()
        record("redis-restart", **figures)
