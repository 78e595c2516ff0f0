"""Answers on an uploaded video: moments for text queries, the highlight curve, a summary.

These are the warm path: every query of a cached video comes here. The routes check the API key and read their
body themselves instead of through FastAPI dependencies, whose resolution cost each query more than the rest of
the route (``docs/performance.md``); :func:`asked` is the one place that does both, first thing in each route.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel

from service.contract.schemas import (
    HighlightsRequest,
    HighlightsResponse,
    Mode,
    MomentsRequest,
    MomentsResponse,
    Pending,
    SummaryRequest,
    SummaryResponse,
)

from ..bodies import answer_limit, json_request_body, read_json
from ..deps import require_api_key
from ..gateway import Gateway, call
from ..responses import ACCEPTED, accepted, answer, errors

router = APIRouter(prefix="/v1", tags=["answers"])  # no router dependencies: each route starts with asked()

B = TypeVar("B", bound=BaseModel)


async def asked(request: Request, body: type[B]) -> tuple[Gateway, B]:
    """The app's gateway and the request's body, once its API key passed (401 first, as on every route)."""
    await require_api_key(request)
    gateway: Gateway = request.app.state.gateway
    return gateway, await read_json(request, body, answer_limit)


@router.post("/videos/{video_id}/moments",
             response_model=MomentsResponse, openapi_extra=json_request_body(MomentsRequest),
             responses={**ACCEPTED, **errors(401, 404, 409, 413, 422, 429, 503)})
async def moments(video_id: str, request: Request) -> Any:
    """Moments and saliency for each query; 409 while the video is encoding, 202 if the answer takes longer."""
    gw, body = await asked(request, MomentsRequest)
    name, card = await gw.resolve_model(body.model, needs_moments=True)
    queries = gw.check_queries(body.queries)
    preprocess = gw.check_preprocess(name, card, body.preprocess)
    callback_url = await call(gw.check_callback, body.callback_url) if body.callback_url else None
    out = await gw.run(video_id, name, Mode.moments, queries, wait_s=gw.settings.moments_wait_s,
                       top_k=body.top_k, nms_thres=body.nms_thres, min_score=body.min_score, preprocess=preprocess,
                       callback_url=callback_url)
    return accepted(out) if isinstance(out, Pending) else answer(out)


@router.post("/videos/{video_id}/highlights",
             response_model=HighlightsResponse, openapi_extra=json_request_body(HighlightsRequest),
             responses={**ACCEPTED, **errors(401, 404, 409, 413, 422, 429, 503)})
async def highlights(video_id: str, request: Request) -> Any:
    """The saliency curve and the best clips (highlight models use their domain as the query)."""
    gw, body = await asked(request, HighlightsRequest)
    name, card = await gw.resolve_model(body.model)
    query = gw.default_query(name, card, body.query)
    callback_url = await call(gw.check_callback, body.callback_url) if body.callback_url else None
    out = await gw.run(video_id, name, Mode.highlights, [query], wait_s=gw.settings.moments_wait_s,
                       top_k=body.top_k, preprocess=gw.check_preprocess(name, card, body.preprocess),
                       callback_url=callback_url)
    return accepted(out) if isinstance(out, Pending) else answer(out)


@router.post("/videos/{video_id}/summary",
             response_model=SummaryResponse, openapi_extra=json_request_body(SummaryRequest),
             responses={**ACCEPTED, **errors(401, 404, 409, 413, 422, 429, 503)})
async def summary(video_id: str, request: Request) -> Any:
    """A summary: the most salient clips up to ``budget`` of the duration, merged into segments; with ``render``,
    also an mp4 of them (``reel.url``)."""
    gw, body = await asked(request, SummaryRequest)
    name, card = await gw.resolve_model(body.model)
    query = gw.default_query(name, card, body.query)
    callback_url = await call(gw.check_callback, body.callback_url) if body.callback_url else None
    out = await gw.run(video_id, name, Mode.summary, [query], wait_s=gw.settings.moments_wait_s,
                       budget=body.budget, preprocess=gw.check_preprocess(name, card, body.preprocess),
                       callback_url=callback_url, **({"render": True} if body.render else {}))
    return accepted(out) if isinstance(out, Pending) else answer(out)
