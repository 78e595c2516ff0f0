"""Reading a JSON request body: bounded before it is parsed, large ones parsed and validated off the event loop.

FastAPI's own body parameters read the whole body whatever its size and parse and validate it in the event
loop (a body of 10^6 keys blocked every other request for seconds). Here the body is cut off with 413 as
soon as it passes the route's limit (Content-Length or the bytes actually streamed, so a chunked body cannot
bypass it), then pydantic parses and validates it in one step (in the thread pool unless the body is small),
and the 422 names a bounded number of problems. Pydantic's parser refuses invalid UTF-8, lone surrogates and
deep nesting: each gets a 422 saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from service.contract.errors import InvalidRequest, PayloadTooLarge
from service.contract.settings import Settings

M = TypeVar("M", bound=BaseModel)

# Bodies up to this size are parsed on the event loop: pydantic-core takes microseconds for them, less than the
# trip to the thread pool, which every warm query would otherwise pay. Larger ones still go to the pool.
INLINE_PARSE_BYTES = 16 * 1024
MAX_PROBLEMS = 10  # validation problems named in one 422 (the count of the others is given)
_LOC_CHARS = 40  # a field name (or key) echoed in a 422 is cut to this


def too_large(limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"the JSON body is larger than the limit of {limit} bytes ({setting})",
                           code="body_too_large")


async def read_body(request: Request, limit: int, setting: str) -> bytes:
    """The whole body, or 413 as soon as it passes ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large(limit, setting)  # refused before reading a byte
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large(limit, setting)
    except ClientDisconnect:
        raise InvalidRequest("the client disconnected while sending the body", code="upload_incomplete") from None
    return bytes(body)


def json_problem(message: str) -> InvalidRequest:
    """422 for a body that is not JSON, saying what is wrong with it."""
    if "surrogate" in message or "hex escape" in message:
        what = ("a string contains a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is no text; send "
                "valid Unicode (surrogates only in pairs)")
    elif "unicode code point" in message or "utf-8" in message.lower():
        what = "the body is not valid UTF-8"
    elif "recursion limit" in message:
        what = "the JSON is nested too deeply"
    else:
        what = message.removeprefix("Invalid JSON: ")[:200]
    return InvalidRequest(f"the request body is not valid JSON: {what}", code="malformed_json")


def problems_message(err: ValidationError) -> str:
    """``field: what is wrong`` for the first :data:`MAX_PROBLEMS` problems, then how many more there are."""
    problems = err.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for p in problems[:MAX_PROBLEMS]:
        where = ".".join(str(x)[:_LOC_CHARS] for x in p.get("loc", ())) or "body"
        parts.append(f"{where}: {p.get('msg')}")
    more = len(problems) - MAX_PROBLEMS
    return "; ".join(parts) + (f"; and {more} more problems" if more > 0 else "")


def validate_json(model: type[M], body: bytes) -> M:
    """Parse and validate in one step (pydantic's parser); 422 with a bounded message."""
    if not body.strip():
        raise InvalidRequest("the request body is empty: send a JSON object", code="malformed_json")
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        first = err.errors(include_url=False, include_input=False)[0]
        if first.get("type") == "json_invalid":
            raise json_problem(str(first.get("msg", ""))) from None
        raise InvalidRequest(problems_message(err), code="invalid_request") from None


def json_body(model: type[M], limit: Callable[[Settings], tuple[int, str]]) -> Any:
    """A route parameter that is ``model`` read from the JSON body under ``limit(settings)`` (bytes, setting name).

    Use as ``body: Annotated[Model, json_body(Model, ...)]``; the route declares the body in its OpenAPI with
    :func:`json_request_body`.
    """

    async def read(request: Request) -> M:
        return await read_json(request, model, limit)

    return Depends(read)


async def read_json(request: Request, model: type[M], limit: Callable[[Settings], tuple[int, str]]) -> M:
    """``model`` read from the JSON body under ``limit(settings)`` (bytes, setting name): what :func:`json_body`
    gives a route, for a route that reads its body itself."""
    max_bytes, setting = limit(request.app.state.settings)
    raw = await read_body(request, max_bytes, setting)
    if len(raw) <= INLINE_PARSE_BYTES:
        return validate_json(model, raw)
    return await run_in_threadpool(validate_json, model, raw)


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the required JSON body (the schema is added by the app's OpenAPI)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def answer_limit(settings: Settings) -> tuple[int, str]:
    return settings.max_json_bytes, "R2_MAX_JSON_BYTES"


def train_limit(settings: Settings) -> tuple[int, str]:
    return settings.train_max_json_bytes, "R2_TRAIN_MAX_JSON_BYTES"
