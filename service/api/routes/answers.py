"""Answers on an uploaded video: moments for text queries, the highlight curve, a summary."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

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

from ..bodies import answer_limit, json_body, json_request_body
from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..responses import ACCEPTED, accepted, answer, errors

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["answers"])

MomentsBody = Annotated[MomentsRequest, json_body(MomentsRequest, answer_limit)]
HighlightsBody = Annotated[HighlightsRequest, json_body(HighlightsRequest, answer_limit)]
SummaryBody = Annotated[SummaryRequest, json_body(SummaryRequest, answer_limit)]


@router.post("/videos/{video_id}/moments",
             response_model=MomentsResponse, openapi_extra=json_request_body(MomentsRequest),
             responses={**ACCEPTED, **errors(401, 404, 409, 413, 422, 429, 503)})
async def moments(video_id: str, body: MomentsBody, gw: GatewayDep) -> Any:
    """Moments and saliency for each query; 409 while the video is encoding, 202 if the answer takes longer."""
    name, card = gw.model(body.model, needs_moments=True)
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
async def highlights(video_id: str, body: HighlightsBody, gw: GatewayDep) -> Any:
    """The saliency curve and the best clips (highlight models use their domain as the query)."""
    name, card = gw.model(body.model)
    query = gw.default_query(name, card, body.query)
    callback_url = await call(gw.check_callback, body.callback_url) if body.callback_url else None
    out = await gw.run(video_id, name, Mode.highlights, [query], wait_s=gw.settings.moments_wait_s,
                       top_k=body.top_k, preprocess=gw.check_preprocess(name, card, body.preprocess),
                       callback_url=callback_url)
    return accepted(out) if isinstance(out, Pending) else answer(out)


@router.post("/videos/{video_id}/summary",
             response_model=SummaryResponse, openapi_extra=json_request_body(SummaryRequest),
             responses={**ACCEPTED, **errors(401, 404, 409, 413, 422, 429, 503)})
async def summary(video_id: str, body: SummaryBody, gw: GatewayDep) -> Any:
    """A summary: the most salient clips up to ``budget`` of the duration, merged into segments; with ``render``,
    also an mp4 of them (``reel.url``)."""
    name, card = gw.model(body.model)
    query = gw.default_query(name, card, body.query)
    callback_url = await call(gw.check_callback, body.callback_url) if body.callback_url else None
    out = await gw.run(video_id, name, Mode.summary, [query], wait_s=gw.settings.moments_wait_s,
                       budget=body.budget, preprocess=gw.check_preprocess(name, card, body.preprocess),
                       callback_url=callback_url, **({"render": True} if body.render else {}))
    return accepted(out) if isinstance(out, Pending) else answer(out)
