"""The served models."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.contract.schemas import ModelList

from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..responses import errors

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["models"])


@router.get("/models", response_model=ModelList, responses=errors(401, 503))
async def list_models(gw: GatewayDep) -> ModelList:
    """The models this service serves, and whether a live worker has each one loaded."""
    return ModelList(models=await call(gw.catalog.infos))
