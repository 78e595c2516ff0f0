"""Training over the API (embedded mode): POST /v1/models/{name}/train on uploaded videos, progress in the status,
queries answered while it trains, the trained model served at once; the limits and errors of the route."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from bench.marked_dataset import make_marked_dataset
from service.api import create_app
from service.contract.settings import Settings

from service_helpers import wait_until, write_registry

FAST = dict(heartbeat_interval_s=0.2, heartbeat_ttl_s=1, visibility_timeout_s=0.5, moments_wait_s=60,
            ground_wait_s=60, chunk_bytes=4096)


def upload(client: TestClient, path) -> str:
    with open(path, "rb") as f:
        response = client.post("/v1/videos", files={"file": (path.name, f, "video/mp4")}, data={"model": "tiny"})
    assert response.status_code in (200, 202), response.text
    return response.json()["video_id"]


@pytest.mark.slow
def test_train_on_uploaded_videos_then_serve_the_model(tmp_path) -> None:
    data = make_marked_dataset(tmp_path / "data", num_videos=8, val_videos=2, seconds=20.0)
    settings = Settings(redis_url=None, models=["tiny"], registry_file=write_registry(tmp_path),
                        upload_dir=tmp_path / "up", training_dir=tmp_path / "trained", train_threads=1,
                        api_keys=["k" * 16], **FAST)
    auth = {"Authorization": "Bearer " + "k" * 16}
    with TestClient(create_app(settings), headers=auth) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 90, "the embedded worker")
        ids = {f"v{i:03d}": upload(client, data.videos / f"v{i:03d}.mp4") for i in range(8)}
        for video_id in ids.values():
            wait_until(lambda v=video_id: client.get(f"/v1/videos/{v}").json()["status"] == "ready", 120, "encoding")
        body = dict(annotations=data.train.read_text(), val_annotations=data.val.read_text(), videos=ids,
                    base_model="tiny", epochs=4, batch_size=4, lr=1e-3, warmup_iters=5)
        assert client.post("/v1/models/marked/train", json=body, headers={"Authorization": ""}).status_code == 401
        response = client.post("/v1/models/marked/train", json=body)
        assert response.status_code == 202, response.text
        status = response.json()
        assert status["status"] == "queued" and status["base_model"] == "tiny" and status["model"] == "marked"
        url = response.headers["Location"]
        assert url == f"/v1/models/marked/train/{status['job_id']}"

        # While it trains, queries on the base model are answered.
        seen, answered = set(), 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = client.get(url).json()
            seen.add(status["stage"])
            if status["status"] in ("ready", "failed"):
                break
            if status["stage"] == "training":
                answer = client.post(f"/v1/videos/{ids['v000']}/moments", json={"queries": ["a red square"]})
                assert answer.status_code == 200, answer.text
                answered += 1
            time.sleep(0.2)
        assert status["status"] == "ready", status
        assert status["progress"] == 1.0 and status["epoch"] == 4 and status["iterations"] == status["iteration"]
        assert status["initial_metrics"] and status["metrics"] and "MR-full-R1@0.5" in status["metrics"]
        assert status["result"]["model"] == "marked" and status["result"]["epochs"] == 4
        assert "training" in seen and answered >= 1

        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert models["marked"]["loaded"] is True and models["marked"]["outputs"] == "moments+saliency"
        answer = client.post(f"/v1/videos/{ids['v007']}/moments",
                             json={"queries": ["a red square appears"], "model": "marked"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "marked" and answer.json()["results"][0]["moments"]
    trained = tmp_path / "trained" / "marked"
    entry = json.loads((trained / "model.json").read_text())["models"][0]
    assert entry["name"] == "marked" and (trained / entry["checkpoint_path"]).is_file()


def test_training_requests_are_checked_before_they_are_queued(tmp_path) -> None:
    settings = Settings(redis_url=None, models=["tiny"], registry_file=write_registry(tmp_path),
                        upload_dir=tmp_path / "up", training_dir=tmp_path / "trained", train_max_epochs=10,
                        train_max_annotation_bytes=2048, train_max_seconds=60, **FAST)
    line = json.dumps(dict(qid=0, vid="a" * 64, query="q", duration=10, relevant_windows=[[0, 2]])) + "\n"
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 90, "the embedded worker")

        def post(name: str, **body: object) -> tuple[int, str]:
            response = client.post(f"/v1/models/{name}/train", json={"annotations": line, **body})
            return response.status_code, response.json().get("error", {}).get("code", "")

        assert post("tiny") == (409, "model_exists")
        assert post("bad name!") == (422, "invalid_model_name")
        assert post("mine", epochs=11) == (422, "too_many_epochs")
        assert post("mine", max_seconds=61) == (422, "training_too_long")
        assert post("mine", annotations="x" * 3000) == (413, "annotations_too_large")
        assert post("mine", base_model="nope") == (404, "unknown_model")
        assert post("mine", videos={"v": "b" * 64}) == (404, "unknown_video")
        assert post("mine", surprise=1)[0] == 422
        assert client.get("/v1/models/mine/train/" + "0" * 32).status_code == 404

        # A video that was never uploaded fails the job (the worker checks the annotations) with a clear error.
        response = client.post("/v1/models/mine/train", json={"annotations": line, "base_model": "tiny"})
        assert response.status_code == 202
        url = response.headers["Location"]
        status = wait_until(lambda: (s := client.get(url).json())["status"] in ("ready", "failed") and s, 60,
                            "the training job to fail")
        assert status["status"] == "failed" and status["error"]["code"] == "video_not_ready"
        assert "upload it with model=tiny" in status["error"]["message"]
        response = client.post("/v1/models/mine/train", json={"annotations": "{broken", "base_model": "tiny"})
        status = wait_until(lambda: (s := client.get(response.headers["Location"]).json())["status"] == "failed"
                            and s, 60, "the job to fail")
        assert status["error"]["code"] == "bad_annotations"
