"""Ingest by URL: ``POST /v1/videos`` with ``{"url": ...}`` queues a fetch job; a worker downloads the video with
the upload limits, stores it under the SHA-256 of its bytes and queues its encoding (service/worker/fetch.py)."""

from __future__ import annotations

import uuid

from pydantic import ValidationError
from starlette.requests import Request

from service.contract.errors import InvalidRequest, NotFound, PayloadTooLarge
from service.contract.schemas import ErrorDetail, IngestRequest, IngestStatus, Job, JobKind, JobRecord

from .gateway import Gateway

MAX_INGEST_BODY = 16 << 10  # a URL of at most 2 KiB, a model, a pipeline and a callback URL


def is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


async def read_ingest(request: Request) -> IngestRequest:
    """The JSON body, bounded while it streams in (413) and validated (422)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_INGEST_BODY:
            raise PayloadTooLarge(f"a JSON upload request is at most {MAX_INGEST_BODY} bytes (send the video "
                                  "itself as multipart or raw bytes)", code="body_too_large")
    try:
        return IngestRequest.model_validate_json(bytes(body))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(x) for x in p['loc']) or 'body'}: {p['msg']}"
                             for p in err.errors()[:5])
        raise InvalidRequest(f"invalid ingest request: {problems}"[:500], code="invalid_request") from None


def fetch_ttl_s(gw: Gateway) -> int:
    """A fetch job's record lives through its whole download, then as long as any answer."""
    return int(gw.settings.fetch_timeout_s + gw.settings.result_ttl_s)


def submit_ingest(gw: Gateway, body: IngestRequest) -> JobRecord:
    """Check the request (model, pipeline, URL and callback against the allowlist) and queue the fetch."""
    name, card = gw.model(body.model)
    preprocess = gw.check_preprocess(name, card, body.preprocess)
    gw.urls.check(body.url, what="url")
    callback_url = gw.check_callback(body.callback_url)
    job = Job(job_id=uuid.uuid4().hex, kind=JobKind.fetch, video_id="", model=name, preprocess=preprocess,
              url=body.url, callback_url=callback_url)
    ttl = fetch_ttl_s(gw)
    record = gw.backend.jobs.submit(job, ttl)
    gw.backend.jobs.update(job.job_id, ttl, detail={"url": body.url})
    gw.watch_job(job.job_id, callback_url, ttl)
    return record.model_copy(update=dict(detail={"url": body.url}))


def ingest_status(gw: Gateway, job_id: str) -> IngestStatus:
    record = gw.backend.jobs.get(job_id) if len(job_id) <= 64 else None
    if record is None or record.kind != JobKind.fetch:
        raise NotFound(f"no ingest job {job_id[:80]!r} (never submitted, or finished more than "
                       f"{gw.settings.result_ttl_s} s ago)", code="unknown_job")
    return public(record)


def public(record: JobRecord) -> IngestStatus:
    error = ErrorDetail(code=record.error_code, message=record.error_message or "") if record.error_code else None
    video_id = (record.result or {}).get("video_id")
    return IngestStatus(job_id=record.job_id, status=record.status, url=(record.detail or {}).get("url", ""),
                        video_id=video_id, error=error)
