"""``Idempotency-Key`` on POST routes: the same key with the same request returns the first answer; with another
request, 409 (docs/service.md).

A request is the method, the path, the content type and the body's SHA-256 (a multipart body is hashed with
its boundary taken out, so a client re-encoding the same form for a retry sends the same request). Keys are
scoped by the API key that sent them and kept for ``R2_IDEMPOTENCY_TTL_S``. The first answer is stored when it
is final (any status but 401, 429 and 5xx, whose retries should run again) and its body was read to the end; a
repeat while the first request is still running gets 409 ``idempotency_in_progress`` (the reservation of an
API process that died is released after :data:`PENDING_TTL_S`). A replay carries the header
``Idempotent-Replayed: true``. An answer of 202 is replayed as it was (the job it names is the first request's
job).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.store.connect import BACKEND_ERRORS
from service.store.idempotency import PENDING, IdempotencyStore, MemoryIdempotency, RedisIdempotency

HEADER = b"idempotency-key"
MAX_KEY_CHARS = 255
MAX_STORED_BODY = 1 << 20  # answers are small; a larger one is not stored (its key is dropped)
_REPLAYED_HEADERS = {b"content-type", b"location", b"retry-after"}
PENDING_TTL_S = 900  # a reservation whose API process died mid-request is released after this


class _BodyHash:
    """SHA-256 of a body as it streams, with a multipart boundary removed wherever it occurs."""

    def __init__(self, boundary: bytes | None) -> None:
        self.digest = hashlib.sha256()
        self.boundary = boundary
        self.tail = b""
        self.complete = False

    def update(self, chunk: bytes) -> None:
        if not self.boundary:
            self.digest.update(chunk)
            return
        data = (self.tail + chunk).replace(self.boundary, b"")
        keep = len(self.boundary) - 1  # a boundary split over two chunks is completed by the next one
        self.tail = data[-keep:] if keep else b""
        self.digest.update(data[: len(data) - len(self.tail)])

    def hexdigest(self) -> str:
        self.digest.update(self.tail)
        self.tail = b""
        return self.digest.hexdigest()


def _error(status: int, code: str, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return status, [(b"content-type", b"application/json")], json.dumps(
        {"error": {"code": code, "message": message}}).encode()


async def _respond(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class IdempotencyMiddleware:
    """Pure ASGI (the body streams through untouched; uploads are hashed on the way)."""

    def __init__(self, app: ASGIApp, *, ttl_s: int, max_body_bytes: int) -> None:
        self.app, self.ttl_s, self.max_body_bytes = app, ttl_s, max_body_bytes
        self._store: IdempotencyStore | None = None

    def store(self, scope: Scope) -> IdempotencyStore:
        if self._store is None:
            backend = scope["app"].state.gateway.backend
            self._store = (RedisIdempotency(backend.client, backend.keys) if backend.client is not None
                           else MemoryIdempotency())
        return self._store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_key = headers.get(HEADER)
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1")
        if not 1 <= len(key) <= MAX_KEY_CHARS or not key.isprintable() or not key.isascii():
            await _respond(send, *_error(422, "invalid_idempotency_key", f"Idempotency-Key must be 1-{MAX_KEY_CHARS} "
                                         "printable ASCII characters"))
            return
        caller = headers.get(b"x-api-key") or headers.get(b"authorization") or b""
        slot = hashlib.sha256(hashlib.sha256(caller).digest() + raw_key).hexdigest()
        content_type, options = parse_options_header(headers.get(b"content-type", b""))
        boundary = options.get(b"boundary") if content_type == b"multipart/form-data" else None
        body_hash = _BodyHash(b"--" + boundary if boundary else None)
        request = f"{scope['method']} {scope['path']}?{scope.get('query_string', b'').decode('latin-1')} " \
                  f"{content_type.decode('latin-1')}"
        store = self.store(scope)
        try:
            found = await run_in_threadpool(store.reserve, slot, min(self.ttl_s, PENDING_TTL_S))
        except BACKEND_ERRORS as err:
            await _respond(send, *_error(503, "redis_unavailable", f"Redis cannot be reached ({err}); retry later"))
            return
        if found is not None:
            await self._repeat(found, request, body_hash, receive, send)
            return
        await self._first(scope, receive, send, store, slot, request, body_hash)

    async def _repeat(self, found: bytes, request: str, body_hash: _BodyHash, receive: Receive, send: Send) -> None:
        if found == PENDING:
            await _respond(send, *_error(409, "idempotency_in_progress", "a request with this Idempotency-Key is "
                                         "still running; repeat it once that one has answered"))
            return
        stored = json.loads(found)
        received = 0
        while True:  # the body decides between a replay and a conflict: hash it (bounded)
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                await _respond(send, *_error(409, "idempotency_key_reused", "this Idempotency-Key was used for "
                                             "another request; use a new key for a new request"))
                return
            body_hash.update(chunk)
            if not message.get("more_body", False):
                break
        if stored["request"] != request or stored["body"] != body_hash.hexdigest():
            await _respond(send, *_error(409, "idempotency_key_reused", "this Idempotency-Key was used for another "
                                         "request (another route or body); use a new key for a new request"))
            return
        replay = [(bytes(n, "latin-1"), bytes(v, "latin-1")) for n, v in stored["headers"]]
        await _respond(send, stored["status"], [*replay, (b"idempotent-replayed", b"true")],
                       base64.b64decode(stored["answer"]))

    async def _first(self, scope: Scope, receive: Receive, send: Send, store: IdempotencyStore, slot: str,
                     request: str, body_hash: _BodyHash) -> None:
        answer: dict[str, Any] = {"status": 500, "headers": [], "chunks": [], "size": 0}

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body_hash.update(message.get("body", b""))
                if not message.get("more_body", False):
                    body_hash.complete = True
            return message

        async def capturing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", [])
                                     if n.lower() in _REPLAYED_HEADERS]
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                answer["size"] += len(chunk)
                if answer["size"] <= MAX_STORED_BODY:
                    answer["chunks"].append(chunk)
            await send(message)

        try:
            await self.app(scope, hashing_receive, capturing_send)
        finally:
            status = answer["status"]
            final = (status < 500 and status not in (401, 403, 429) and body_hash.complete
                     and answer["size"] <= MAX_STORED_BODY)
            if final:
                stored = json.dumps({"request": request, "body": body_hash.hexdigest(), "status": status,
                                     "headers": answer["headers"],
                                     "answer": base64.b64encode(b"".join(answer["chunks"])).decode()})
                await run_in_threadpool(store.save, slot, stored.encode(), self.ttl_s)
            else:
                await run_in_threadpool(store.drop, slot)
