"""Read timeouts: a slow client cannot hold a connection (and its memory) open.

Two limits from the settings. ``R2_HEADER_TIMEOUT_S``: uvicorn waits for a request head as long as the client
likes, so :func:`header_timeout_protocol` makes its HTTP protocol close a connection whose request line and
headers are not complete in time (after a ``408``). ``R2_BODY_TIMEOUT_S``: :class:`BodyTimeout` (ASGI middleware)
bounds each wait for the next piece of a request body; past it the route's read raises :class:`BodyReadTimeout`,
answered 408 with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.contract.errors import ServiceError

_TIMEOUT_BODY = b'{"error":{"code":"header_timeout","message":"the request head took too long to arrive"}}'
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class BodyReadTimeout(ServiceError):
    status, code = 408, "body_timeout"


def header_timeout_protocol(timeout_s: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing connections that send no complete request head in ``timeout_s``."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.write(_TIMEOUT_RESPONSE)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()  # a connection that sends nothing at all

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._disarm()  # idle keep-alive connections are uvicorn's timeout_keep_alive's
            super().on_response_complete()

    return HeaderTimeoutProtocol


class BodyTimeout:
    """Each wait for a piece of the request body is bounded by ``timeout_s`` (not the whole body: a large upload
    on a slow but steady link is fine)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def bounded_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body only a disconnect can come: no limit on waiting for it
                return await receive()
            try:
                async with asyncio.timeout(self.timeout_s):  # unlike wait_for, no task (and loop turn) per piece
                    message: dict[str, Any] = dict(await receive())
            except TimeoutError:
                raise BodyReadTimeout(f"no part of the request body arrived for {self.timeout_s:g} s "
                                      "(R2_BODY_TIMEOUT_S); the connection is closed") from None
            if message.get("type") != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, bounded_receive, send)
