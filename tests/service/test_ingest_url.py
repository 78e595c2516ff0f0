"""Ingest by URL: the worker's download (limits, allowlist on every hop, resume) against a local HTTP server on
127.0.0.1 (allowed explicitly), and the API's answers for a JSON ``{"url"}`` upload."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from local_http import local_server, send

from service.contract.errors import ServiceError
from service.contract.settings import Settings
from service.worker.fetch import Fetcher

from service_helpers import REDIS_URL, redis_prefix, write_registry  # noqa: F401 - fixture

BODY = os.urandom(300_000)


def fetcher(**overrides) -> Fetcher:
    return Fetcher(Settings(**{"fetch_allowlist": ["127.0.0.1"], "max_upload_bytes": 1 << 20, "fetch_stall_s": 0.5,
                               "fetch_timeout_s": 20, **overrides}))


def failure(tmp_path: Path, url: str, **overrides) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        fetcher(**overrides).fetch(url, tmp_path / "v.part")
    return caught.value


def test_a_video_is_fetched_through_an_allowed_redirect_and_named_by_its_hash(tmp_path) -> None:
    def answer(h) -> None:
        if h.path == "/old":
            send(h, 302, headers={"Location": "/video.mp4"})
        else:
            send(h, 200, BODY, {"Accept-Ranges": "bytes"})

    with local_server(answer) as server:
        size, sha256 = fetcher().fetch(f"{server.url}/old", tmp_path / "v.part")
    assert (size, sha256) == (len(BODY), hashlib.sha256(BODY).hexdigest())
    assert (tmp_path / "v.part").read_bytes() == BODY
    assert [r.path for r in server.requests] == ["/old", "/video.mp4"]


def test_a_redirect_into_a_forbidden_address_is_refused_before_connecting(tmp_path) -> None:
    for target in ("http://10.1.2.3/v.mp4", "http://169.254.169.254/latest", "http://localhost:1/v.mp4"):
        with local_server(lambda h, t=target: send(h, 307, headers={"Location": t})) as server:
            err = failure(tmp_path, f"{server.url}/v.mp4")
        assert err.code == "url_not_allowed" and err.status == 422, err.message
        assert "redirect" in err.message
    with local_server(lambda h: send(h, 302, headers={"Location": h.path + "x"})) as server:
        assert failure(tmp_path, f"{server.url}/v").code == "too_many_redirects"


def test_too_big_is_refused_whatever_the_server_says_about_the_length(tmp_path) -> None:
    def announces_too_much(h) -> None:
        send(h, 200, b"x" * 1000, {"Content-Length": str(10 << 20)})
        h.close_connection = True

    def announces_nothing(h) -> None:  # read until close: only the byte count stops it
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(40):
            h.wfile.write(b"y" * 65536)
        h.close_connection = True

    for answer in (announces_too_much, announces_nothing):
        with local_server(answer) as server:
            err = failure(tmp_path, f"{server.url}/v.mp4")
        assert err.status == 413 and "R2_MAX_UPLOAD_BYTES" in err.message
        assert not (tmp_path / "v.part").exists() or (tmp_path / "v.part").stat().st_size <= 1 << 20


def test_a_server_that_sends_less_than_it_announced_without_ranges_fails(tmp_path) -> None:
    def lies(h) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(BODY)))
        h.end_headers()
        h.wfile.write(BODY[:1000])
        h.close_connection = True

    with local_server(lies) as server:
        err = failure(tmp_path, f"{server.url}/v.mp4")
    assert err.code == "fetch_incomplete" and "1000 bytes" in err.message


def test_a_dropped_download_resumes_with_a_range_request(tmp_path) -> None:
    def ranges(h) -> None:
        wanted = h.headers.get("Range")
        if wanted is None:  # the first answer breaks off half way
            h.send_response(200)
            for name, value in (("Content-Length", str(len(BODY))), ("Accept-Ranges", "bytes"), ("ETag", '"v1"')):
                h.send_header(name, value)
            h.end_headers()
            h.wfile.write(BODY[: len(BODY) // 2])
            h.close_connection = True
            return
        start = int(wanted.split("=")[1].rstrip("-"))
        send(h, 206, BODY[start:], {"Content-Range": f"bytes {start}-{len(BODY) - 1}/{len(BODY)}"})

    with local_server(ranges) as server:
        size, sha256 = fetcher().fetch(f"{server.url}/v.mp4", tmp_path / "v.part")
    assert (size, sha256) == (len(BODY), hashlib.sha256(BODY).hexdigest())
    second = server.requests[1].headers
    assert second["Range"] == f"bytes={len(BODY) // 2}-" and second["If-Range"] == '"v1"'


def test_a_stalled_server_is_cut_off(tmp_path) -> None:
    def stalls(h) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(BODY)))
        h.end_headers()
        h.wfile.write(BODY[:100])
        h.wfile.flush()
        time.sleep(1.5)

    with local_server(stalls) as server:
        started = time.monotonic()
        err = failure(tmp_path, f"{server.url}/v.mp4", fetch_stall_s=0.3)
    assert err.code == "fetch_stalled" and time.monotonic() - started < 1.4
    with local_server(lambda h: send(h, 404, b"no")) as server:
        assert failure(tmp_path, f"{server.url}/v.mp4").code == "fetch_failed"


def test_a_failed_fetch_fails_its_job_and_its_receiver_hears_video_failed(tmp_path) -> None:
    from service.contract.schemas import Job, JobKind, JobRecord, Status
    from service.contract.webhooks import event_body
    from service.store.backend import open_backend
    from service.worker.fetch import FetchRunner

    settings = Settings(fetch_allowlist=["127.0.0.1"], upload_dir=tmp_path, webhook_secret="s")
    backend = open_backend(settings)  # embedded: memory
    try:
        with local_server(lambda h: send(h, 404, b"gone")) as server:
            job = Job(job_id="f1", kind=JobKind.fetch, video_id="", model="tiny", url=f"{server.url}/v.mp4")
            backend.jobs.submit(job, 60)
            backend.jobs.add_callback("f1", f"{server.url}/hook", 60)
            taken = backend.jobs.take("w", 1, 1)
            backend.jobs.begin("w", taken)
            FetchRunner(settings, backend, "w", tmp_path / "scratch").run(taken[0])
        record = backend.jobs.get("f1")
        assert isinstance(record, JobRecord) and record.status == Status.failed and record.error_code == "fetch_failed"
        (hook,) = backend.jobs.due_hooks(30, 10)
        event = json.loads(event_body(hook))
        assert event["type"] == "video.failed" and event["error"]["code"] == "fetch_failed"
        assert list((tmp_path / "scratch").iterdir()) == []  # the partial download is gone
    finally:
        backend.close()


@pytest.mark.redis
def test_the_api_queues_a_fetch_and_reports_it(redis_prefix, tmp_path) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    from service.api import create_app

    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"],
                        registry_file=write_registry(tmp_path), upload_dir=tmp_path, fetch_allowlist=["127.0.0.1"])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.post("/v1/videos", json={"url": "http://127.0.0.1:9/v.mp4"})
        assert response.status_code == 202, response.text
        status = client.get(response.headers["Location"]).json()
        assert (status["status"], status["url"], status["video_id"]) == ("queued", "http://127.0.0.1:9/v.mp4", None)
        for body, code in ((b"{", "invalid_request"), (b'{"url": "http://127.0.0.1/", "extra": 1}', "invalid_request"),
                           (b"{}", "invalid_request"), (b'{"url": "http://127.0.0.1/", "model": "nope"}',
                                                         "unknown_model")):
            bad = client.post("/v1/videos", content=body, headers={"Content-Type": "application/json"})
            assert bad.status_code in (404, 422) and bad.json()["error"]["code"] == code, bad.text
        big = client.post("/v1/videos", content=b'{"url": "' + b"a" * 20000 + b'"}',
                          headers={"Content-Type": "application/json"})
        assert big.status_code == 413
