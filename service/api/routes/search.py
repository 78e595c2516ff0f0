"""Library search: one query over every searchable video of a model (docs/search.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from service.contract.search import SearchRequest, SearchResponse

from ..deps import GatewayDep, require_api_key
from ..responses import ACCEPTED, accepted, errors
from ..search import LibrarySearch

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["search"])


@router.post("/search", response_model=SearchResponse, response_model_exclude_none=True,
             responses={**ACCEPTED, **errors(401, 404, 422, 429, 503)})
async def search(body: SearchRequest, gw: GatewayDep) -> Any:
    """The best moments (or videos) for a query across the library; 202 if the search takes longer."""
    out = await LibrarySearch(gw).run(body)
    return out if isinstance(out, SearchResponse) else accepted(out)
