"""What the API does behind its routes: model checks, storing uploads, submitting jobs and waiting for them.

Every backend call here is synchronous (Redis round trips of a millisecond); the async routes run them in the
thread pool and wait with ``asyncio.sleep`` in between, so a waiting request holds no thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from models import zoo

from .backend import Backend
from .errors import Conflict, InvalidRequest, NotFound, QueueFull, ServiceError, Unavailable
from .schemas import Job, JobKind, JobRecord, Mode, ModelInfo, Pending, Readiness, Status, VideoRecord
from .settings import Settings
from .uploads import Upload

T = TypeVar("T")

_POLL_FIRST_S, _POLL_MAX_S = 0.02, 0.25
_VIDEO_ID_CHARS = frozenset("0123456789abcdef")


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking backend call in the thread pool."""
    return await run_in_threadpool(fn, *args, **kwargs)


def resolve_specs(settings: Settings) -> dict[str, zoo.ModelSpec]:
    """The configured models' specs (user models from the registry file first); unknown names refuse to start."""
    if settings.registry_file is not None:
        zoo.load_registry_file(settings.registry_file, overwrite=True)
    specs = {}
    for name in settings.models:
        try:
            specs[name] = zoo.get_model(name)
        except zoo.UnknownModelError as err:
            raise RuntimeError(f"R2_MODELS names an unknown model: {err}. Register your own models in the "
                               "file named by R2_REGISTRY_FILE.") from None
    return specs


def job_error(record: JobRecord | VideoRecord) -> ServiceError:
    return ServiceError(record.error_message or "the job failed", code=record.error_code or "internal_error",
                        status=record.error_status or 500)


class Gateway:
    """The API side of the service, shared by all routes of one app."""

    def __init__(self, settings: Settings, backend: Backend, specs: dict[str, zoo.ModelSpec]) -> None:
        self.settings, self.backend, self.specs = settings, backend, specs

    # ------------------------------------------------------------------------------------------------ models

    def spec(self, name: str | None) -> zoo.ModelSpec:
        name = name or self.settings.model_name
        spec = self.specs.get(name)
        if spec is None:
            raise NotFound(f"model {name!r} is not served here; served: {', '.join(self.specs)} (GET /v1/models)",
                           code="unknown_model")
        return spec

    def model_infos(self) -> list[ModelInfo]:
        workers = self.backend.state.live_workers()
        out = []
        for name, spec in self.specs.items():
            views = [w.models[name] for w in workers if name in w.models]
            missing = sorted({f for v in views if not v.loaded for f in v.missing_files})
            out.append(ModelInfo(name=name, dataset=spec.dataset, domain=spec.domain, clip=spec.clip, fps=spec.fps,
                                 outputs=spec.outputs, default=name == self.settings.model_name,
                                 loaded=any(v.loaded for v in views), missing_files=missing))
        return out

    def require_available(self, spec: zoo.ModelSpec) -> None:
        """503 when live workers exist but none can run the model (weights missing); with no live worker the
        job waits in the queue for one."""
        workers = self.backend.state.live_workers()
        if not workers:
            return
        views = [w.models[spec.name] for w in workers if spec.name in w.models]
        if any(v.loaded for v in views):
            return
        broken = [v for v in views if not v.loading]
        if broken:
            raise Unavailable(_unavailable_message(spec.name, broken[0].missing_files, broken[0].message),
                              code="weights_missing" if broken[0].missing_files else "model_unavailable",
                              headers={"Retry-After": "60"})
        if not views:
            raise Unavailable(f"no live worker serves model {spec.name!r}", code="model_not_loaded",
                              headers={"Retry-After": "60"})

    def readiness(self) -> Readiness:
        self.backend.state.ping()
        workers = self.backend.state.live_workers()
        if not workers:
            raise Unavailable("no live worker: no worker heartbeat in the last "
                              f"{self.settings.heartbeat_ttl_s:g} s; start one with `r2tuning worker` "
                              "(same REDIS_URL and R2_ settings)", code="no_worker", headers={"Retry-After": "5"})
        problems = []
        for name in self.specs:
            views = [w.models[name] for w in workers if name in w.models]
            if any(v.loaded for v in views):
                continue
            view = next((v for v in views if v.missing_files), views[0] if views else None)
            if view is None:
                problems.append(("model_not_loaded", f"no live worker serves model {name!r}"))
            elif not view.loading:
                problems.append(("weights_missing" if view.missing_files else "model_unavailable",
                                 _unavailable_message(name, view.missing_files, view.message)))
            else:
                problems.append(("model_loading", f"model {name!r} is still loading"))
        if problems:
            raise Unavailable("\n".join(message for _, message in problems), code=problems[0][0],
                              headers={"Retry-After": "5"})
        return Readiness(workers=len(workers), models=list(self.specs))

    def check_queries(self, queries: list[str]) -> list[str]:
        s = self.settings
        if not queries:
            raise InvalidRequest("give at least one query", code="empty_query")
        if len(queries) > s.max_queries:
            raise InvalidRequest(f"{len(queries)} queries; at most {s.max_queries} per request (R2_MAX_QUERIES)",
                                 code="too_many_queries")
        out = []
        for i, query in enumerate(queries):
            text = query.strip()
            if not text:
                raise InvalidRequest(f"query {i} is empty", code="empty_query")
            if len(text) > s.max_query_chars:
                raise InvalidRequest(f"query {i} has {len(text)} characters; at most {s.max_query_chars} "
                                     "(R2_MAX_QUERY_CHARS)", code="query_too_long")
            out.append(text)
        return out

    def default_query(self, spec: zoo.ModelSpec, query: str | None) -> str:
        if query is None:
            if not spec.domain:
                raise InvalidRequest(f"model {spec.name!r} needs a query (it has no domain to use instead)",
                                     code="empty_query")
            query = spec.domain
        return self.check_queries([query])[0]

    # ------------------------------------------------------------------------------------------------ videos

    def video(self, video_id: str) -> VideoRecord:
        record = self.backend.state.get_video(video_id) if _is_video_id(video_id) else None
        if record is None:
            raise NotFound(f"no video with id {video_id!r} (never uploaded, deleted, or expired after "
                           f"{self.settings.video_ttl_s} s unused)", code="unknown_video")
        return record

    def store_upload(self, upload: Upload, model: str, *, encode: bool) -> tuple[VideoRecord, bool]:
        """Keep the bytes where every worker reaches them and create the record (once per distinct video).

        With ``encode``, a new (or previously failed) video gets an encode job. Returns (record, new job queued).
        """
        state, videos = self.backend.state, self.backend.videos
        video_id = upload.sha256
        if not videos.exists(video_id):
            videos.put_file(video_id, upload.path)
        else:
            videos.touch(video_id)
        record = VideoRecord(video_id=video_id, model=model, size_bytes=upload.size)
        created = state.create_video(record, self.settings.video_ttl_s)
        if not created:
            existing = state.get_video(video_id)
            if existing is None:  # expired in between
                created = state.create_video(record, self.settings.video_ttl_s)
            else:
                record = existing
                state.touch_video(video_id, self.settings.video_ttl_s)
                if encode and record.status == Status.failed:  # uploading again retries a failed video
                    state.update_video(video_id, status=Status.queued, progress=0.0, error_code=None,
                                       error_message=None, error_status=None)
                    record = record.model_copy(update=dict(status=Status.queued, progress=0.0, error_code=None,
                                                           error_message=None, error_status=None))
                    created = True
        if not (encode and created):
            return record, False
        job = Job(job_id=uuid.uuid4().hex, kind=JobKind.encode, video_id=video_id, model=record.model)
        state.create_job(JobRecord(job_id=job.job_id, kind=job.kind, video_id=video_id, model=job.model),
                         self.settings.result_ttl_s)
        try:
            self.backend.queue.enqueue(job)
        except QueueFull:
            state.delete_video(video_id)
            raise
        state.update_video(video_id, job_id=job.job_id)
        return record, True

    def delete_video(self, video_id: str) -> None:
        self.video(video_id)
        self.backend.state.delete_video(video_id)
        self.backend.videos.delete(video_id)
        self.backend.features.delete_video(video_id)

    # ------------------------------------------------------------------------------------------------ jobs

    def submit(self, video_id: str, spec: zoo.ModelSpec, mode: Mode, queries: list[str], **params: Any) -> JobRecord:
        """The job answering this request: an identical request's job when there is one, else a new one."""
        state = self.backend.state
        fingerprint = json.dumps([video_id, spec.name, mode.value, queries, params], sort_keys=True)
        request_hash = hashlib.sha256(fingerprint.encode()).hexdigest()
        job = Job(job_id=uuid.uuid4().hex, kind=JobKind.ground, video_id=video_id, model=spec.name, mode=mode,
                  queries=queries, **params)
        for _ in range(3):
            existing = state.claim_request(request_hash, job.job_id, self.settings.result_ttl_s)
            if existing is None:
                break
            record = state.get_job(existing)
            if record is not None and record.status != Status.failed:
                return record
            state.release_request(request_hash, existing)  # failed or expired: this request runs again
            if record is not None:
                return record
        record = JobRecord(job_id=job.job_id, kind=job.kind, video_id=video_id, model=spec.name)
        state.create_job(record, self.settings.result_ttl_s)
        try:
            self.backend.queue.enqueue(job)
        except QueueFull:
            state.release_request(request_hash, job.job_id)
            raise
        return record

    async def wait_video(self, video_id: str, deadline: float) -> VideoRecord:
        """The video once ready; its error once failed; 409 when still encoding at ``deadline``."""
        delay = _POLL_FIRST_S
        while True:
            record = await call(self.video, video_id)
            if record.status == Status.ready:
                return record
            if record.status == Status.failed:
                raise job_error(record)
            if time.monotonic() >= deadline:
                raise Conflict(f"video {video_id} is {record.status.value} ({record.progress:.0%} encoded); "
                               f"retry in a few seconds or poll GET /v1/videos/{video_id} until it is ready",
                               code="video_not_ready", headers={"Retry-After": str(self._retry_after())})
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, _POLL_MAX_S)

    async def wait_job(self, job_id: str, deadline: float) -> JobRecord:
        delay = _POLL_FIRST_S
        while True:
            record = await call(self.backend.state.get_job, job_id)
            if record is None:
                raise Unavailable(f"job {job_id} vanished (expired); repeat the request", code="job_lost")
            if record.status.finished or time.monotonic() >= deadline:
                return record
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, _POLL_MAX_S)

    async def run(self, video_id: str, spec: zoo.ModelSpec, mode: Mode, queries: list[str], *, wait_s: float,
                  video_must_be_ready: bool = True, **params: Any) -> dict[str, Any] | Pending:
        """Submit (or join) the job for a request and wait for its answer up to ``wait_s`` in total."""
        deadline = time.monotonic() + wait_s
        if video_must_be_ready:
            await self.wait_video(video_id, deadline)
        await call(self.require_available, spec)
        record = await call(self.submit, video_id, spec, mode, queries, **params)
        record = await self.wait_job(record.job_id, deadline)
        if record.status == Status.ready:
            return {"video_id": video_id, "model": spec.name, **(record.result or {})}
        if record.status == Status.failed:
            raise job_error(record)
        return Pending(status=record.status, video_id=video_id, job_id=record.job_id,
                       retry_after=self._retry_after(),
                       message="the answer is being computed; repeat the same request to get it")

    def _retry_after(self) -> int:
        return max(1, min(30, round(self.settings.moments_wait_s / 2) or 1))


def _is_video_id(value: str) -> bool:
    return len(value) == 64 and set(value) <= _VIDEO_ID_CHARS


def _unavailable_message(name: str, missing: list[str], how: str | None) -> str:
    text = f"model {name!r} is not available on the workers"
    if missing:
        text += ": missing weight files: " + ", ".join(missing)
    if how:
        text += ". " + how
    return text
