"""Videos fetched by URL (``POST /v1/videos`` with ``{"url"}``): where the fetch stands."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.contract.schemas import IngestStatus

from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..ingest import ingest_status
from ..responses import errors

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["videos"])


@router.get("/ingests/{job_id}", response_model=IngestStatus, responses=errors(401, 404, 503))
async def get_ingest(job_id: str, gw: GatewayDep) -> IngestStatus:
    """A fetch by URL: queued, processing, ready (with ``video_id``: follow GET /v1/videos/{video_id}) or failed."""
    return await call(ingest_status, gw, job_id)
