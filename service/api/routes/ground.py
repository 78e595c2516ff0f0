"""One shot: upload a video with its queries and wait for the moments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from service.contract.errors import InvalidRequest, UnsupportedMediaType
from service.contract.schemas import PREPROCESS_HELP, Mode, MomentsResponse, Pending

from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..responses import ACCEPTED, accepted, answer, errors
from ..uploads import receive_upload

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["answers"])

GROUND_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file", "query"], "properties": {
        "file": {"type": "string", "format": "binary", "minLength": 1, "description": "the video (not empty)"},
        "query": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                  "description": "repeat the field for more"},
        "model": {"type": "string"}, "top_k": {"type": "integer", "default": 10},
        "nms_thres": {"type": "number"}, "min_score": {"type": "number"},
        "preprocess": {"type": "string", "description": PREPROCESS_HELP}}}}}}}


@router.post("/ground", response_model=MomentsResponse, openapi_extra=GROUND_BODY,
             responses={**ACCEPTED, **errors(401, 404, 413, 415, 422, 429, 503)})
async def ground(request: Request, gw: GatewayDep) -> Any:
    """One shot: upload a video with one or more ``query`` fields and wait for the moments."""
    _require_multipart(request)
    await call(gw.backend.jobs.check_capacity)
    upload = await receive_upload(request, max_bytes=gw.settings.max_upload_bytes, directory=gw.settings.upload_dir)
    try:
        name, card = await gw.resolve_model(upload.field("model"))
        if card is not None and not card.has_moments:
            raise InvalidRequest(f"model {name!r} outputs saliency only; upload with POST /v1/videos and use "
                                 "/highlights or /summary", code="no_moments")
        queries = gw.check_queries(upload.fields.get("query", []))
        params = dict(top_k=_form_number(upload.field("top_k"), "top_k", int, 10, 1, 1000),
                      nms_thres=_form_number(upload.field("nms_thres"), "nms_thres", float, None, 0, 1),
                      min_score=_form_number(upload.field("min_score"), "min_score", float, None, 0, 1),
                      preprocess=gw.check_preprocess(name, card, upload.field("preprocess")))
        await call(gw.catalog.require_available, name)
        record, _ = await call(gw.store_upload, upload, name, encode=False, preprocess=params["preprocess"])
    finally:
        upload.discard()
    out = await gw.run(record.video_id, name, Mode.moments, queries, wait_s=gw.settings.ground_wait_s,
                       video_must_be_ready=False, **params)
    return accepted(out) if isinstance(out, Pending) else answer(out)


def _require_multipart(request: Request) -> None:
    """The queries travel as form fields next to the video: any other body (JSON, raw bytes) cannot carry both."""
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given != "multipart/form-data":
        raise UnsupportedMediaType(
            f"POST /v1/ground takes multipart/form-data, not {given[:60] or 'a body without Content-Type'!r}: send "
            "the video as the file part 'file' and each query as a 'query' field (curl -F file=@video.mp4 -F "
            "query='...'); to ask in JSON, upload with POST /v1/videos, then POST /v1/videos/{video_id}/moments")


def _form_number(raw: str | None, name: str, kind: type, default: Any, low: float, high: float) -> Any:
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidRequest(f"form field {name!r} must be a number, got {raw[:40]!r}",
                             code="invalid_request") from None
    if not low <= value <= high:
        raise InvalidRequest(f"form field {name!r} must be in [{low}, {high}], got {value}", code="invalid_request")
    return value
