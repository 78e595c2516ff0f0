"""What the media routes do behind them: listing videos, status per model, thumbnails, content and reels."""

from __future__ import annotations

import base64
import json
import math

from service.contract.errors import Conflict, InvalidRequest, NotFound
from service.contract.schemas import (
    EncodingRecord,
    JobKind,
    Status,
    VideoList,
    VideoRecord,
    VideoStatus,
)
from service.store.media import Blob

from .gateway import Gateway, job_error


def encode_token(entry: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps([entry[0], entry[1]]).encode()).decode().rstrip("=")


def decode_token(token: str) -> tuple[float, str]:
    try:
        score, video_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(video_id, str) or not isinstance(score, int | float) or not math.isfinite(score):
            raise ValueError
        return float(score), video_id
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest("page_token is not a token this service gave (pass next_page_token as it came)",
                             code="invalid_page_token") from None


def list_videos(gw: Gateway, limit: int, page_token: str | None) -> VideoList:
    """Newest first; entries of expired videos are dropped from the index as they are met."""
    if not 1 <= limit <= gw.settings.list_max_limit:
        raise InvalidRequest(f"limit {limit}: give 1 to {gw.settings.list_max_limit} (R2_LIST_MAX_LIMIT)",
                             code="invalid_limit")
    records = gw.backend.records
    cursor = decode_token(page_token) if page_token else None
    found: list[tuple[tuple[float, str], VideoRecord]] = []
    while len(found) <= limit:
        entries = records.video_index(limit + 1 - len(found), cursor)
        if not entries:
            break
        for entry in entries:
            cursor = entry
            record = records.get_video(entry[1])
            if record is None:
                records.unlist_video(entry[1])
            else:
                found.append((entry, record))
    page = found[:limit]
    token = encode_token(page[-1][0]) if len(found) > limit else None
    return VideoList(videos=[r.public() for _, r in page], next_page_token=token)


def video_status(gw: Gateway, video_id: str, model: str | None) -> VideoStatus:
    record = gw.video(video_id)
    if model is None:
        return record.public()
    name, _ = gw.model(model)
    require_encoding(record, name)
    return record.public(name)


def require_encoding(record: VideoRecord, model: str) -> EncodingRecord:
    found = record.encoding(model)
    if found is None:
        raise NotFound(f"video {record.video_id} was never encoded for model {model!r}: upload it again with "
                       f"model={model}, or ask a query with that model", code="not_encoded")
    return found


def thumbnail(gw: Gateway, video_id: str, clip: int, model: str | None) -> bytes:
    record = gw.video(video_id)
    name = gw.catalog.name(model) if model is not None else record.model
    enc = require_encoding(record, name)
    if not enc.thumbnails or enc.feature_id is None:
        raise NotFound(f"video {video_id} has no thumbnails for model {name!r} (not encoded yet, or encoded before "
                       "thumbnails were kept)", code="no_thumbnails")
    if not 0 <= clip < enc.thumbnails:
        raise NotFound(f"clip {clip} does not exist: the video has clips 0 to {enc.thumbnails - 1}",
                       code="unknown_clip")
    jpeg = gw.backend.thumbnails.get(video_id, enc.feature_id, clip)
    if jpeg is None:
        raise NotFound(f"the thumbnails of video {video_id} for model {name!r} expired or were deleted",
                       code="no_thumbnails")
    return jpeg


def content(gw: Gateway, video_id: str) -> Blob:
    gw.video(video_id)
    blob = gw.backend.videos.open(video_id)
    if blob is None:
        raise NotFound(f"the uploaded bytes of video {video_id} expired or were deleted; upload it again",
                       code="video_gone")
    return blob


def reel(gw: Gateway, video_id: str, job_id: str) -> Blob:
    gw.video(video_id)
    job = gw.backend.jobs.get(job_id) if len(job_id) <= 64 else None
    if job is None or job.video_id != video_id or job.kind != JobKind.ground:
        raise NotFound(f"no reel {job_id[:80]!r} for video {video_id} (never rendered, or older than "
                       f"{gw.settings.result_ttl_s} s)", code="unknown_reel")
    if job.status == Status.failed:
        raise job_error(job)
    if job.status != Status.ready:
        raise Conflict(f"the reel {job_id} is still being rendered; retry in a few seconds",
                       code="reel_not_ready", headers={"Retry-After": "2"})
    blob = gw.backend.reels.open(video_id, job_id)
    if blob is None:
        raise NotFound(f"no reel {job_id[:80]!r} for video {video_id} (the job rendered none, or it expired): "
                       "ask the summary again with render: true", code="unknown_reel")
    return blob
