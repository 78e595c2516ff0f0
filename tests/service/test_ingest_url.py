"""Ingest by URL: the worker's download (limits, allowlist on every hop, resume) against a local HTTP server on
127.0.0.1 (allowed explicitly), and the API's answers for a JSON ``{"url"}`` upload."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from local_http import local_server, send

from service.contract.errors import ServiceError
from service.contract.settings import Settings
from service.worker.fetch import Fetcher

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
