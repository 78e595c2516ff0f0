"""The HTTP API: validates, stores uploads, hands jobs to the workers and answers. Never imports torch.

``create_app()`` is the factory (``uvicorn --factory service.api:create_app``; ``r2tuning serve``). Without
``REDIS_URL`` the app also runs a worker on a background thread with an in-memory queue and cache (embedded
mode; only then is torch imported, when the app starts).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .backend import open_backend
from .errors import InvalidRequest, ServiceError, Unauthorized
from .gateway import Gateway, call, resolve_specs
from .metrics import SharedCollector
from .schemas import (
    ErrorBody,
    Health,
    HighlightsRequest,
    HighlightsResponse,
    Mode,
    ModelList,
    MomentsRequest,
    MomentsResponse,
    Pending,
    Readiness,
    Status,
    SummaryRequest,
    SummaryResponse,
    VideoStatus,
)
from .settings import Settings, get_settings
from .uploads import receive_upload

log = logging.getLogger("service.api")

_DESCRIPTIONS = {
    401: "Missing or wrong API key.",
    404: "Unknown model or video.",
    409: "The video is still being encoded (retry after Retry-After seconds, or poll GET /v1/videos/{id}).",
    413: "The upload is larger than R2_MAX_UPLOAD_BYTES (enforced while streaming).",
    422: "Malformed JSON, empty/overlong query, or a video that cannot be used (duration, resolution, "
         "not a video, corrupt).",
    429: "The job queue is full; retry after Retry-After seconds.",
    503: "Redis unreachable, or the model's weights are missing on the workers (the message names the files).",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the error statuses a route can answer."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


_ACCEPTED = {202: {"model": Pending, "description": "Not answered within the wait: repeat the same request."}}

_UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the video (mp4, webm, mkv, ...)"},
        "model": {"type": "string", "description": "model to encode it for (default: the service's)"}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}

_GROUND_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file", "query"], "properties": {
        "file": {"type": "string", "format": "binary"},
        "query": {"type": "array", "items": {"type": "string"}, "description": "repeat the field for more"},
        "model": {"type": "string"}, "top_k": {"type": "integer", "default": 10},
        "nms_thres": {"type": "number"}, "min_score": {"type": "number"}}}}}}}


# ------------------------------------------------------------------------------------------------ dependencies


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


async def require_api_key(request: Request) -> None:
    """Every route but health needs a key when R2_API_KEYS is set (Bearer token or X-API-Key)."""
    keys = request.app.state.settings.api_key_values()
    if not keys:
        return
    supplied = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if supplied is None and auth.lower().startswith("bearer "):
        supplied = auth[7:].strip()
    if not supplied or not any(hmac.compare_digest(supplied.encode(), k.encode()) for k in keys):
        raise Unauthorized("missing or wrong API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                           headers={"WWW-Authenticate": "Bearer"})


# ------------------------------------------------------------------------------------------------ routes

health = APIRouter(tags=["health"])
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["v1"])
ops = APIRouter(dependencies=[Depends(require_api_key)], tags=["ops"])


@health.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (nothing else is checked)."""
    return Health()


@health.get("/readyz", response_model=Readiness, responses=errors(503))
async def readyz(gw: GatewayDep) -> Readiness:
    """Redis answers, a worker's heartbeat is fresh, and every configured model is loaded by a live worker."""
    return await call(gw.readiness)


@ops.get("/metrics", response_class=Response, responses=errors(401))
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, queue length, job time per stage, cache hits/misses, batch sizes."""
    body = await call(generate_latest, request.app.state.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@v1.get("/models", response_model=ModelList, responses=errors(401, 503))
async def list_models(gw: GatewayDep) -> ModelList:
    """The models this service serves, and whether a live worker has each one loaded."""
    return ModelList(models=await call(gw.model_infos))


@v1.post("/videos", response_model=VideoStatus, status_code=202, openapi_extra=_UPLOAD_BODY,
         responses={200: {"model": VideoStatus, "description": "Already encoded (same bytes uploaded before)."},
                    **errors(401, 404, 413, 422, 429, 503)})
async def upload_video(request: Request, response: Response, gw: GatewayDep) -> VideoStatus:
    """Upload a video (multipart field ``file``, optional ``model``); 202 while it is encoded, 200 if it was."""
    await call(gw.backend.queue.check_capacity)  # 429/503 before reading the body
    upload = await receive_upload(request, max_bytes=gw.settings.max_upload_bytes, directory=gw.settings.upload_dir)
    try:
        spec = gw.spec(upload.field("model"))
        record, _ = await call(gw.store_upload, upload, spec.name, encode=True)
    finally:
        upload.discard()
    response.status_code = 200 if record.status == Status.ready else 202
    return record.public()


@v1.get("/videos/{video_id}", response_model=VideoStatus, responses=errors(401, 404, 503))
async def get_video(video_id: str, gw: GatewayDep) -> VideoStatus:
    """Status of an uploaded video: queued, processing (with progress), ready or failed (with the error)."""
    return (await call(gw.video, video_id)).public()


@v1.delete("/videos/{video_id}", status_code=204, response_class=Response, responses=errors(401, 404, 503))
async def delete_video(video_id: str, gw: GatewayDep) -> Response:
    """Delete a video: its record, its bytes and its cached features."""
    await call(gw.delete_video, video_id)
    return Response(status_code=204)


@v1.post("/videos/{video_id}/moments", response_model=MomentsResponse,
         responses={**_ACCEPTED, **errors(401, 404, 409, 422, 429, 503)})
async def moments(video_id: str, body: MomentsRequest, gw: GatewayDep) -> Any:
    """Moments and saliency for each query; 409 while the video is encoding, 202 if the answer takes longer."""
    spec = gw.spec(body.model)
    if not spec.has_moments:
        raise InvalidRequest(f"model {spec.name!r} outputs saliency only; use /highlights or /summary",
                             code="no_moments")
    queries = gw.check_queries(body.queries)
    out = await gw.run(video_id, spec, Mode.moments, queries, wait_s=gw.settings.moments_wait_s,
                       top_k=body.top_k, nms_thres=body.nms_thres, min_score=body.min_score)
    return _accepted(out) if isinstance(out, Pending) else MomentsResponse.model_validate(out)


@v1.post("/videos/{video_id}/highlights", response_model=HighlightsResponse,
         responses={**_ACCEPTED, **errors(401, 404, 409, 422, 429, 503)})
async def highlights(video_id: str, body: HighlightsRequest, gw: GatewayDep) -> Any:
    """The saliency curve and the best clips (highlight models use their domain as the query)."""
    spec = gw.spec(body.model)
    query = gw.default_query(spec, body.query)
    out = await gw.run(video_id, spec, Mode.highlights, [query], wait_s=gw.settings.moments_wait_s,
                       top_k=body.top_k)
    return _accepted(out) if isinstance(out, Pending) else HighlightsResponse.model_validate(out)


@v1.post("/videos/{video_id}/summary", response_model=SummaryResponse,
         responses={**_ACCEPTED, **errors(401, 404, 409, 422, 429, 503)})
async def summary(video_id: str, body: SummaryRequest, gw: GatewayDep) -> Any:
    """A summary: the most salient clips up to ``budget`` of the duration, merged into segments."""
    spec = gw.spec(body.model)
    query = gw.default_query(spec, body.query)
    out = await gw.run(video_id, spec, Mode.summary, [query], wait_s=gw.settings.moments_wait_s,
                       budget=body.budget)
    return _accepted(out) if isinstance(out, Pending) else SummaryResponse.model_validate(out)


@v1.post("/ground", response_model=MomentsResponse, openapi_extra=_GROUND_BODY,
         responses={**_ACCEPTED, **errors(401, 404, 413, 422, 429, 503)})
async def ground(request: Request, gw: GatewayDep) -> Any:
    """One shot: upload a video with one or more ``query`` fields and wait for the moments."""
    await call(gw.backend.queue.check_capacity)
    upload = await receive_upload(request, max_bytes=gw.settings.max_upload_bytes, directory=gw.settings.upload_dir)
    try:
        spec = gw.spec(upload.field("model"))
        if not spec.has_moments:
            raise InvalidRequest(f"model {spec.name!r} outputs saliency only; upload with POST /v1/videos and use "
                                 "/highlights or /summary", code="no_moments")
        queries = gw.check_queries(upload.fields.get("query", []))
        params = dict(top_k=_form_number(upload.field("top_k"), "top_k", int, 10, 1, 1000),
                      nms_thres=_form_number(upload.field("nms_thres"), "nms_thres", float, None, 0, 1),
                      min_score=_form_number(upload.field("min_score"), "min_score", float, None, 0, 1))
        await call(gw.require_available, spec)
        record, _ = await call(gw.store_upload, upload, spec.name, encode=False)
    finally:
        upload.discard()
    out = await gw.run(record.video_id, spec, Mode.moments, queries, wait_s=gw.settings.ground_wait_s,
                       video_must_be_ready=False, **params)
    return _accepted(out) if isinstance(out, Pending) else MomentsResponse.model_validate(out)


def _accepted(pending: Pending) -> JSONResponse:
    return JSONResponse(pending.model_dump(mode="json"), status_code=202,
                        headers={"Retry-After": str(pending.retry_after)})


def _form_number(raw: str | None, name: str, kind: type, default: Any, low: float, high: float) -> Any:
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidRequest(f"form field {name!r} must be a number, got {raw!r}", code="invalid_request") from None
    if not low <= value <= high:
        raise InvalidRequest(f"form field {name!r} must be in [{low}, {high}], got {value}", code="invalid_request")
    return value


# ------------------------------------------------------------------------------------------------ errors


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

    @app.exception_handler(redis.RedisError)
    async def redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("Redis error: %s", exc)
        return _error(503, "redis_unavailable", f"Redis cannot be reached or refused the request ({exc}); "
                      "retry later", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); see the API logs")


# ------------------------------------------------------------------------------------------------ metrics


class RequestMetrics:
    """Counts requests by route template, method and status, and times them."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("r2_http_requests", "HTTP requests by route, method and status.",
                                ["route", "method", "status"], registry=registry)
        self.seconds = Histogram("r2_http_request_seconds", "HTTP request time by route.", ["route"],
                                 registry=registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.requests.labels(route, scope["method"], str(status)).inc()
            self.seconds.labels(route).observe(time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ app


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the backend (and, in embedded mode, start the worker thread); close them on shutdown."""
    settings: Settings = app.state.settings
    specs = resolve_specs(settings)
    backend = open_backend(settings)
    app.state.gateway = Gateway(settings, backend, specs)
    embedded = None
    if settings.embedded:
        from .worker import BackgroundWorker  # torch is imported here, and only in embedded mode

        log.info("REDIS_URL is not set: embedded mode (worker thread, in-memory queue and cache)")
        embedded = BackgroundWorker(settings, backend)
        embedded.start()
    try:
        yield
    finally:
        if embedded is not None:
            await call(embedded.stop)
        backend.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app. Settings default to the environment (``R2_*``, ``REDIS_URL``)."""
    settings = settings or get_settings()
    docs = settings.public_docs or not settings.api_keys
    app = FastAPI(title="R2-Tuning grounding service", version="1.0.0", lifespan=lifespan,
                  summary="Find the moments of a video that match a text query.",
                  docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.state.settings = settings
    app.state.registry = CollectorRegistry()
    app.state.registry.register(SharedCollector(
        lambda: app.state.gateway.backend if hasattr(app.state, "gateway") else None))
    install_error_handlers(app)
    app.include_router(health)
    app.include_router(ops)
    app.include_router(v1)
    app.add_middleware(RequestMetrics, registry=app.state.registry)
    return app
