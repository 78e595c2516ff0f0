"""A tiny HTTP server on 127.0.0.1 for the tests of outbound calls (webhook receivers, videos fetched by URL).

Each test gives a function ``answer(handler)`` that writes the response through the standard library's
``BaseHTTPRequestHandler`` (``send_response``, ``wfile``...), so a test can also misbehave on purpose: lie
about the length, stall, drop the connection. Every request is recorded (method, path, headers, body).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class LocalServer:
    url: str
    requests: list[Seen] = field(default_factory=list)


@contextlib.contextmanager
def local_server(answer: Callable[[Any], None]) -> Iterator[LocalServer]:
    """Serve ``answer`` on a free port of 127.0.0.1 while the block runs."""
    state: dict[str, LocalServer] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            return None

        def _handle(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            self.seen_body = body
            state["server"].requests.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            try:
                answer(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = _handle  # noqa: N815 - the standard library's names

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state["server"] = LocalServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state["server"]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def send(handler: Any, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    """A well-formed answer."""
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)
