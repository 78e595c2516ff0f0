"""How errors become answers: every error has the body ``{"error": {"code", "message"}}`` and its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from service.contract.errors import ServiceError, public_message
from service.store.connect import BACKEND_ERRORS

from .bodies import MAX_PROBLEMS

log = logging.getLogger("service.api")


# After these the rest of the body is not read: the connection is closed instead of kept alive.
_CLOSE_AFTER = (408, 413)


def _error(request: Request, status: int, code: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if status in _CLOSE_AFTER:
        headers["Connection"] = "close"
    text = public_message(message, request.app.state.settings.max_error_chars)
    return JSONResponse({"error": {"code": code, "message": text}}, status_code=status, headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method the request's path answers (FastAPI makes one route per method: Starlette's 405 names the
    first route's methods only)."""
    methods: set[str] = set()
    for route in request.app.state.api_routes:
        if isinstance(route, BaseRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = dict(exc.headers)
        if exc.status == 429:
            headers.setdefault("Retry-After", str(app.state.settings.queue_full_retry_after_s))
        return _error(request, exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _error(request, 422, "malformed_json", "the request body is not valid JSON")
        text = "; ".join(f"{'.'.join(str(x)[:40] for x in p.get('loc', ()) if x != 'body') or 'body'}: "
                         f"{p.get('msg')}" for p in problems[:MAX_PROBLEMS])
        if len(problems) > MAX_PROBLEMS:
            text += f"; and {len(problems) - MAX_PROBLEMS} more problems"
        return _error(request, 422, "invalid_request", text or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return _error(request, exc.status_code, code, str(exc.detail), headers)

    async def redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis error: %s", exc)
        return _error(request, 503, "redis_unavailable", f"Redis cannot be reached or refused the request "
                      f"({exc}); retry later", {"Retry-After": "5"})

    for error in BACKEND_ERRORS:  # one server or a cluster (a failover in progress)
        app.add_exception_handler(error, redis_down)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(request, 500, "internal_error", f"internal error ({type(exc).__name__}); see the API logs")


