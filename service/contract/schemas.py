"""The contract both processes share: HTTP request/response bodies, the job payload and the stored records.

The API validates requests into these models, puts :class:`Job` payloads (JSON, never pickle) on the queue,
and reads back :class:`JobRecord` / :class:`VideoRecord`; the worker fills them. Nothing here imports torch.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

VIDEO_ID_EXAMPLE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
# A frame pipeline name as a request may give it. Which names exist is the workers' to say (ModelCard); the API
# only bounds the shape of the string.
PREPROCESS_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
PREPROCESS_HELP = ("frame pipeline: extract (the official feature extraction the checkpoints were trained on) or "
                   "script (the official single-video script); default: the model's (GET /v1/models)")


class Status(StrEnum):
    """Where a video or a job stands.

    ``queued``: waiting for a worker. ``processing``: a worker is on it (a video: decoding and encoding;
    ``progress`` grows from 0 to 1). ``ready``: done (a video: features cached, queries answer fast; a job:
    the answer is stored). ``failed``: it will not succeed as is; ``error`` says why.
    """

    queued = "queued"
    processing = "processing"
    ready = "ready"
    failed = "failed"

    @property
    def finished(self) -> bool:
        return self in (Status.ready, Status.failed)


class JobKind(StrEnum):
    """``encode``: decode and encode an uploaded video into the feature cache. ``ground``: answer queries.
    ``train``: train a model on uploaded videos (``POST /v1/models/{name}/train``). ``fetch``: download a video
    given by URL (``POST /v1/videos {"url"}``)."""

    encode_video = "encode"  # not ``encode``: that would shadow str.encode
    ground = "ground"
    train = "train"
    fetch = "fetch"  # ingest by URL: download the video, then queue its encoding


class Mode(StrEnum):
    """What a ground job returns: moments, a highlight curve, or a budgeted summary."""

    moments = "moments"
    highlights = "highlights"
    summary = "summary"


# ---------------------------------------------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    """A stable machine-readable ``code`` and a message for humans."""

    code: str = Field(examples=["unknown_video"])
    message: str = Field(examples=["no video with id 9f86d0... (it was never uploaded, was deleted or expired)"])


class ErrorBody(BaseModel):
    """Every error response has this body."""

    error: ErrorDetail

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"code": "unknown_model", "message": "model 'foo' is not served here; served: qvhighlights"}}]})


# ---------------------------------------------------------------------------------------------------------- videos


class ModelEncoding(BaseModel):
    """Where a video stands for one model: its features (and thumbnails) for that model's frames."""

    status: Status
    progress: float = Field(0.0, ge=0, le=1, description="share of the video encoded so far for this model")
    preprocess: str | None = Field(None, description="frame pipeline of these features")
    num_clips: int | None = None
    clip_seconds: float | None = None
    thumbnails: int = Field(0, description="per-clip JPEG thumbnails kept (GET /v1/videos/{id}/thumbnails/{clip}"
                                           "?model=...); 0: none")
    error: ErrorDetail | None = None


class VideoStatus(BaseModel):
    """An uploaded video: ``GET /v1/videos/{video_id}`` and the upload's answer."""

    video_id: str = Field(description="SHA-256 of the uploaded bytes (the same upload twice is encoded once)")
    status: Status
    progress: float = Field(ge=0, le=1, description="share of the video encoded so far")
    model: str = Field(description="model whose features the upload was encoded for")
    size_bytes: int
    duration: float | None = Field(None, description="seconds, once decoded")
    num_clips: int | None = Field(None, description="feature clips, once encoded")
    clip_seconds: float | None = Field(None, description="seconds per clip (1 / the model's fps)")
    preprocess: str | None = Field(None, description="frame pipeline the upload is encoded with (null until a "
                                                     "worker resolves the model's default)")
    error: ErrorDetail | None = None
    models: dict[str, ModelEncoding] = Field(
        default_factory=dict, description="status per model the video was (or is being) encoded for; the fields "
                                          "above describe ``model``")
    content: str = Field("", description="URL of the uploaded bytes (GET, with Range support)")
    created_at: float = Field(0.0, description="upload time (Unix seconds)")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"video_id": VIDEO_ID_EXAMPLE, "status": "ready", "progress": 1.0, "model": "qvhighlights",
         "size_bytes": 1048576, "duration": 150.0, "num_clips": 75, "clip_seconds": 2.0, "preprocess": "extract",
         "error": None, "models": {"qvhighlights": {
             "status": "ready", "progress": 1.0, "preprocess": "extract", "num_clips": 75, "clip_seconds": 2.0,
             "thumbnails": 75, "error": None}},
         "content": f"/v1/videos/{VIDEO_ID_EXAMPLE}/content", "created_at": 1.7e9}]})


class VideoList(BaseModel):
    """``GET /v1/videos``: newest first; pass ``next_page_token`` as ``page_token`` for the next page."""

    videos: list[VideoStatus]
    next_page_token: str | None = Field(None, description="null on the last page")


CALLBACK_HELP = ("URL to POST a signed event to when the job ends (docs/webhooks.md); its host must be in "
                 "R2_FETCH_ALLOWLIST")


class IngestRequest(BaseModel):
    """``POST /v1/videos`` with a JSON body: the worker downloads the video (same limits as an upload)."""

    url: str = Field(max_length=2048, description="http(s) URL of the video; its host must be in R2_FETCH_ALLOWLIST")
    model: str | None = Field(None, description="model to encode it for (default: the service's)")
    preprocess: str | None = Field(None, pattern=PREPROCESS_PATTERN, description=PREPROCESS_HELP)
    callback_url: str | None = Field(None, max_length=2048, description=CALLBACK_HELP)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://cdn.example.com/clips/beach.mp4", "model": "qvhighlights"}]})


class IngestStatus(BaseModel):
    """A video being fetched by URL: ``GET /v1/ingests/{job_id}``; ``video_id`` once the bytes are in."""

    job_id: str
    status: Status
    url: str
    video_id: str | None = Field(None, description="SHA-256 of the fetched bytes, once fetched; then follow "
                                                   "GET /v1/videos/{video_id}")
    error: ErrorDetail | None = None


# ---------------------------------------------------------------------------------------------------------- requests


class MomentsRequest(BaseModel):
    """Text queries on an uploaded video."""

    queries: list[str] = Field(description="one or more natural-language queries (limits: see settings)",
                               json_schema_extra={"minItems": 1, "items": {"type": "string", "minLength": 1}})
    model: str | None = Field(None, description="model name (GET /v1/models); default: the service's default")
    top_k: int = Field(10, ge=1, le=1000, description="most moments returned per query")
    nms_thres: float | None = Field(None, ge=0, le=1, description="NMS IoU threshold; default: the model's")
    min_score: float | None = Field(None, ge=0, le=1, description="drop moments scoring below this")
    preprocess: str | None = Field(None, pattern=PREPROCESS_PATTERN, description=PREPROCESS_HELP)
    callback_url: str | None = Field(None, max_length=2048, description=CALLBACK_HELP)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"queries": ["a man opens the fridge", "a dog runs on the beach"], "top_k": 5}]})


# ``query`` of /highlights and /summary: omitted means the model's domain; null is refused, so that the schema
# (a non-empty string, or nothing) is what the server accepts.
OptionalQuery = Annotated[str | None, WithJsonSchema({
    "type": "string", "minLength": 1, "description": "default (when omitted): the model's domain; required for "
                                                     "models without one (GET /v1/models)"})]


def _refuse_null(value: Any) -> Any:
    if value is None:
        raise ValueError("query may be omitted (the model's domain is used) but not null")
    return value


class HighlightsRequest(BaseModel):
    """The saliency curve of a video and its best clips, for highlight models or any model with a query."""

    model: str | None = Field(None, description="default: the service's default model")
    query: OptionalQuery = None
    top_k: int = Field(5, ge=1, le=1000, description="best clips returned")
    preprocess: str | None = Field(None, pattern=PREPROCESS_PATTERN, description=PREPROCESS_HELP)
    callback_url: str | None = Field(None, max_length=2048, description=CALLBACK_HELP)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "a dog runs on the beach", "top_k": 5}]})

    _no_null_query = field_validator("query", mode="before")(_refuse_null)


class SummaryRequest(BaseModel):
    """A summary: the most salient clips up to ``budget`` x the video's duration, merged into segments."""

    model: str | None = None
    query: OptionalQuery = None
    budget: float = Field(0.15, gt=0, le=1, description="share of the video the summary may keep")
    preprocess: str | None = Field(None, pattern=PREPROCESS_PATTERN, description=PREPROCESS_HELP)
    render: bool = Field(False, description="also cut the segments into an mp4 highlight reel (the answer's "
                                            "``reel``; limits: R2_REEL_MAX_SECONDS, R2_REEL_MAX_BYTES)")
    callback_url: str | None = Field(None, max_length=2048, description=CALLBACK_HELP)

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "a dog runs on the beach", "budget": 0.15},
        {"query": "a dog runs on the beach", "budget": 0.15, "render": True}]})

    _no_null_query = field_validator("query", mode="before")(_refuse_null)


# ---------------------------------------------------------------------------------------------------------- answers


class Moment(BaseModel):
    """A time span in seconds with its score (built from an engine row ``(start, end, score)`` too)."""

    start: float
    end: float
    score: float
    thumbnail: str | None = Field(None, description="URL of the JPEG of the clip the item starts in (when the "
                                                    "video has thumbnails for the model)")

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and len(value) == 3:
            return dict(start=value[0], end=value[1], score=value[2])
        return value


def _clip_times() -> Any:
    return Field(None, description="seconds (0 = the video's start) of the frame each saliency value was computed "
                                   "on: frames are sampled by index, so for a variable-frame-rate video these are "
                                   "not i x clip_seconds; null for features cached without them")


class QueryResult(BaseModel):
    """The answer to one query."""

    query: str
    moments: list[Moment] = Field(description="best first; empty for saliency-only models")
    saliency: list[float] = Field(description="one value per clip of clip_seconds")
    clip_seconds: float
    duration: float
    clip_times: list[float] | None = _clip_times()


def _answer_preprocess() -> Any:
    return Field(None, description="frame pipeline of the features the answer was computed on")


class MomentsAnswer(BaseModel):
    """Answers in query order (what a worker stores; the response adds the video and the model)."""

    results: list[QueryResult]
    preprocess: str | None = _answer_preprocess()


class MomentsResponse(MomentsAnswer):
    video_id: str
    model: str

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"video_id": VIDEO_ID_EXAMPLE, "model": "qvhighlights", "results": [
            {"query": "a man opens the fridge", "clip_seconds": 2.0, "duration": 150.0,
             "moments": [{"start": 24.0, "end": 38.0, "score": 0.91}, {"start": 96.0, "end": 102.0, "score": 0.42}],
             "saliency": [0.01, 0.02, 0.35, 0.88]}], "preprocess": "extract"}]})


class HighlightsAnswer(BaseModel):
    query: str
    clip_seconds: float
    duration: float
    saliency: list[float]
    highlights: list[Moment] = Field(description="the best clips, highest saliency first")
    preprocess: str | None = _answer_preprocess()
    clip_times: list[float] | None = _clip_times()


class HighlightsResponse(HighlightsAnswer):
    video_id: str
    model: str

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"video_id": VIDEO_ID_EXAMPLE, "model": "youtube-dog", "query": "dog", "clip_seconds": 2.0,
         "duration": 60.0, "saliency": [0.1, 0.7, 0.2], "highlights": [{"start": 2.0, "end": 4.0, "score": 0.7}],
         "preprocess": "extract"}]})


class Reel(BaseModel):
    """An mp4 of a summary's segments, cut from the video's own frames."""

    url: str = Field(description="GET it (video/mp4, Range support): /v1/videos/{id}/reels/{job_id}.mp4")
    duration: float = Field(description="seconds (the segments' total)")
    size_bytes: int


class SummaryAnswer(BaseModel):
    query: str
    budget: float
    duration: float
    segments: list[Moment] = Field(description="in time order; score = mean saliency of the segment")
    preprocess: str | None = _answer_preprocess()
    reel: Reel | None = Field(None, description="the rendered highlight reel (requests with render: true)")


class SummaryResponse(SummaryAnswer):
    video_id: str
    model: str

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"video_id": VIDEO_ID_EXAMPLE, "model": "tvsum-bk", "query": "BK", "budget": 0.15, "duration": 120.0,
         "segments": [{"start": 10.0, "end": 16.0, "score": 0.8}, {"start": 70.0, "end": 82.0, "score": 0.7}],
         "preprocess": "extract"}]})


class Pending(BaseModel):
    """202: the answer is being computed. Repeat the identical request after ``retry_after`` seconds to get it
    (identical requests share one job, so repeating costs nothing)."""

    status: Status
    video_id: str
    job_id: str
    retry_after: int
    message: str

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "processing", "video_id": VIDEO_ID_EXAMPLE, "job_id": "2f1c9a6e0b7d4e1f",
         "retry_after": 2, "message": "the answer is being computed; repeat the same request to get it"}]})


class ModelCard(BaseModel):
    """What a model is and can do, as the workers that load it describe it (part of their heartbeat).

    The API learns the models' capabilities from these cards only: it never reads weights or the model zoo.
    """

    name: str
    dataset: str
    domain: str | None = Field(description="the query highlight-only models use when a request gives none")
    clip: str = Field(description="CLIP architecture")
    fps: float = Field(description="frames per second the video is sampled at (one feature clip each)")
    outputs: Literal["moments+saliency", "saliency"] = Field(
        description='"moments+saliency" or "saliency" (highlight-only models)')
    unit: float | None = Field(None, description="seconds moment boundaries are rounded to (None: no rounding)")
    preprocess: str | None = Field(None, description="frame pipeline used when a request names none")
    preprocess_options: list[str] = Field(default_factory=list,
                                          description="frame pipelines a request may choose (empty: unknown)")

    @property
    def has_moments(self) -> bool:
        return self.outputs == "moments+saliency"


class ModelInfo(BaseModel):
    """A served model; its description is null until a worker that loads it has reported."""

    name: str
    dataset: str | None
    domain: str | None
    clip: str | None = Field(description="CLIP architecture")
    fps: float | None = Field(description="frames per second the video is sampled at (one feature clip each)")
    outputs: str | None = Field(description='"moments+saliency" or "saliency" (highlight-only models)')
    default: bool
    loaded: bool = Field(description="a live worker has it loaded")
    missing_files: list[str] = Field(description="weight files a worker could not find or fetch")
    preprocess: str | None = Field(None, description="frame pipeline used when a request names none")
    preprocess_options: list[str] = Field(default_factory=list, description="frame pipelines a request may choose")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "qvhighlights", "dataset": "QVHighlights", "domain": None, "clip": "ViT-B-32", "fps": 0.5,
         "outputs": "moments+saliency", "default": True, "loaded": True, "missing_files": [],
         "preprocess": "extract", "preprocess_options": ["script", "extract"]}]})


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    workers: int = Field(description="live workers (fresh heartbeat)")
    models: list[str] = Field(description="configured models, all loaded by a live worker")


# ---------------------------------------------------------------------------------------------------------- training

AnnotationFormat = Literal["auto", "qvhighlights", "charades-sta", "youtube", "tvsum"]


class TrainRequest(BaseModel):
    """Train a model on uploaded videos: ``POST /v1/models/{name}/train``.

    ``annotations`` is the content of an annotation file in an official format (QVHighlights / Charades jsonl,
    Charades-STA text, YouTube Highlights or TVSum json). Its video ids are uploaded video ids, or are mapped to
    them by ``videos``. Every video must be uploaded for ``base_model`` (``POST /v1/videos`` with that model) and
    ready. The trained model is served under ``name`` as soon as the job is ready.
    """

    annotations: str = Field(min_length=1, description="the annotation file's content (limit: R2_TRAIN_MAX_"
                                                       "ANNOTATION_BYTES)")
    format: AnnotationFormat = "auto"
    val_annotations: str | None = Field(None, description="validation annotations, same format; scored each epoch")
    videos: dict[str, str] = Field(default_factory=dict,
                                   description="annotation video id -> uploaded video id (default: they are equal)")
    base_model: str | None = Field(None, description="served model whose CLIP, frames and architecture are used "
                                                     "(default: the service's default model)")
    preset: Literal["qvhighlights", "charades", "youtube", "tvsum"] | None = Field(
        None, description="official training config (default: from the annotation format)")
    init: Literal["fresh", "base"] = Field("fresh", description="fresh: official initialisation; base: fine-tune "
                                                                "the base model's weights")
    epochs: int | None = Field(None, ge=1, description="default: the preset's, at most R2_TRAIN_MAX_EPOCHS")
    batch_size: int | None = Field(None, ge=1, le=1024)
    lr: float | None = Field(None, gt=0, le=1)
    warmup_iters: int | None = Field(None, ge=0, le=100_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    max_seconds: float | None = Field(None, gt=0, description="training time limit (at most R2_TRAIN_MAX_SECONDS)")

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"annotations": '{"qid": 0, "vid": "9f86d0...", "query": "a dog runs", "duration": 30, '
                        '"relevant_windows": [[4, 10]]}\n', "base_model": "qvhighlights", "epochs": 5}]})


class TrainingStatus(BaseModel):
    """A training job: ``POST /v1/models/{name}/train`` and ``GET /v1/models/{name}/train/{job_id}``."""

    job_id: str
    model: str = Field(description="the model being trained (served under this name once ready)")
    base_model: str
    status: Status
    progress: float = Field(ge=0, le=1, description="share of the training iterations done")
    stage: str | None = Field(None, description="queued, features, training, done")
    epoch: int | None = Field(None, description="epochs completed")
    epochs: int | None = None
    iteration: int | None = None
    iterations: int | None = None
    loss: float | None = Field(None, description="loss of the last iteration")
    metrics: dict[str, float] | None = Field(None, description="the last validation (if validation annotations)")
    initial_metrics: dict[str, float] | None = Field(None, description="validation before the first step")
    result: dict[str, Any] | None = Field(None, description="once ready: epochs, best epoch, metrics, stop reason")
    error: ErrorDetail | None = None
    created_at: float
    updated_at: float

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"job_id": "2f1c9a6e0b7d4e1f", "model": "my-model", "base_model": "qvhighlights", "status": "processing",
         "progress": 0.4, "stage": "training", "epoch": 2, "epochs": 5, "iteration": 120, "iterations": 300,
         "loss": 1.02, "metrics": {"MR-full-R1@0.5": 41.3}, "initial_metrics": {"MR-full-R1@0.5": 9.4},
         "result": None, "error": None, "created_at": 1.7e9, "updated_at": 1.7e9}]})


# ---------------------------------------------------------------------------------------------------------- queue


class Job(BaseModel):
    """What goes on the queue (as JSON). Ground jobs carry everything the worker needs to answer."""

    job_id: str
    kind: JobKind
    video_id: str
    model: str
    mode: Mode = Mode.moments
    queries: list[str] = []
    top_k: int | None = None
    nms_thres: float | None = None
    min_score: float | None = None
    budget: float | None = None
    render: bool = False
    """Summary jobs: also cut the segments into an mp4 reel."""
    preprocess: str | None = None
    """Frame pipeline to encode the video with (None: the model's default)."""
    train: TrainRequest | None = None
    """Train jobs: the request (``model`` is the new model's name, ``video_id`` the base model)."""
    url: str | None = None
    """Fetch jobs: the video's URL (``video_id`` is empty until the bytes are hashed)."""
    callback_url: str | None = None
    """Fetch jobs: the webhook receiver, registered on the encoding the fetch queues."""
    created_at: float = Field(default_factory=time.time)


class WorkerModel(BaseModel):
    """A worker's view of one configured model (part of its heartbeat)."""

    loaded: bool
    loading: bool = False
    """The worker is still loading it (not an error yet)."""
    card: ModelCard | None = None
    """What the model can do (known from its spec even while its weights are missing)."""
    feature_id: str | None = None
    missing_files: list[str] = []
    message: str | None = None
    """Why it is not loaded, with what to do (e.g. which file to download and where to put it)."""


class WorkerInfo(BaseModel):
    """A worker's heartbeat."""

    worker_id: str
    host: str
    pid: int
    device: str
    started_at: float
    seen_at: float
    models: dict[str, WorkerModel]
    running: list[str] = Field(default_factory=list, description="ids of the jobs in hand")


# ---------------------------------------------------------------------------------------------------------- records


class VideoRecord(BaseModel):
    """Stored per uploaded video (``{p}:video:{id}``)."""

    video_id: str
    status: Status = Status.queued
    progress: float = 0.0
    model: str
    size_bytes: int
    duration: float | None = None
    num_clips: int | None = None
    clip_seconds: float | None = None
    preprocess: str | None = None
    """The pipeline the upload asked for (None: the model's default, written here once a worker resolves it)."""
    error_code: str | None = None
    error_message: str | None = None
    error_status: int | None = None
    job_id: str | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    encodings: dict[str, EncodingRecord] = Field(default_factory=dict)
    """Per model (the upload's included): stored as one hash field per model (:func:`encoding_field`), so
    workers encoding for different models never overwrite each other's state."""

    @model_validator(mode="before")
    @classmethod
    def _fold_encodings(cls, value: Any) -> Any:
        if isinstance(value, dict) and any(isinstance(k, str) and k.startswith(ENCODING_FIELD) for k in value):
            value = dict(value)
            encodings = dict(value.get("encodings") or {})
            for key in [k for k in value if k.startswith(ENCODING_FIELD)]:
                encodings[key[len(ENCODING_FIELD):]] = value.pop(key)
            value["encodings"] = encodings
        return value

    def encoding(self, model: str) -> EncodingRecord | None:
        """The video's state for ``model``. The upload's model is described by the record's own fields (its
        entry adds where the features and thumbnails are)."""
        found = self.encodings.get(model)
        if model != self.model:
            return found
        return EncodingRecord(status=self.status, progress=self.progress, preprocess=self.preprocess,
                              feature_id=found.feature_id if found else None, num_clips=self.num_clips,
                              clip_seconds=self.clip_seconds, thumbnails=found.thumbnails if found else 0,
                              error_code=self.error_code, error_message=self.error_message,
                              error_status=self.error_status, updated_at=self.updated_at)

    def public(self, model: str | None = None) -> VideoStatus:
        """The video as the API shows it; the top-level fields describe ``model`` (default: the upload's)."""
        models = {name: enc.public() for name, enc in self.encodings.items()}
        own = self.encoding(self.model)
        assert own is not None
        models[self.model] = own.public()
        shown = model or self.model
        enc = self.encoding(shown)
        if enc is None:
            raise KeyError(shown)
        error = enc.public().error
        return VideoStatus(video_id=self.video_id, status=enc.status, progress=enc.progress, model=shown,
                           size_bytes=self.size_bytes, duration=self.duration, num_clips=enc.num_clips,
                           clip_seconds=enc.clip_seconds, preprocess=enc.preprocess, error=error, models=models,
                           content=f"/v1/videos/{self.video_id}/content", created_at=self.created_at)


ENCODING_FIELD = "enc:"


def encoding_field(model: str) -> str:
    """The record hash field holding ``model``'s :class:`EncodingRecord` (update it with ``**{field: ...}``)."""
    return f"{ENCODING_FIELD}{model}"


class EncodingRecord(BaseModel):
    """Stored per (video, model): what :class:`ModelEncoding` shows, plus where the features are."""

    status: Status = Status.queued
    progress: float = 0.0
    preprocess: str | None = None
    feature_id: str | None = None
    """The features' (and thumbnails') cache key for this model's frames."""
    num_clips: int | None = None
    clip_seconds: float | None = None
    thumbnails: int = 0
    error_code: str | None = None
    error_message: str | None = None
    error_status: int | None = None
    updated_at: float = Field(default_factory=time.time)

    def public(self) -> ModelEncoding:
        error = ErrorDetail(code=self.error_code, message=self.error_message or "") if self.error_code else None
        return ModelEncoding(status=self.status, progress=min(1.0, max(0.0, self.progress)),
                             preprocess=self.preprocess, num_clips=self.num_clips, clip_seconds=self.clip_seconds,
                             thumbnails=self.thumbnails, error=error)


class JobRecord(BaseModel):
    """Stored per job (``{p}:job:{id}``)."""

    job_id: str
    kind: JobKind
    video_id: str
    model: str
    status: Status = Status.queued
    attempts: int = 0
    worker: str | None = None
    result: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_status: int | None = None
    seconds: dict[str, float] = Field(default_factory=dict, description="time per stage: decode/encode/ground")
    progress: float = 0.0
    detail: dict[str, Any] | None = None
    """Where a long job stands (train jobs: stage, epoch, iteration, loss, metrics), updated while it runs."""
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    def training_status(self, base_model: str) -> TrainingStatus:
        detail = self.detail or {}
        error = ErrorDetail(code=self.error_code, message=self.error_message or "") if self.error_code else None
        return TrainingStatus(
            job_id=self.job_id, model=self.model, base_model=base_model, status=self.status,
            progress=min(1.0, max(0.0, self.progress)),
            stage="done" if self.status.finished else detail.get("stage", self.status.value),
            epoch=detail.get("epoch"), epochs=detail.get("epochs"), iteration=detail.get("iteration"),
            iterations=detail.get("iterations"), loss=detail.get("loss"), metrics=detail.get("metrics"),
            initial_metrics=detail.get("initial_metrics"), result=self.result, error=error,
            created_at=self.created_at, updated_at=self.updated_at)
