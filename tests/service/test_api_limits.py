"""One test per status of the API's limits and bad input (413, 422, 404, 409, 202, 429, 503, 401).

The API runs in this process (TestClient) against the real Redis; no worker is needed for these, except where
a worker's heartbeat is written by hand. Video-content limits (duration, resolution, corrupt files: 422) need a
worker and are in test_service_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.schemas import WorkerInfo, WorkerModel
from service.contract.settings import Settings

from service_helpers import (  # noqa: F401 - fixtures
    REDIS_URL,
    fixture_video,
    free_port,
    make_video,
    redis_prefix,
    write_registry,
)

VIDEO_ID = "ab" * 32



def upload(client: TestClient, path: Path, **data) -> object:
    with open(path, "rb") as f:
        return client.post("/v1/videos", files={"file": (path.name, f, "video/mp4")}, data=data)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


# ---------------------------------------------------------------------------------------------------- 413


@pytest.mark.redis
def test_413_upload_over_the_limit(make_client, tmp_path) -> None:
    client = make_client(max_upload_bytes=4096)
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 20_000)
    assert_error(upload(client, big), 413, "upload_too_large")
    # A declared Content-Length far over the limit is refused before the body is read.
    assert_error(client.post("/v1/videos", content=b"\0" * (2 << 20), headers={"Content-Type": "video/mp4"}),
                 413, "upload_too_large")
    assert not list((tmp_path / "uploads").glob("*")), "scratch files left behind"


@pytest.mark.redis
def test_413_chunked_upload_cannot_bypass_the_limit(make_client, tmp_path) -> None:
    client = make_client(max_upload_bytes=4096)

    def body() -> Iterator[bytes]:  # a generator body is sent without Content-Length
        for _ in range(100):
            yield b"\0" * 1000

    response = client.post("/v1/videos", content=body(), headers={"Content-Type": "application/octet-stream"})
    assert_error(response, 413, "upload_too_large")

    def multipart() -> Iterator[bytes]:
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="v.mp4"\r\n\r\n'
        for _ in range(100):
            yield b"\1" * 1000
        yield b"\r\n--XyZ--\r\n"

    response = client.post("/v1/videos", content=multipart(),
                           headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert_error(response, 413, "upload_too_large")
    assert not list((tmp_path / "uploads").glob("*"))


# ---------------------------------------------------------------------------------------------------- 422


@pytest.mark.redis
def test_422_malformed_json_and_bad_fields(make_client) -> None:
    client = make_client()
    url = f"/v1/videos/{VIDEO_ID}/moments"
    assert_error(client.post(url, content=b'{"queries": ["a"', headers={"Content-Type": "application/json"}),
                 422, "malformed_json")
    assert_error(client.post(url, json={"queries": "not a list"}), 422, "invalid_request")
    assert_error(client.post(url, json={"queries": ["a"], "top_k": 0}), 422, "invalid_request")
    assert_error(client.post(url, json={"queries": ["a"], "surprise": 1}), 422, "invalid_request")


@pytest.mark.redis
def test_422_empty_overlong_and_too_many_queries(make_client) -> None:
    client = make_client(max_query_chars=20, max_queries=3)
    url = f"/v1/videos/{VIDEO_ID}/moments"
    assert_error(client.post(url, json={"queries": []}), 422, "empty_query")
    assert_error(client.post(url, json={"queries": ["ok", "   "]}), 422, "empty_query")
    assert_error(client.post(url, json={"queries": ["x" * 21]}), 422, "query_too_long")
    assert_error(client.post(url, json={"queries": ["a", "b", "c", "d"]}), 422, "too_many_queries")
    assert_error(client.post(f"/v1/videos/{VIDEO_ID}/summary", json={"query": ""}), 422, "empty_query")
    # the one-shot route checks its form fields the same way
    with open(fixture_video(), "rb") as f:
        response = client.post("/v1/ground", files={"file": ("v.mp4", f, "video/mp4")}, data={"query": "x" * 50})
    assert_error(response, 422, "query_too_long")
    with open(fixture_video(), "rb") as f:
        response = client.post("/v1/ground", files={"file": ("v.mp4", f, "video/mp4")})
    assert_error(response, 422, "empty_query")


@pytest.mark.redis
def test_422_bad_upload_bodies(make_client, tmp_path) -> None:
    client = make_client()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert_error(upload(client, empty), 422, "empty_video")
    assert_error(client.post("/v1/videos", data={"model": "tiny"}, files={"other": ("x", b"1")}), 422,
                 "invalid_upload")
    assert_error(client.post("/v1/videos", content=b"--XyZ\r\ngarbage",
                             headers={"Content-Type": "multipart/form-data; boundary=XyZ"}), 422, "invalid_upload")


# ---------------------------------------------------------------------------------------------------- 404


@pytest.mark.redis
def test_404_unknown_model(make_client) -> None:
    client = make_client()
    error = assert_error(client.post(f"/v1/videos/{VIDEO_ID}/moments", json={"queries": ["a"], "model": "nope"}),
                         404, "unknown_model")
    assert "tiny" in error["message"]  # says what is served
    assert_error(upload(client, fixture_video(), model="nope"), 404, "unknown_model")


@pytest.mark.redis
def test_404_unknown_video(make_client) -> None:
    client = make_client()
    assert_error(client.get(f"/v1/videos/{VIDEO_ID}"), 404, "unknown_video")
    assert_error(client.get("/v1/videos/not-a-hash"), 404, "unknown_video")
    assert_error(client.delete(f"/v1/videos/{VIDEO_ID}"), 404, "unknown_video")
    assert_error(client.post(f"/v1/videos/{VIDEO_ID}/moments", json={"queries": ["a"]}), 404, "unknown_video")
    assert_error(client.post(f"/v1/videos/{VIDEO_ID}/highlights", json={"query": "a"}), 404, "unknown_video")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")


# ---------------------------------------------------------------------------------------------------- 409 / 202


@pytest.mark.redis
def test_409_while_the_video_is_encoding(make_client) -> None:
    client = make_client()  # no worker: the video stays queued
    video_id = upload(client, fixture_video()).json()["video_id"]
    started = time.monotonic()
    response = client.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a dog"]})
    assert_error(response, 409, "video_not_ready")
    assert time.monotonic() - started >= 0.3  # it waited R2_MOMENTS_WAIT_S first
    assert int(response.headers["Retry-After"]) >= 1


@pytest.mark.redis
def test_202_when_the_answer_takes_longer_and_repeats_join_the_same_job(make_client) -> None:
    client = make_client()
    video_id = upload(client, fixture_video()).json()["video_id"]
    client.app.state.gateway.backend.records.update_video(video_id, status="ready")  # as if a worker had encoded it
    first = client.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a dog"]})
    assert first.status_code == 202, first.text
    assert first.headers["Retry-After"] == str(first.json()["retry_after"])
    assert first.json()["status"] == "queued" and first.json()["video_id"] == video_id
    again = client.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a dog"]})
    assert again.status_code == 202 and again.json()["job_id"] == first.json()["job_id"]
    assert client.app.state.gateway.backend.jobs.length() == 2  # the encode job and one ground job


# ---------------------------------------------------------------------------------------------------- 429


@pytest.mark.redis
def test_429_with_retry_after_when_the_queue_is_full(make_client, tmp_path) -> None:
    client = make_client(max_queue_length=1, queue_full_retry_after_s=7)
    assert upload(client, fixture_video()).status_code == 202
    other = make_video(tmp_path / "other.mp4", seconds=2)
    response = upload(client, other)
    assert_error(response, 429, "queue_full")
    assert response.headers["Retry-After"] == "7"
    with open(other, "rb") as f:
        response = client.post("/v1/ground", files={"file": ("o.mp4", f, "video/mp4")}, data={"query": "a"})
    assert_error(response, 429, "queue_full")
    assert_error(client.get(f"/v1/videos/{'cd' * 32}"), 404, "unknown_video")  # the refused video left nothing


# ---------------------------------------------------------------------------------------------------- 503


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_503_fast_when_redis_is_down(tmp_path, cluster) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(redis_url=closed, redis_cluster=cluster, models=["tiny"],
                        registry_file=write_registry(tmp_path), upload_dir=tmp_path)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        for method, url, kwargs in [
            ("GET", f"/v1/videos/{VIDEO_ID}", {}),
            ("POST", f"/v1/videos/{VIDEO_ID}/moments", {"json": {"queries": ["a"]}}),
            ("POST", "/v1/videos", {"files": {"file": ("v.mp4", b"\0" * 100, "video/mp4")}}),
            ("GET", "/v1/models", {}),
            ("GET", "/readyz", {}),
        ]:
            started = time.monotonic()
            response = client.request(method, url, **kwargs)
            assert time.monotonic() - started < 3, f"{url} hung"
            assert_error(response, 503, "redis_unavailable")
        metrics = client.get("/metrics")
        assert metrics.status_code == 200 and "r2_backend_up 0.0" in metrics.text


@pytest.mark.redis
def test_503_naming_missing_weights_reported_by_workers(make_client) -> None:
    client = make_client()
    state = client.app.state.gateway.backend.records
    missing = "/models/checkpoints/e2e_tiny_r2.pth"
    how = f"Checkpoint for model 'tiny' is not available. Put the file back at {missing}"
    state.heartbeat(WorkerInfo(worker_id="w1", host="h", pid=1, device="cpu", started_at=0, seen_at=0,
                               models={"tiny": WorkerModel(loaded=False, missing_files=[missing], message=how)}), 30)
    error = assert_error(client.get("/readyz"), 503, "weights_missing")
    assert missing in error["message"] and "Put the file back" in error["message"]
    error = assert_error(client.post(f"/v1/videos/{VIDEO_ID}/moments", json={"queries": ["a"]}), 404,
                         "unknown_video")
    video_id = upload(client, fixture_video()).json()["video_id"]
    state.update_video(video_id, status="ready")
    error = assert_error(client.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a"]}), 503,
                         "weights_missing")
    assert missing in error["message"]
    models = client.get("/v1/models").json()["models"]
    assert models[0]["loaded"] is False and models[0]["missing_files"] == [missing]


@pytest.mark.redis
def test_503_readyz_without_a_live_worker(make_client) -> None:
    assert_error(make_client().get("/readyz"), 503, "no_worker")


# ---------------------------------------------------------------------------------------------------- 401


@pytest.mark.redis
def test_401_without_the_api_key_on_every_route_but_health(make_client) -> None:
    key = "k" * 24
    client = make_client(api_keys=[key], public_docs=False)
    for method, url in [("GET", "/v1/models"), ("GET", f"/v1/videos/{VIDEO_ID}"), ("POST", "/v1/videos"),
                        ("DELETE", f"/v1/videos/{VIDEO_ID}"), ("POST", f"/v1/videos/{VIDEO_ID}/moments"),
                        ("POST", "/v1/ground"), ("GET", "/metrics")]:
        response = client.request(method, url)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong-key-wrong-key"}), 401,
                 "unauthorized")
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/models", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503  # no worker, but not 401
    assert client.get("/openapi.json").status_code == 404  # docs off when keys are required and not public


def test_openapi_documents_errors_and_examples(tmp_path) -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", models=["tiny"],
                              registry_file=write_registry(tmp_path)))
    schema = app.openapi()
    moments = schema["paths"]["/v1/videos/{video_id}/moments"]["post"]["responses"]
    assert {"200", "202", "404", "409", "422", "429", "503"} <= set(moments)
    upload_route = schema["paths"]["/v1/videos"]["post"]
    assert "multipart/form-data" in upload_route["requestBody"]["content"]
    assert {"413", "429"} <= set(upload_route["responses"])
    assert schema["components"]["schemas"]["MomentsRequest"]["examples"]
