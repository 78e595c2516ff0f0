"""Uploaded videos: upload (encoded in the background), status, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from service.contract.schemas import CALLBACK_HELP, PREPROCESS_HELP, IngestRequest, Status, VideoList, VideoStatus

from .. import media
from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..ingest import is_json, public, read_ingest, submit_ingest
from ..responses import errors
from ..uploads import receive_upload

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["videos"])

UPLOAD_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "minLength": 1,
                 "description": "the video (mp4, webm, mkv, ...; not empty)"},
        "model": {"type": "string", "description": "model to encode it for (default: the service's)"},
        "preprocess": {"type": "string", "description": PREPROCESS_HELP},
        "callback_url": {"type": "string", "description": CALLBACK_HELP}}}},
    "application/json": {"schema": IngestRequest.model_json_schema()},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}}}}}


@router.post("/videos", response_model=VideoStatus, status_code=202, openapi_extra=UPLOAD_BODY,
             responses={200: {"model": VideoStatus, "description": "Already encoded (same bytes uploaded before)."},
                        **errors(401, 404, 413, 422, 429, 503)})
async def upload_video(request: Request, response: Response, gw: GatewayDep,
                       model: Annotated[str | None, Query(description="model to encode it for (raw-bytes "
                                                                      "uploads; a form field wins)")] = None,
                       preprocess: Annotated[str | None, Query(description=PREPROCESS_HELP)] = None) -> Any:
    """Upload a video (multipart field ``file``, optional ``model``, ``preprocess``, ``callback_url``); 202 while it
    is encoded, 200 if it was. A JSON body ``{"url": ...}`` has a worker fetch it instead: 202 with the ingest job
    (follow ``Location``)."""
    await call(gw.backend.jobs.check_capacity)  # 429/503 before reading the body
    if is_json(request):
        job = await call(submit_ingest, gw, await read_ingest(request))
        return JSONResponse(public(job).model_dump(mode="json"), status_code=202,
                            headers={"Location": f"/v1/ingests/{job.job_id}"})
    upload = await receive_upload(request, max_bytes=gw.settings.max_upload_bytes, directory=gw.settings.upload_dir)
    try:  # form fields first; ?model= and ?preprocess= serve raw-bytes uploads (and multipart ones too)
        name, card = await gw.resolve_model(upload.field("model") or model)
        pipeline = gw.check_preprocess(name, card, upload.field("preprocess") or preprocess)
        callback_url = upload.field("callback_url")
        if callback_url:
            callback_url = await call(gw.check_callback, callback_url)
        record, _ = await call(gw.store_upload, upload, name, encode=True, preprocess=pipeline)
        if callback_url:
            await call(gw.watch_video, record, callback_url)
    finally:
        upload.discard()
    shown = record.public(name)
    response.status_code = 200 if shown.status == Status.ready else 202
    return shown


@router.get("/videos", response_model=VideoList, responses=errors(401, 422, 503))
async def list_videos(gw: GatewayDep, limit: Annotated[int, Query(ge=1, description="videos per page (at most "
                                                                                    "R2_LIST_MAX_LIMIT)")] = 20,
                      page_token: Annotated[str | None, Query(max_length=512, description="next_page_token of the "
                                                                                        "previous page")] = None
                      ) -> VideoList:
    """The uploaded videos, newest first, with their status per model."""
    return await call(media.list_videos, gw, limit, page_token)


@router.get("/videos/{video_id}", response_model=VideoStatus, responses=errors(401, 404, 503))
async def get_video(video_id: str, gw: GatewayDep,
                    model: Annotated[str | None, Query(description="describe this model's encoding in the top-level "
                                                                   "fields (default: the upload's model)")] = None
                    ) -> VideoStatus:
    """Status of an uploaded video: queued, processing (with progress), ready or failed (with the error), per
    model in ``models``."""
    return await call(media.video_status, gw, video_id, model)


@router.delete("/videos/{video_id}", status_code=204, response_class=Response, responses=errors(401, 404, 503))
async def delete_video(video_id: str, gw: GatewayDep) -> Response:
    """Delete a video: its record, its bytes and its cached features."""
    await call(gw.delete_video, video_id)
    return Response(status_code=204)
