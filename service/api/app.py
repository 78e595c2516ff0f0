"""The HTTP API process: validates, stores uploads, hands jobs to the workers and answers. Never imports torch.

``create_app()`` is the factory (``uvicorn --factory service.api:create_app``; ``r2tuning serve``). Without
``REDIS_URL`` the app also runs a worker on a background thread with an in-memory queue and cache (embedded
mode; only then is torch imported, when the app starts).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from service.contract.settings import Settings, get_settings
from service.store.backend import open_backend

from .errors import install_error_handlers
from .gateway import Gateway, call
from .idempotency import IdempotencyMiddleware
from .metrics import RequestMetrics, SharedCollector
from .openapi import install_docs
from .routes import answers, ground, health, ingests, media, models, ops, page, search, training, videos
from .timeouts import BodyTimeout
from .uploads import MULTIPART_OVERHEAD

log = logging.getLogger("service.api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the backend (and, in embedded mode, start the worker thread); close them on shutdown."""
    settings: Settings = app.state.settings
    backend = open_backend(settings)
    app.state.gateway = Gateway(settings, backend)
    embedded = None
    if settings.embedded:
        from service.worker.embedded import BackgroundWorker  # torch is imported here, and only in embedded mode

        log.info("REDIS_URL is not set: embedded mode (worker thread, in-memory queue and cache)")
        embedded = BackgroundWorker(settings, backend)
        embedded.start()
    try:
        yield
    finally:
        if embedded is not None:
            await call(embedded.stop)
        await backend.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app. Settings default to the environment (``R2_*``, ``REDIS_URL``)."""
    settings = settings or get_settings()
    docs = settings.public_docs or not settings.api_keys
    app = FastAPI(title="R2-Tuning grounding service", version="1.0.0", lifespan=lifespan,
                  summary="Find the moments of a video that match a text query.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.registry = CollectorRegistry()
    app.state.registry.register(SharedCollector(
        lambda: app.state.gateway.backend if hasattr(app.state, "gateway") else None))
    install_error_handlers(app)
    # Matched in this order: the warm path's routes (answers) come right after the probes' (health), because
    # FastAPI tries each included router in turn and every miss costs tens of microseconds.
    routers = [module.router for module in (health, answers, ops, models, videos, media, ground, training, ingests,
                                            search, page)]
    for router in routers:
        app.include_router(router)
    app.state.api_routes = [route for router in routers for route in router.routes]  # for 405's Allow
    if docs:
        install_docs(app, settings)  # after the routes: the document lists them
    app.add_middleware(IdempotencyMiddleware, ttl_s=settings.idempotency_ttl_s,
                       max_body_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(BodyTimeout, timeout_s=settings.body_timeout_s)
    app.add_middleware(RequestMetrics, registry=app.state.registry)
    return app
