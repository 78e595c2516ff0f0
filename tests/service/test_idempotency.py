"""Idempotency-Key: the same key and request return the first answer (its job), another request with the key is
409, a key in use is 409, keys expire; through the real API on Redis and on the embedded (memory) store."""

from __future__ import annotations

import hashlib
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from service.api import create_app
from service.api.idempotency import IdempotencyMiddleware
from service.contract.settings import Settings

from service_helpers import REDIS_URL, redis_prefix, write_registry  # noqa: F401 - fixture

URL = "http://127.0.0.1:9/v.mp4"  # never fetched: no worker runs here


@pytest.fixture()
def api(redis_prefix, tmp_path):  # noqa: F811
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"],
                        registry_file=write_registry(tmp_path), upload_dir=tmp_path / "up",
                        fetch_allowlist=["127.0.0.1"], idempotency_ttl_s=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def ingest(client: TestClient, key: str | None, url: str = URL):
    return client.post("/v1/videos", json={"url": url}, headers={"Idempotency-Key": key} if key else {})


@pytest.mark.redis
def test_the_same_key_and_request_return_the_first_job_and_another_request_is_409(api) -> None:
    first = ingest(api, "k-1")
    assert first.status_code == 202, first.text
    again = ingest(api, "k-1")
    assert again.status_code == 202 and again.json() == first.json() and again.headers["Location"] == \
        first.headers["Location"] and again.headers["Idempotent-Replayed"] == "true"
    assert ingest(api, None).json()["job_id"] != first.json()["job_id"]  # without a key: a new job each time
    conflict = ingest(api, "k-1", URL + "?other")
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_key_reused"
    other_route = api.post(f"/v1/videos/{'ab' * 32}/moments", json={"url": URL}, headers={"Idempotency-Key": "k-1"})
    assert other_route.status_code == 409
    time.sleep(1.2)  # R2_IDEMPOTENCY_TTL_S=1: the key is forgotten
    assert ingest(api, "k-1").json()["job_id"] != first.json()["job_id"]


@pytest.mark.redis
def test_errors_are_replayed_but_retryable_ones_and_running_requests_are_not(api) -> None:
    bad = api.post("/v1/videos", json={"url": "http://10.0.0.1/v.mp4"}, headers={"Idempotency-Key": "k-2"})
    assert bad.status_code == 422
    assert api.post("/v1/videos", json={"url": "http://10.0.0.1/v.mp4"}, headers={"Idempotency-Key": "k-2"}).headers[
        "Idempotent-Replayed"] == "true"
    gw = api.app.state.gateway
    from service.store.idempotency import RedisIdempotency

    RedisIdempotency(gw.backend.client, gw.backend.keys).reserve(
        hashlib.sha256(hashlib.sha256(b"").digest() + b"k-3").hexdigest(), 60)  # a first request still running
    running = ingest(api, "k-3")
    assert running.status_code == 409 and running.json()["error"]["code"] == "idempotency_in_progress"
    for key in ("", "x" * 300, "\u00e9".encode("latin-1"), b"a\x01b"):
        response = api.post("/v1/videos", json={"url": URL}, headers={"Idempotency-Key": key})
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_idempotency_key"


def test_the_embedded_store_replays_and_a_multipart_form_is_the_same_request_whatever_its_boundary() -> None:
    calls: list[bytes] = []

    async def endpoint(request: Request) -> JSONResponse:
        calls.append(await request.body())
        return JSONResponse({"n": len(calls)}, status_code=202)

    app = Starlette(routes=[Route("/v1/x", endpoint, methods=["POST"])])
    app.state.gateway = SimpleNamespace(backend=SimpleNamespace(client=None, keys=None))  # embedded: no Redis
    app.add_middleware(IdempotencyMiddleware, ttl_s=60, max_body_bytes=1 << 20)
    client = TestClient(app)

    def form(boundary: str, text: str = "hello") -> dict:
        body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n{text}\r\n--{boundary}--\r\n"
        return dict(content=body.encode(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                    "Idempotency-Key": "m-1"})

    assert client.post("/v1/x", **form("b1")).json() == {"n": 1}
    replay = client.post("/v1/x", **form("another-boundary-9f"))
    assert replay.status_code == 202 and replay.json() == {"n": 1} and len(calls) == 1
    assert client.post("/v1/x", **form("b1", "bye")).status_code == 409
    assert client.post("/v1/x", content=b"{}", headers={"Idempotency-Key": "m-2"}).json() == {"n": 2}
