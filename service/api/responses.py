"""What routes declare about their answers (OpenAPI ``responses=``) and the shared 202 answer."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import JSONResponse, Response

from service.contract.schemas import ErrorBody, Pending

_DESCRIPTIONS = {
    401: "Missing or wrong API key.",
    404: "Unknown model, video, job, thumbnail or reel.",
    409: "The video is still being encoded (retry after Retry-After seconds, or poll GET /v1/videos/{id}); "
         "or a training would replace a configured model.",
    413: "The upload is larger than R2_MAX_UPLOAD_BYTES (enforced while streaming), a JSON body larger than "
         "R2_MAX_JSON_BYTES (R2_TRAIN_MAX_JSON_BYTES for training), or training annotations larger than "
         "R2_TRAIN_MAX_ANNOTATION_BYTES. The connection is closed after it.",
    415: "POST /v1/ground takes multipart/form-data only (the video as the file part `file`, each query as a `query` "
         "field); for JSON, upload with POST /v1/videos and ask POST /v1/videos/{video_id}/moments.",
    422: "Malformed JSON, empty/overlong query, or a video that cannot be used (duration, resolution, "
         "not a video, corrupt).",
    416: "The Range starts past the end (Content-Range: bytes */size says the size).",
    429: "The job queue is full; retry after Retry-After seconds.",
    503: "Redis unreachable, or the model's weights are missing on the workers (the message names the files).",
}

ACCEPTED: dict[int | str, dict[str, Any]] = {
    202: {"model": Pending, "description": "Not answered within the wait: repeat the same request."}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the error statuses a route can answer."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS[s]} for s in statuses}


def accepted(pending: Pending) -> JSONResponse:
    return JSONResponse(pending.model_dump(mode="json"), status_code=202,
                        headers={"Retry-After": str(pending.retry_after)})


def answer(body: dict[str, Any]) -> Response:
    """A worker's answer as it was stored: the worker built it from the response models already, so it is sent
    as is instead of being validated and serialised a second time (the route's ``response_model`` documents it)."""
    return Response(orjson.dumps(body), media_type="application/json")
