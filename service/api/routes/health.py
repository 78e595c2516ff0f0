"""Liveness and readiness: no API key, for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter

from service.contract.schemas import Health, Readiness

from ..deps import GatewayDep
from ..gateway import call
from ..responses import errors

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up (nothing else is checked)."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses=errors(503))
async def readyz(gw: GatewayDep) -> Readiness:
    """Redis answers, a worker's heartbeat is fresh, and every configured model is loaded by a live worker."""
    return await call(gw.catalog.readiness)
