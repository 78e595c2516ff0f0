"""Uploaded videos: upload (encoded in the background), status, delete."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.contract.schemas import PREPROCESS_HELP, Status, VideoStatus

from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..responses import errors
from ..uploads import receive_upload

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["videos"])

UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "minLength": 1,
                 "description": "the video (mp4, webm, mkv, ...; not empty)"},
        "model": {"type": "string", "description": "model to encode it for (default: the service's)"},
        "preprocess": {"type": "string", "description": PREPROCESS_HELP}}}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}}}}}


@router.post("/videos", response_model=VideoStatus, status_code=202, openapi_extra=UPLOAD_BODY,
             responses={200: {"model": VideoStatus, "description": "Already encoded (same bytes uploaded before)."},
                        **errors(401, 404, 413, 422, 429, 503)})
async def upload_video(request: Request, response: Response, gw: GatewayDep) -> VideoStatus:
    """Upload a video (multipart field ``file``, optional ``model``, ``preprocess``); 202 while it is encoded,
    200 if it was."""
    await call(gw.backend.jobs.check_capacity)  # 429/503 before reading the body
    upload = await receive_upload(request, max_bytes=gw.settings.max_upload_bytes, directory=gw.settings.upload_dir)
    try:
        name, card = gw.model(upload.field("model"))
        preprocess = gw.check_preprocess(name, card, upload.field("preprocess"))
        record, _ = await call(gw.store_upload, upload, name, encode=True, preprocess=preprocess)
    finally:
        upload.discard()
    response.status_code = 200 if record.status == Status.ready else 202
    return record.public()


@router.get("/videos/{video_id}", response_model=VideoStatus, responses=errors(401, 404, 503))
async def get_video(video_id: str, gw: GatewayDep) -> VideoStatus:
    """Status of an uploaded video: queued, processing (with progress), ready or failed (with the error)."""
    return (await call(gw.video, video_id)).public()


@router.delete("/videos/{video_id}", status_code=204, response_class=Response, responses=errors(401, 404, 503))
async def delete_video(video_id: str, gw: GatewayDep) -> Response:
    """Delete a video: its record, its bytes and its cached features."""
    await call(gw.delete_video, video_id)
    return Response(status_code=204)
