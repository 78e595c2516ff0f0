"""Regression tests of the API's hardening (issue 8, defects 1, 4, 5) against a real ``r2tuning serve``
(uvicorn) process: what only a real server and real sockets show (RSS, read timeouts, closed connections, the
event loop staying free). One API process serves the whole module; no worker is needed."""

from __future__ import annotations

import json
import os
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from service_helpers import (
    REDIS_URL,
    api_process,
    delete_prefix,
    redis_client,
    service_env,
    write_registry,
)

TIMEOUT_S = 1.0  # the API's header and body read timeouts in this module
MiB = 1 << 20
UPLOADS, UPLOAD_BYTES = 32, 2 * MiB
# Memory one upload in flight may hold in the API: its Redis pipeline batch (at most 1 MiB of chunks, see
# test_hardening_store.py), the 1 MiB read buffer of the scratch file, and the body pieces being received
# (64 KiB each): under 3 MiB, so 32 of them under 96 MiB, plus allocator slack: 160 MiB. Before the fix a
# pipeline held up to 64 MiB per upload (the issue measured +55 MiB per concurrent 70 MiB upload).
RSS_BOUND = 160 * MiB


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[tuple[str, int, Path]]:
    """(base URL, API pid, upload dir) of one API process with short read timeouts."""
    folder = tmp_path_factory.mktemp("hardening")
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = service_env(prefix, write_registry(folder), header_timeout_s=TIMEOUT_S, body_timeout_s=TIMEOUT_S,
                      chunk_bytes=256 * 1024 - 64, upload_dir=folder / "uploads")
    env["REDIS_URL"] = REDIS_URL
    try:
        with api_process(env, folder) as (proc, base):
            yield base, proc.proc.pid, folder / "uploads"
    finally:
        client = redis_client()
        delete_prefix(client, prefix)
        client.close()


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def read_until_closed(sock: socket.socket, within_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails if it is still open after ``within_s``."""
    sock.settimeout(within_s)
    data = bytearray()
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return bytes(data)
        if not piece:
            return bytes(data)
        data += piece
    raise AssertionError(f"the server kept the connection open for {within_s} s; it sent {bytes(data[:200])!r}")


# ---------------------------------------------------------------------------------------------------- defect 5


@pytest.mark.redis
def test_after_a_413_the_connection_is_closed_and_the_body_no_longer_read(api) -> None:
    base, _, _ = api
    sock = connect(base)
    with sock:
        sock.sendall(b"POST /v1/videos/" + b"ab" * 32 + b"/moments HTTP/1.1\r\nHost: t\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n" + b"[" * 65536)
        reply = read_until_closed(sock, 5)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 413") and b"connection: close" in head, reply[:300]


@pytest.mark.redis
def test_a_request_head_that_does_not_arrive_in_time_is_closed_with_408(api) -> None:
    base, _, _ = api
    started = time.monotonic()
    with connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")  # the head never ends
        reply = read_until_closed(sock, TIMEOUT_S + 4)
    assert reply.startswith(b"HTTP/1.1 408") and b"header_timeout" in reply, reply
    assert time.monotonic() - started >= TIMEOUT_S * 0.9
    with connect(base) as sock:  # a connection that sends nothing at all
        assert read_until_closed(sock, TIMEOUT_S + 4).startswith(b"HTTP/1.1 408")


@pytest.mark.redis
def test_a_body_that_stalls_gets_408_and_the_connection_closed(api) -> None:
    base, _, upload_dir = api
    with connect(base) as sock:
        sock.sendall(b"POST /v1/videos HTTP/1.1\r\nHost: t\r\nContent-Type: video/mp4\r\n"
                     b"Content-Length: 100000\r\n\r\n" + b"\0" * 1000)  # then nothing
        reply = read_until_closed(sock, TIMEOUT_S + 4)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b"connection: close" in head.lower(), reply[:300]
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert not list(upload_dir.glob("*.part")), "the stalled upload's scratch file was left behind"


# ---------------------------------------------------------------------------------------------------- defect 1


@pytest.mark.redis
def test_healthz_stays_fast_while_huge_json_bodies_arrive(api) -> None:
    base, _, _ = api
    body = json.dumps({"queries": ["x"], **{f"k{i}": i for i in range(150_000)}}).encode()  # ~2 MiB of keys
    url = f"{base}/v1/videos/{'ab' * 32}/moments"
    statuses: list[int] = []

    def send() -> None:
        statuses.append(httpx.post(url, content=body, headers={"Content-Type": "application/json"},
                                   timeout=60).status_code)

    senders = [threading.Thread(target=send) for _ in range(2)]
    for t in senders:
        t.start()
    latencies = []
    with httpx.Client(timeout=30) as client:
        while any(t.is_alive() for t in senders) or len(latencies) < 20:
            started = time.perf_counter()
            assert client.get(f"{base}/healthz").status_code == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)
    for t in senders:
        t.join()
    assert statuses == [413] * 2
    print(f"/healthz during 2 x 2 MiB JSON bodies: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms over {len(latencies)}")
    assert max(latencies) < 1.0, latencies


# ---------------------------------------------------------------------------------------------------- defect 4


@pytest.mark.redis
def test_api_rss_stays_bounded_under_32_concurrent_uploads(api) -> None:
    base, pid, _ = api
    process = psutil.Process(pid)
    with httpx.Client(timeout=60) as client:  # one upload first: what every upload needs is loaded
        assert client.post(f"{base}/v1/videos", content=os.urandom(UPLOAD_BYTES),
                           headers={"Content-Type": "video/mp4"}).status_code == 202
    baseline = process.memory_info().rss
    peak, done = baseline, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    statuses: list[int] = []

    def upload(payload: bytes) -> None:
        statuses.append(httpx.post(f"{base}/v1/videos", content=payload, headers={"Content-Type": "video/mp4"},
                                   timeout=120).status_code)

    payloads = [os.urandom(UPLOAD_BYTES) for _ in range(UPLOADS)]
    sampler = threading.Thread(target=sample)
    sampler.start()
    uploaders = [threading.Thread(target=upload, args=(p,)) for p in payloads]
    for t in uploaders:
        t.start()
    for t in uploaders:
        t.join()
    done.set()
    sampler.join()
    assert statuses == [202] * UPLOADS
    print(f"API RSS: {baseline / MiB:.0f} MiB before, peak {peak / MiB:.0f} MiB (+{(peak - baseline) / MiB:.0f}) "
          f"during {UPLOADS} concurrent {UPLOAD_BYTES // MiB} MiB uploads")
    assert peak - baseline < RSS_BOUND
