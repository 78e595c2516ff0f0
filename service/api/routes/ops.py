"""Operations: Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..deps import require_api_key
from ..gateway import call
from ..responses import errors

router = APIRouter(dependencies=[Depends(require_api_key)], tags=["ops"])


@router.get("/metrics", response_class=Response, responses=errors(401))
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, queue length, job time per stage, cache hits/misses, batch sizes."""
    body = await call(generate_latest, request.app.state.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
