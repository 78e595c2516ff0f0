"""What the API does behind its routes: model checks, storing uploads, submitting jobs and waiting for them.

Backend calls here are synchronous (Redis round trips of a millisecond): the async routes run them in the
thread pool. Waiting for a job is a blocking wait on its done signal inside the event loop, so a waiting
request holds neither a thread nor a polling loop.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from service.contract.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unavailable,
)
from service.contract.schemas import (
    PREPROCESS_PATTERN,
    EncodingRecord,
    Job,
    JobKind,
    JobRecord,
    Mode,
    ModelCard,
    Pending,
    Status,
    TrainRequest,
    VideoRecord,
    encoding_field,
)
from service.contract.settings import Settings
from service.contract.urls import UrlPolicy
from service.store.backend import Backend

from .catalog import Catalog
from .uploads import Upload

T = TypeVar("T")

_VIDEO_ID_CHARS = frozenset("0123456789abcdef")
_JOB_ID_TRIES = 20  # how long (x 50 ms) a callback waits for a concurrent upload's encoding job to be named
_MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the zoo's rule (models.zoo.spec)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking backend call in the thread pool."""
    return await run_in_threadpool(fn, *args, **kwargs)


def job_error(record: JobRecord | VideoRecord) -> ServiceError:
    return ServiceError(record.error_message or "the job failed", code=record.error_code or "internal_error",
                        status=record.error_status or 500)


class Gateway:
    """The API side of the service, shared by all routes of one app."""

    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings, self.backend = settings, backend
        self.catalog = Catalog(settings, backend.records)
        self.urls = UrlPolicy(settings.fetch_allowlist)

    # ------------------------------------------------------------------------------------------------ webhooks

    def check_callback(self, url: str | None) -> str | None:
        """A request's ``callback_url`` once allowed (422 otherwise); None when it names none. Blocking (DNS)."""
        if url is None or url == "":
            return None
        if self.settings.webhook_secret is None:
            raise InvalidRequest("callback_url needs signed webhooks, which this service has not enabled "
                                 "(set R2_WEBHOOK_SECRET)", code="webhooks_disabled")
        self.urls.check(url, what="callback_url")
        return url

    def watch_job(self, job_id: str, url: str | None, ttl_s: int | None = None) -> None:
        """Deliver the end of a job to ``url`` (at once when it has ended already)."""
        if url is not None:
            self.backend.jobs.add_callback(job_id, url, ttl_s or self.settings.result_ttl_s)

    def watch_video(self, record: VideoRecord, url: str | None) -> None:
        """Deliver the end of a video's encoding to ``url``: at once for a video that is ready already."""
        if url is None:
            return
        for _ in range(_JOB_ID_TRIES):  # a concurrent upload of the same bytes may be queueing its encoding now
            if record.status == Status.ready or record.job_id is not None:
                break
            time.sleep(0.05)
            record = self.video(record.video_id)
        if record.status == Status.ready or record.job_id is None:
            done = JobRecord(job_id=record.job_id or "", kind=JobKind.encode_video, video_id=record.video_id,
                             model=record.model, status=Status.ready)
            self.backend.jobs.add_callback(done.job_id, url, self.settings.result_ttl_s, done.model_dump_json())
        else:
            self.watch_job(record.job_id, url)

    # ------------------------------------------------------------------------------------------------ models

    def model(self, requested: str | None, *, needs_moments: bool = False) -> tuple[str, ModelCard | None]:
        """The served model a request names (or the default) and its card when a worker described it. Blocking
        (it may read the heartbeats): the event loop calls :meth:`resolve_model`."""
        name = self.catalog.name(requested)
        return name, _moments_checked(name, self.catalog.card(name), needs_moments)

    async def resolve_model(self, requested: str | None, *,
                            needs_moments: bool = False) -> tuple[str, ModelCard | None]:
        """:meth:`model` for the event loop: from the catalog's fresh copy of the heartbeats when it names the
        model (every warm query), else in the thread pool, so no Redis read ever blocks the loop."""
        name, workers = requested or self.settings.model_name, self.catalog.snapshot()
        if workers is not None and name in self.catalog.served(workers=workers):
            return name, _moments_checked(name, self.catalog.card(name, workers), needs_moments)
        return await call(self.model, requested, needs_moments=needs_moments)

    def check_preprocess(self, name: str, card: ModelCard | None, preprocess: str | None) -> str | None:
        """The frame pipeline a request names (None: the model's default). The workers say which pipelines
        exist (their model cards); before any has reported, the worker that takes the job checks the name."""
        if preprocess is None or preprocess == "":
            return None
        if not re.fullmatch(PREPROCESS_PATTERN, preprocess):
            raise InvalidRequest(f"preprocess {preprocess[:40]!r} is not a pipeline name (lowercase letters, "
                                 "digits, '-' or '_')", code="unknown_preprocess")
        if card is not None and card.preprocess_options and preprocess not in card.preprocess_options:
            raise InvalidRequest(f"model {name!r} has no frame pipeline {preprocess!r}; choose one of: "
                                 f"{', '.join(card.preprocess_options)}", code="unknown_preprocess")
        return preprocess

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
            if not is_text(text):
                raise InvalidRequest(f"query {i} contains a lone UTF-16 surrogate (U+D800-U+DFFF), which is not "
                                     "text; send valid Unicode", code="invalid_text")
            if not text:
                raise InvalidRequest(f"query {i} is empty", code="empty_query")
            if len(text) > s.max_query_chars:
                raise InvalidRequest(f"query {i} has {len(text)} characters; at most {s.max_query_chars} "
                                     "(R2_MAX_QUERY_CHARS)", code="query_too_long")
            out.append(text)
        return out

    def default_query(self, name: str, card: ModelCard | None, query: str | None) -> str:
        if query is None:
            if card is None or not card.domain:
                raise InvalidRequest(f"model {name!r} needs a query (it has no domain to use instead)",
                                     code="empty_query")
            query = card.domain
        return self.check_queries([query])[0]

    # ------------------------------------------------------------------------------------------------ videos

    def video(self, video_id: str) -> VideoRecord:
        record = self.backend.records.get_video(video_id) if _is_video_id(video_id) else None
        if record is None:
            raise NotFound(f"no video with id {video_id[:80]!r} (never uploaded, deleted, or expired after "
                           f"{self.settings.video_ttl_s} s unused)", code="unknown_video")
        return record

    def store_upload(self, upload: Upload, model: str, *, encode: bool,
                     preprocess: str | None = None) -> tuple[VideoRecord, bool]:
        """Keep the bytes where every worker reaches them and create the record (once per distinct video).

        With ``encode``, a new (or previously failed) video gets an encode job, with the frame pipeline the
        record names (``preprocess`` for a new record). Returns (record, new job queued).
        """
        records, videos = self.backend.records, self.backend.videos
        video_id = upload.sha256
        if not videos.exists(video_id):
            videos.put_file(video_id, upload.path)
        else:
            videos.touch(video_id)
        record = VideoRecord(video_id=video_id, model=model, size_bytes=upload.size, preprocess=preprocess)
        created = records.create_video(record, self.settings.video_ttl_s)
        if not created:
            existing = records.get_video(video_id)
            if existing is None:  # expired in between
                created = records.create_video(record, self.settings.video_ttl_s)
            else:
                record = existing
                records.touch_video(video_id, self.settings.video_ttl_s)
                if encode and model != record.model:
                    return self._encode_for(record, model, preprocess)
                if encode and record.status == Status.failed:  # uploading again retries a failed video
                    retry = dict(status=Status.queued, progress=0.0, error_code=None, error_message=None,
                                 error_status=None)
                    records.update_video(video_id, **retry)
                    record = record.model_copy(update=retry)
                    created = True
        if not (encode and created):
            return record, False
        job = Job(job_id=uuid.uuid4().hex, kind=JobKind.encode_video, video_id=video_id, model=record.model,
                  preprocess=record.preprocess)
        try:
            self.backend.jobs.submit(job, self.settings.result_ttl_s)
        except Exception:
            records.delete_video(video_id)
            raise
        records.update_video(video_id, job_id=job.job_id)
        return record.model_copy(update=dict(job_id=job.job_id)), True

    def _encode_for(self, record: VideoRecord, model: str, preprocess: str | None) -> tuple[VideoRecord, bool]:
        """The same bytes uploaded for another model: encode them for it too (once; again after a failure)."""
        found = record.encoding(model)
        if found is not None and found.status != Status.failed:
            return record, False
        entry = EncodingRecord(status=Status.queued, preprocess=preprocess)
        field = {encoding_field(model): entry.model_dump(mode="json")}
        self.backend.records.update_video(record.video_id, **field)
        job = Job(job_id=uuid.uuid4().hex, kind=JobKind.encode_video, video_id=record.video_id, model=model,
                  preprocess=preprocess)
        try:
            self.backend.jobs.submit(job, self.settings.result_ttl_s)
        except Exception:
            failed = entry.model_copy(update=dict(status=Status.failed, error_code="not_queued",
                                                  error_message="the encoding could not be queued; upload again"))
            self.backend.records.update_video(record.video_id, **{encoding_field(model): failed.model_dump(
                mode="json")})
            raise
        return record.model_copy(update=dict(encodings={**record.encodings, model: entry})), True

    def delete_video(self, video_id: str) -> None:
        self.video(video_id)
        self.backend.records.delete_video(video_id)
        self.backend.videos.delete(video_id)
        self.backend.thumbnails.delete_video(video_id)  # first: it reads the features' index, deleted next
        self.backend.features.delete_video(video_id)
        for model in self.settings.models:  # no longer searchable (trained models' sets are cleaned by searches)
            self.backend.features.store.index_remove(self.backend.features.keys.library(model), video_id)
        self.backend.reels.delete_video(video_id)

    # ------------------------------------------------------------------------------------------------ jobs

    def submit(self, video_id: str, model: str, mode: Mode, queries: list[str], **params: Any) -> JobRecord:
        """The job answering this request: an identical request's job when there is one, else a new one."""
        texts = [video_id, model, *queries, *(v for v in params.values() if isinstance(v, str))]
        if not all(is_text(t) for t in texts):
            raise InvalidRequest("the request contains a lone UTF-16 surrogate (U+D800-U+DFFF), which is not text; "
                                 "send valid Unicode", code="invalid_text")
        fingerprint = json.dumps([video_id, model, mode.value, queries, params], sort_keys=True)
        request_hash = hashlib.sha256(fingerprint.encode()).hexdigest()
        job = Job(job_id=uuid.uuid4().hex, kind=JobKind.ground, video_id=video_id, model=model, mode=mode,
                  queries=queries, **params)
        # One step in the backend (record, request mapping and queue entry together, or nothing): a failure at
        # any point leaves no record that would answer the same request "queued" with nothing queued.
        return self.backend.jobs.submit(job, self.settings.result_ttl_s, request_hash)

    async def wait_video(self, video_id: str, deadline: float) -> VideoRecord:
        """The video once ready; its error once failed; 409 when still encoding at ``deadline``."""
        record = await call(self.video, video_id)
        if record.status not in (Status.ready, Status.failed) and record.job_id:
            await self.backend.jobs.wait(record.job_id, max(0.0, deadline - time.monotonic()))
            record = await call(self.video, video_id)
        if record.status == Status.ready:
            return record
        if record.status == Status.failed:
            raise job_error(record)
        raise self.not_ready(record)

    def not_ready(self, record: VideoRecord) -> Conflict:
        return Conflict(f"video {record.video_id} is {record.status.value} ({record.progress:.0%} encoded); "
                        f"retry in a few seconds or poll GET /v1/videos/{record.video_id} until it is ready",
                        code="video_not_ready", headers={"Retry-After": str(self._retry_after())})

    async def wait_job(self, job_id: str, deadline: float) -> JobRecord:
        record = await self.backend.jobs.wait(job_id, max(0.0, deadline - time.monotonic()))
        if record is None:  # not finished in time: its current state, for the 202
            record = await call(self.backend.jobs.get, job_id)
        if record is None:
            raise Unavailable(f"job {job_id} vanished (expired); repeat the request", code="job_lost")
        return record

    def submit_when_ready(self, video_id: str, model: str, mode: Mode, queries: list[str],
                          **params: Any) -> VideoRecord | JobRecord:
        """The request's job if the video is ready (one trip to the thread pool on the warm path), else the
        video's record so the caller can wait for its encoding. A request naming no frame pipeline gets the one
        its video was uploaded with (for the upload's model)."""
        record = self.video(video_id)
        if record.status != Status.ready:
            return record
        if params.get("preprocess") is None and record.model == model:
            params["preprocess"] = record.preprocess  # the upload's pipeline: no second encoding
        self.catalog.require_available(model)
        return self.submit(video_id, model, mode, queries, **params)

    async def run(self, video_id: str, model: str, mode: Mode, queries: list[str], *, wait_s: float,
                  video_must_be_ready: bool = True, **params: Any) -> dict[str, Any] | Pending:
        """Submit (or join) the job for a request and wait for its answer up to ``wait_s`` in total; its end is
        delivered to ``callback_url`` (checked by :meth:`check_callback`) too."""
        deadline = time.monotonic() + wait_s
        callback_url = params.pop("callback_url", None)
        if video_must_be_ready:
            found = await call(self.submit_when_ready, video_id, model, mode, queries, **params)
            if isinstance(found, VideoRecord):  # still encoding: wait for it (409 at the deadline), then submit
                await self.wait_video(video_id, deadline)
                found = await call(self.submit_when_ready, video_id, model, mode, queries, **params)
            if isinstance(found, VideoRecord):  # deleted and uploaded again meanwhile
                raise self.not_ready(found)
            record = found
        else:
            await call(self.catalog.require_available, model)
            record = await call(self.submit, video_id, model, mode, queries, **params)
        if callback_url is not None:
            await call(self.watch_job, record.job_id, callback_url)
        if not record.status.finished:
            record = await self.wait_job(record.job_id, deadline)
        if record.status == Status.ready:
            return {"video_id": video_id, "model": model, **(record.result or {})}
        if record.status == Status.failed:
            raise job_error(record)
        return Pending(status=record.status, video_id=video_id, job_id=record.job_id,
                       retry_after=self._retry_after(),
                       message="the answer is being computed; repeat the same request to get it")

    # ------------------------------------------------------------------------------------------------ training

    def training_ttl_s(self) -> int:
        """A training job's record lives through its whole run (each progress update restarts this)."""
        return int(self.settings.train_max_seconds + self.settings.result_ttl_s)

    def submit_training(self, name: str, body: TrainRequest) -> JobRecord:
        """Check a training request against the limits and queue it (the worker checks the annotations)."""
        s = self.settings
        if not _MODEL_NAME_RE.fullmatch(name):
            raise InvalidRequest(f"model name {name[:80]!r} must be 1-64 letters, digits, '.', '_' or '-', starting "
                                 "with a letter or digit", code="invalid_model_name")
        if name in s.models:
            raise Conflict(f"model {name!r} is configured (R2_MODELS); train under another name",
                           code="model_exists")
        size = len(body.annotations.encode()) + len((body.val_annotations or "").encode())
        if size > s.train_max_annotation_bytes:
            raise PayloadTooLarge(f"the annotations are {size} bytes; at most {s.train_max_annotation_bytes} "
                                  "(R2_TRAIN_MAX_ANNOTATION_BYTES)", code="annotations_too_large")
        if body.epochs is not None and body.epochs > s.train_max_epochs:
            raise InvalidRequest(f"{body.epochs} epochs; at most {s.train_max_epochs} (R2_TRAIN_MAX_EPOCHS)",
                                 code="too_many_epochs")
        if body.max_seconds is not None and body.max_seconds > s.train_max_seconds:
            raise InvalidRequest(f"max_seconds {body.max_seconds:g}; at most {s.train_max_seconds:g} "
                                 "(R2_TRAIN_MAX_SECONDS)", code="training_too_long")
        if len(body.videos) > s.train_max_videos:
            raise InvalidRequest(f"{len(body.videos)} videos; at most {s.train_max_videos} (R2_TRAIN_MAX_VIDEOS)",
                                 code="too_many_videos")
        base, _ = self.model(body.base_model)
        if base == name:
            raise InvalidRequest("a model cannot be its own base model", code="invalid_request")
        for vid, video_id in body.videos.items():
            record = self.video(video_id)
            if record.status != Status.ready:
                raise Conflict(f"video {video_id} (annotation video {vid[:80]!r}) is {record.status.value}; train "
                               "once it is ready", code="video_not_ready")
        self.catalog.require_available(base)
        job = Job(job_id=uuid.uuid4().hex, kind=JobKind.train, video_id=base, model=name,
                  train=body.model_copy(update=dict(base_model=base)))
        return self.backend.jobs.submit(job, self.training_ttl_s())

    def training(self, name: str, job_id: str) -> JobRecord:
        record = self.backend.jobs.get(job_id) if len(job_id) <= 64 else None
        if record is None or record.kind != JobKind.train or record.model != name:
            raise NotFound(f"no training job {job_id[:80]!r} for model {name[:80]!r} (it never existed, or finished "
                           f"more than {self.settings.result_ttl_s} s ago)", code="unknown_job")
        return record

    def _retry_after(self) -> int:
        return max(1, min(30, round(self.settings.moments_wait_s / 2) or 1))


def _moments_checked(name: str, card: ModelCard | None, needs_moments: bool) -> ModelCard | None:
    if needs_moments and card is not None and not card.has_moments:
        raise InvalidRequest(f"model {name!r} outputs saliency only; use /highlights or /summary", code="no_moments")
    return card


def is_text(value: str) -> bool:
    """``value`` is Unicode text (UTF-8 encodable): no lone surrogates, which JSON escapes can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_video_id(value: str) -> bool:
    return len(value) == 64 and set(value) <= _VIDEO_ID_CHARS
