"""The media tests' service: two models on the tiny fixture weights (different frame rates, so different
features), with the worker in this process, on the embedded backend or on the real Redis."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.settings import Settings

from service_helpers import REDIS_URL, delete_prefix, make_video, redis_client, tiny_model_paths, wait_until

MODELS = ("tiny", "tiny-fast")
FAST = dict(heartbeat_interval_s=0.2, heartbeat_ttl_s=1, visibility_timeout_s=5, moments_wait_s=30,
            ground_wait_s=60, chunk_bytes=4096)


def write_two_models(folder: Path) -> Path:
    r2, clip = tiny_model_paths()
    common = {"checkpoint_path": str(r2), "clip_path": str(clip), "clip": "tiny", "unit": 2.0}
    path = folder / "models.json"
    path.write_text(json.dumps({"models": [{"name": "tiny", "fps": 0.5, **common},
                                           {"name": "tiny-fast", "fps": 1.0, **common}]}))
    return path


@contextlib.contextmanager
def media_service(kind: str, folder: Path) -> Iterator[TestClient]:
    """The API (TestClient) with a worker: ``embedded`` (memory backend, the app's own worker thread) or
    ``redis`` (the test Redis under a fresh prefix, a worker thread of its own)."""
    registry = write_two_models(folder)
    prefix = f"r2test-media-{uuid.uuid4().hex[:8]}"
    base = dict(models=list(MODELS), registry_file=registry, upload_dir=folder / "up", key_prefix=prefix, **FAST)
    if kind == "embedded":
        settings = Settings(redis_url=None, **base)
        with TestClient(create_app(settings)) as api:
            wait_until(lambda: api.get("/readyz").status_code == 200, 120, "the embedded worker")
            yield api
        return
    from service.worker.loop import Worker

    settings = Settings(redis_url=REDIS_URL, **base)
    client = redis_client()
    try:
        with TestClient(create_app(settings)) as api:
            worker = Worker(settings)
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            try:
                wait_until(lambda: api.get("/readyz").status_code == 200, 120, "a ready worker")
                yield api
            finally:
                worker.stop()
                thread.join(30)
    finally:
        delete_prefix(client, prefix)


def videos(folder: Path, count: int, seconds: float = 12) -> list[Path]:
    """Distinct small mp4s (10 fps, so a clip of the tiny model holds 20 frames)."""
    return [make_video(folder / f"v{i}.mp4", seconds, fps=10, seed=i) for i in range(count)]


def upload(api: TestClient, path: Path, model: str | None = None, raw: bool = False) -> dict:
    if raw:
        response = api.post("/v1/videos", content=path.read_bytes(), params={"model": model} if model else None,
                            headers={"Content-Type": "application/octet-stream"})
    else:
        with open(path, "rb") as f:
            response = api.post("/v1/videos", files={"file": (path.name, f, "video/mp4")},
                                data={"model": model} if model else None)
    assert response.status_code in (200, 202), response.text
    return response.json()


def wait_until_finished(api: TestClient, video_id: str, model: str | None = None) -> dict:
    def done() -> dict | None:
        body = api.get(f"/v1/videos/{video_id}", params={"model": model} if model else None).json()
        return body if body.get("status") in ("ready", "failed") else None

    body: dict = wait_until(done, 90, f"video {video_id[:8]} encoded for {model or 'its model'}")
    return body


def wait_ready(api: TestClient, video_id: str, model: str | None = None) -> dict:
    body = wait_until_finished(api, video_id, model)
    assert body["status"] == "ready", body
    return body


def until_200(api: TestClient, path: str, body: dict) -> dict:
    """Repeat a request until it is answered (the 409/202 policy)."""
    def answered() -> dict | None:
        response = api.post(path, json=body)
        assert response.status_code in (200, 202, 409), response.text
        return response.json() if response.status_code == 200 else None

    return wait_until(answered, 90, f"an answer from {path}", interval_s=0.2)
