"""What ``POST /v1/search`` does on the API side: check the request, submit (or join) the search job, wait,
then group and page the worker's ranked moments. No torch here: the query's embedding and the grounding are
the worker's (service/worker/search.py).

Pages: the worker ranks up to ``search_max_results`` moments once per distinct request; the job is shared by
identical requests while its result lives, so a page token (the offset and a hash of the request, base64url
JSON) fetches the next page from the same job, or from a fresh one with the same ranking.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from typing import Any

from service.contract.errors import InvalidRequest, NotFound
from service.contract.schemas import SEARCH_JOB_VIDEO, Job, JobKind, JobRecord, Pending, SearchSpec, Status
from service.contract.search import SearchMoment, SearchRequest, SearchResponse, SearchVideo

from .gateway import Gateway, call, job_error


def request_hash(body: SearchRequest, model: str, query: str, library: set[str]) -> str:
    """Identifies a search and the library it ran on: once a video joins or leaves, the same request is a new
    job (no stale hits from the result cache) and older page tokens are refused."""
    fields = [query, model, body.video_ids, body.group_by, body.exhaustive, body.top_k, sorted(library)]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]


def page_token(offset: int, digest: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "h": digest}).encode()).decode().rstrip("=")


def read_page_token(token: str | None, digest: str) -> int:
    """The offset a page token names; 422 when it is not one of this request's tokens."""
    if token is None:
        return 0
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, ok = raw["o"], raw["h"] == digest
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        offset, ok = None, False
    if not ok or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidRequest("page_token is not a next_page_token of this same search (same query, model, "
                             "video_ids, group_by, exhaustive and top_k, and no video added or deleted since); "
                             "start again without it",
                             code="invalid_page_token")
    return offset


class LibrarySearch:
    """The search route's logic, over the app's gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def check_videos(self, model: str, video_ids: list[str] | None) -> set[str]:
        """The videos searchable under the model; 404 when there are none, or when a listed video is not."""
        s, backend = self.gw.settings, self.gw.backend
        library = backend.features.store.index_members(backend.features.keys.library(model))
        if video_ids is None:
            if not library:
                raise NotFound(f"no video is ready under model {model!r}; upload one with POST /v1/videos (model "
                               f"{model!r}) and search once it is ready", code="no_ready_videos")
            return library
        if len(video_ids) > s.search_max_video_ids:
            raise InvalidRequest(f"{len(video_ids)} video_ids; at most {s.search_max_video_ids} "
                                 "(R2_SEARCH_MAX_VIDEO_IDS)", code="too_many_videos")
        missing = [v for v in dict.fromkeys(video_ids)
                   if v not in library or backend.records.get_video(v) is None]
        if missing:
            shown = ", ".join(m[:64] for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                                               else "")
            raise NotFound(f"{len(missing)} of video_ids not searchable under model {model!r} (unknown, deleted, "
                           f"expired, still encoding or encoded for another model): {shown}", code="unknown_video")
        return library

    def submit(self, body: SearchRequest, model: str, query: str, digest: str) -> JobRecord:
        self.gw.catalog.require_available(model)
        spec = SearchSpec(video_ids=body.video_ids, exhaustive=body.exhaustive,
                          max_results=self.gw.settings.search_max_results)
        job = Job(job_id=uuid.uuid4().hex, kind=JobKind.search, video_id=SEARCH_JOB_VIDEO, model=model,
                  queries=[query], search=spec)
        return self.gw.backend.jobs.submit(job, self.gw.settings.result_ttl_s, f"search:{digest}")

    async def run(self, body: SearchRequest) -> SearchResponse | Pending:
        gw = self.gw
        name, _ = await gw.resolve_model(body.model, needs_moments=True)
        (query,) = gw.check_queries([body.query])
        library = await call(self.check_videos, name, body.video_ids)
        digest = request_hash(body, name, query, library)
        offset = read_page_token(body.page_token, digest)
        await call(gw.backend.jobs.check_capacity)
        deadline = time.monotonic() + gw.settings.search_wait_s
        record = await call(self.submit, body, name, query, digest)
        if not record.status.finished:
            record = await gw.wait_job(record.job_id, deadline)
        if record.status == Status.failed:
            raise job_error(record)
        if record.status != Status.ready:
            return Pending(status=record.status, video_id=SEARCH_JOB_VIDEO, job_id=record.job_id,
                           retry_after=gw._retry_after(),
                           message="the search is running; repeat the same request to get it")
        return shape(body, name, query, record.result or {}, offset, digest)


def shape(body: SearchRequest, model: str, query: str, result: dict[str, Any], offset: int,
          digest: str) -> SearchResponse:
    """One page of the worker's ranked moments, as moments or grouped by video (best video first)."""
    moments = [SearchMoment(video_id=v, start=s, end=e, score=c, thumbnail=t) for v, s, e, c, t in
               result.get("hits", [])]
    out = SearchResponse(query=query, model=model, group_by=body.group_by, exhaustive=body.exhaustive,
                         searched_videos=int(result.get("searched", 0)),
                         grounded_videos=int(result.get("grounded", 0)))
    items: list[Any]
    if body.group_by == "video":
        by_video: dict[str, list[SearchMoment]] = {}
        for m in moments:  # best first, so each video's first moment is its best
            by_video.setdefault(m.video_id, []).append(m)
        items = [SearchVideo(video_id=v, score=ms[0].score, moments=ms) for v, ms in by_video.items()]
    else:
        items = moments
    page: list[Any] = items[offset: offset + body.top_k]
    if offset + body.top_k < len(items):
        out.next_page_token = page_token(offset + body.top_k, digest)
    if body.group_by == "video":
        out.videos = page
    else:
        out.moments = page
    return out
