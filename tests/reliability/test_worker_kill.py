"""A worker SIGKILLed under load (two workers): every job the API accepted is finished exactly once, every
client gets its answer, and the job the dead worker held is taken over within the visibility timeout.

The API and the workers run as ``tests/ledger_service.py`` (the ledger of accepted and finished jobs kept
outside Redis, as in tests/service/test_failover.py); the load mixes new queries and new videos, so the victim
is likely in the middle of a decode when it dies."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from service.contract.keys import Keys
from tests.reliability.figures import record

from ledger_service import read_ledger
from service_helpers import (
    REDIS_URL,
    REPO_ROOT,
    Proc,
    delete_prefix,
    fixture_video,
    free_port,
    make_video,
    redis_client,
    service_env,
    wait_until,
    write_registry,
)

pytestmark = [pytest.mark.reliability, pytest.mark.redis]

VISIBILITY_TIMEOUT_S = 2.0
CLIENTS = 3
LOAD_BEFORE_S, LOAD_AFTER_S = 3.0, 5.0


def ledger_process(role: str, env: dict[str, str], folder: Path, name: str, *extra: str) -> Proc:
    return Proc([str(REPO_ROOT / "tests" / "ledger_service.py"), role, *extra], env, folder / f"{name}.log")


class Load:
    """Clients asking new queries, and one client uploading new videos; each repeats until answered."""

    def __init__(self, base: str, video_id: str, videos: list[Path]) -> None:
        self.base, self.video_id, self.videos = base, video_id, videos
        self.stop = threading.Event()
        self.done: list[tuple[float, float, str]] = []  # (sent, answered, what)
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def _finish(self, sent: float, what: str) -> None:
        with self._lock:
            self.done.append((sent, time.monotonic(), what))

    def queries(self, client: int) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                sent, body = time.monotonic(), {"queries": [f"client {client} query {n}"]}
                while (status := http.post(f"/v1/videos/{self.video_id}/moments", json=body).status_code) == 202:
                    time.sleep(0.05)
                if status != 200:
                    self.errors.append(f"query: {status}")
                self._finish(sent, "query")

    def uploads(self) -> None:
        with httpx.Client(base_url=self.base, timeout=60) as http:
            for video in self.videos:
                if self.stop.is_set():
                    return
                sent = time.monotonic()
                response = http.post("/v1/videos", content=video.read_bytes(), headers={"Content-Type": "video/mp4"})
                video_id = response.json()["video_id"]
                status = wait_until(lambda v=video_id: (s := http.get(f"/v1/videos/{v}").json()["status"])
                                    in ("ready", "failed") and s, 60, "an uploaded video", 0.05)
                if status != "ready":
                    self.errors.append(f"video: {status}")
                self._finish(sent, "video")


def test_a_worker_killed_under_load_loses_no_job_and_answers_none_twice(tmp_path: Path) -> None:
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    env = {**service_env(prefix, write_registry(tmp_path), visibility_timeout_s=VISIBILITY_TIMEOUT_S,
                         upload_dir=tmp_path / "uploads"), "LEDGER_DIR": str(ledger), "REDIS_URL": REDIS_URL}
    videos = [make_video(tmp_path / f"v{i}.mp4", seconds=4, seed=20 + i) for i in range(8)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = ledger_process("serve", env, tmp_path, "api", "--host", "127.0.0.1", "--port", str(port))
    workers = {name: ledger_process("worker", {**env, "R2_WORKER_ID": name}, tmp_path, name) for name in ("w1", "w2")}
    figures: dict[str, object] = {"reached": "start"}  # how far a failing run got, for its report
    try:
        http = httpx.Client(base_url=base, timeout=60)
        wait_until(lambda: http.get("/readyz").json().get("workers") == 2, 240, "two workers", 0.3)
        with open(fixture_video(), "rb") as f:
            video_id = http.post("/v1/videos", files={"file": ("v.mp4", f, "video/mp4")}).json()["video_id"]
        wait_until(lambda: http.get(f"/v1/videos/{video_id}").json()["status"] == "ready", 90, "the video")

        figures["reached"] = "load"
        load = Load(base, video_id, videos)
        threads = [threading.Thread(target=load.queries, args=(i,), daemon=True) for i in range(CLIENTS)]
        threads.append(threading.Thread(target=load.uploads, daemon=True))
        for thread in threads:
            thread.start()
        time.sleep(LOAD_BEFORE_S)
        workers["w1"].kill()
        killed_at = time.monotonic()
        time.sleep(LOAD_AFTER_S)
        load.stop.set()
        for thread in threads:
            thread.join(90)

        figures.update(reached="settling", client_errors=load.errors[:5])
        keys, redis_jobs = Keys(prefix), redis_client()

        def unfinished() -> set[str]:
            """Accepted jobs no ledger saw finished and whose record is not done either (the victim may have
            finished one in Redis and died before writing its ledger line: its client got the answer)."""
            accepted, finished = read_ledger(ledger)
            return {j for j in accepted - set(finished)
                    if redis_jobs.hget(keys.job(j), "status") not in (b'"ready"', b'"failed"')}

        wait_until(lambda: not unfinished(), 30, "the last jobs", 0.2)
        accepted, finished = read_ledger(ledger)
        in_flight = [answered - killed_at for sent, answered, _ in load.done if sent < killed_at < answered]
        figures = dict(workers=2, clients=CLIENTS + 1, answered=len(load.done), accepted_jobs=len(accepted),
                       lost_jobs=len(unfinished()),
                       finished_unlogged=len(accepted - set(finished)),
                       answered_twice=sum(n > 1 for n in finished.values()),
                       in_flight_at_kill=len(in_flight), visibility_timeout_s=VISIBILITY_TIMEOUT_S,
                       takeover_s=round(max(in_flight, default=0.0), 2), client_errors=load.errors[:5])
        assert not load.errors, load.errors
        assert figures["lost_jobs"] == 0 and figures["answered_twice"] == 0, figures
        assert all(not t.is_alive() for t in threads), "a client is still waiting for its answer"
        assert figures["takeover_s"] < VISIBILITY_TIMEOUT_S + 6, figures  # timeout + a reclaim round + the job
        assert workers["w2"].proc.poll() is None and http.get("/readyz").status_code == 200
        http.close()
    finally:
        for proc in (*workers.values(), api):
            proc.stop()
        client = redis_client()
        delete_prefix(client, prefix)
        client.close()
        record("worker-kill", **figures)
