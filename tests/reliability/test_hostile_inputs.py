"""The hostile corpus (tests/reliability/hostile_corpus.py) against a real API and one worker: each upload gets
its 4xx or ``failed`` code (never a 5xx, never stuck), the worker process survives every one (same PID), and a
good job queued right behind each hostile one is answered."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.reliability import hostile_corpus
from tests.reliability.figures import record

from service_helpers import (
    REDIS_URL,
    api_process,
    delete_prefix,
    make_video,
    redis_client,
    service_env,
    wait_until,
    worker_process,
    write_registry,
)

pytestmark = [pytest.mark.reliability, pytest.mark.redis]


def wait_terminal(http: httpx.Client, video_id: str) -> dict:
    return wait_until(lambda: (s := http.get(f"/v1/videos/{video_id}").json())["status"] in ("ready", "failed")
                      and s, 90, f"video {video_id} to finish", 0.1)


def test_each_hostile_upload_fails_alone_and_the_job_behind_it_is_answered(tmp_path: Path) -> None:
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = service_env(prefix, write_registry(tmp_path), max_duration_s=600, upload_dir=tmp_path / "uploads",
                      moments_wait_s=60)
    env["REDIS_URL"] = REDIS_URL
    good_video = make_video(tmp_path / "good.mp4", seconds=4, seed=3)
    corpus = hostile_corpus.build(tmp_path, make_video(tmp_path / "source.mp4", seconds=4, seed=4))
    worker = worker_process(env, tmp_path, "worker")
    outcomes: dict[str, str] = {}
    behind: list[float] = []
    survived = 0  # hostile cases after which the worker still ran with the same PID
    try:
        with api_process(env, tmp_path) as (_, base), httpx.Client(base_url=base, timeout=90) as http:
            wait_until(lambda: http.get("/readyz").status_code == 200, 120, "the worker")
            pid = worker.proc.pid
            with open(good_video, "rb") as f:
                good_id = http.post("/v1/videos", files={"file": ("good.mp4", f, "video/mp4")}).json()["video_id"]
            assert wait_terminal(http, good_id)["status"] == "ready"
            for n, hostile in enumerate(corpus):
                response = http.post("/v1/videos", files={"file": (hostile.filename, hostile.data,
                                                                   hostile.content_type)})
                assert response.status_code < 500, (hostile.name, response.text)
                # the good job, queued behind the hostile one on the only worker
                started = time.monotonic()
                answer = http.post(f"/v1/videos/{good_id}/moments", json={"queries": [f"behind case {n}"]})
                assert answer.status_code == 200, (hostile.name, answer.text)
                behind.append(time.monotonic() - started)
                if response.status_code >= 400:
                    outcomes[hostile.name] = f"{response.status_code} {response.json()['error']['code']}"
                else:
                    status = wait_terminal(http, response.json()["video_id"])
                    error = status["error"]
                    outcomes[hostile.name] = error["code"] if error else status["status"]
                    if error:
                        assert len(error["message"]) < 500 and "/tmp" not in error["message"], error
                assert worker.proc.poll() is None and worker.proc.pid == pid, f"the worker died on {hostile.name}"
                survived += 1
            assert http.get("/readyz").status_code == 200
    finally:
        worker.stop()
        client = redis_client()
        delete_prefix(client, prefix)
        client.close()
        record("hostile-inputs", cases=len(corpus), outcomes=outcomes, worker_survived=survived,
               good_job_behind_max_s=round(max(behind, default=0), 2))
    assert not Path("/tmp/r2-evil.mp4").exists()
    assert outcomes == {h.name: h.expect for h in corpus}
