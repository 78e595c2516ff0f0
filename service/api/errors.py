"""How errors become answers: every error has the body ``{"error": {"code", "message"}}`` and its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.contract.errors import ServiceError
from service.store.connect import BACKEND_ERRORS

log = logging.getLogger("service.api")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        headers = dict(exc.headers)
        if exc.status == 429:
            headers.setdefault("Retry-After", str(app.state.settings.queue_full_retry_after_s))
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _error(422, "malformed_json", "the request body is not valid JSON")
        text = "; ".join(f"{'.'.join(str(x) for x in p.get('loc', ()) if x != 'body') or 'body'}: {p.get('msg')}"
                         for p in problems)
        return _error(422, "invalid_request", text or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}"), str(exc.detail),
                      dict(exc.headers or {}))

    async def redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis error: %s", exc)
        return _error(503, "redis_unavailable", f"Redis cannot be reached or refused the request ({exc}); "
                      "retry later", {"Retry-After": "5"})

    for error in BACKEND_ERRORS:  # one server or a cluster (a failover in progress)
        app.add_exception_handler(error, redis_down)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); see the API logs")


