"""Regression tests of the worker's hardening (issue 8, defects 3, 6, 8), with the API and one worker in this
process against the real Redis: a failed video's bytes leave Redis at once, its error names no scratch file,
and a killed worker's stale scratch folder is swept when a worker starts."""

from __future__ import annotations

import os
import time

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.keys import Keys
from service.contract.settings import Settings

from service_helpers import (
    REDIS_URL,
    redis_client,
    redis_prefix,  # noqa: F401 - fixture
    wait_until,
    worker_thread,
    write_registry,
)


@pytest.mark.redis
def test_a_failed_video_leaves_no_bytes_in_redis_no_scratch_names_and_stale_scratch_is_swept(
        redis_prefix, tmp_path) -> None:  # noqa: F811
    uploads = tmp_path / "uploads"
    stale = uploads / "r2-worker-killed-1234-abcdef"  # what a SIGKILLed worker left behind
    stale.mkdir(parents=True)
    (stale / f"{'ef' * 32}-0123abcd.video").write_bytes(b"\0" * 1000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"],
                        registry_file=write_registry(tmp_path), upload_dir=uploads, heartbeat_interval_s=0.2,
                        heartbeat_ttl_s=1, visibility_timeout_s=0.5, moments_wait_s=30, chunk_bytes=4096)
    client = redis_client()
    with TestClient(create_app(settings)) as api:
        response = api.post("/v1/videos", content=os.urandom(50_000), headers={"Content-Type": "video/mp4"})
        assert response.status_code == 202, response.text
        video_id = response.json()["video_id"]
        assert client.exists(Keys(redis_prefix).blob(video_id))  # stored while it waits for a worker
        assert api.get(f"/v1/videos/{video_id}").json()["status"] == "queued"
        with worker_thread(settings) as worker:
            wait_until(lambda: worker.scratch.is_dir(), 30, "the worker to start")
            assert not stale.exists(), "the stale scratch folder of a dead worker was not swept at start"
            status = wait_until(lambda: (b := api.get(f"/v1/videos/{video_id}").json())["status"] == "failed" and b,
                                60, "the video to fail")
            message = status["error"]["message"]
            assert status["error"]["code"] == "not_a_video", status
            assert ".video" not in message and "r2-worker" not in message and video_id not in message, message
            assert not client.exists(Keys(redis_prefix).blob(video_id)), "a failed video's bytes stayed in Redis"
