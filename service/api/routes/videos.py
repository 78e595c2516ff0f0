"""Uploaded videos: upload (encoded in the background), status, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from service.contract.schemas import CALLBACK_HELP, PREPROCESS_HELP, IngestRequest, Status, VideoStatus

from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..ingest import is_json, public, read_ingest, submit_ingest
from ..responses import errors
from ..uploads import receive_upload

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["videos"])

UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "the video (mp4, webm, mkv, ...)"},
        "model": {"type": "string", "description": "model to encode it for (default: the service's)"},
        "preprocess": {"type": "string", "description": PREPROCESS_HELP},
        "callback_url": {"type": "string", "description": CALLBACK_HELP}}}},
    "application/json": {"schema": IngestRequest.model_json_schema()},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


@router.post("/videos", response_model=VideoStatus, status_code=202, openapi_extra=UPLOAD_BODY,
             responses={200: {"model": VideoStatus, "description": "Already encoded (same bytes uploaded before)."},
                        **errors(401, 404, 413, 422, 429, 503)})
async def upload_video(request: Request, response: Response, gw: GatewayDep) -> Any:
    """Upload a video (multipart field ``file``, optional ``model``, ``preprocess``, ``callback_url``); 202 while it
    is encoded, 200 if it was. A JSON body ``{"url": ...}`` has a worker fetch it instead: 202 with the ingest job
    (follow ``Location``)."""
    await call(gw.backend.jobs.check_capacity)  # 429/503 before reading the body
    if is_json(request):
        job = await call(submit_ingest, gw, await read_ingest(request))
        return JSONResponse(public(job).model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/v1/ingests/{job.job_id}"})
    upload = await receive_upload(request, max_bytes=gw.settings.max_upload_bytes, directory=gw.settings.upload_dir)
    try:
        name, card = gw.model(upload.field("model"))
        preprocess = gw.check_preprocess(name, card, upload.field("preprocess"))
        callback_url = upload.field("callback_url")
        if callback_url:
            callback_url = await call(gw.check_callback, callback_url)
        record, _ = await call(gw.store_upload, upload, name, encode=True, preprocess=preprocess)
        if callback_url:
            await call(gw.watch_video, record, callback_url)
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
