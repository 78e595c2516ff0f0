"""Media for players and pages: the uploaded bytes (with Range), per-clip thumbnails, rendered reels."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from .. import media
from ..deps import GatewayDep, require_api_key
from ..gateway import call
from ..ranges import serve, sniff_video_type
from ..responses import errors


async def media_key(request: Request, api_key: Annotated[str | None, Query(
        description="the API key, for <video> and <img> elements, which cannot send headers (when keys are on)",
        max_length=256)] = None) -> None:
    """The API key as a header, or as ``?api_key=`` (media URLs are fetched by the browser itself)."""
    keys = request.app.state.settings.api_key_values()
    if keys and api_key and any(hmac.compare_digest(api_key.encode(), k.encode()) for k in keys):
        return
    await require_api_key(request)


router = APIRouter(prefix="/v1", dependencies=[Depends(media_key)], tags=["media"])
RangeHeader = Annotated[str | None, Header(alias="Range", description="bytes=start-end, bytes=start- or bytes=-n "
                                                                     "(one range; others get the whole payload)")]

_BYTES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"video/mp4": {}, "application/octet-stream": {}}, "description": "The whole payload."},
    206: {"description": "The range asked for (Content-Range)."}}


@router.get("/videos/{video_id}/content", response_class=StreamingResponse,
            responses={**_BYTES, **errors(401, 404, 416, 503)})
async def video_content(video_id: str, request: Request, gw: GatewayDep, _range: RangeHeader = None
                        ) -> StreamingResponse:
    """The uploaded video as it was uploaded, with Range support (what a ``<video>`` element seeks with)."""
    blob = await call(media.content, gw, video_id)
    head = await call(blob.bytes, 0, min(blob.size, 64))
    return serve(request, blob, sniff_video_type(head))


@router.get("/videos/{video_id}/thumbnails/{clip}", response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "The clip's JPEG."},
                       **errors(401, 404, 422, 503)})
async def video_thumbnail(video_id: str, clip: int, gw: GatewayDep,
                          model: Annotated[str | None, Query(description="whose clips (default: the upload's "
                                                                         "model)")] = None) -> Response:
    """The JPEG of one clip (0-based, one per ``clip_seconds``), kept while the video was encoded for ``model``."""
    jpeg = await call(media.thumbnail, gw, video_id, clip, model)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/videos/{video_id}/reels/{job_id}.mp4", response_class=StreamingResponse,
            responses={**_BYTES, **errors(401, 404, 409, 416, 422, 503)})
async def video_reel(video_id: str, job_id: str, request: Request, gw: GatewayDep, _range: RangeHeader = None
                     ) -> StreamingResponse:
    """A highlight reel rendered by ``POST /v1/videos/{id}/summary`` with ``render: true`` (its ``reel.url``)."""
    blob = await call(media.reel, gw, video_id, job_id)
    return serve(request, blob, "video/mp4")
