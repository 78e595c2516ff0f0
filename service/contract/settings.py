"""Every setting of the service, read once from the environment (prefix ``R2_``; ``REDIS_URL`` as-is).

Both processes read the same object. Tests build a ``Settings(...)`` directly or set the environment of a
subprocess; nothing else reads ``os.environ``. Validators refuse values that would make the service unsafe
(unbounded uploads, Redis values over its limit, a visibility timeout that lets a live worker's job be stolen).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

NO_REDIS = ("REDIS_URL is not set: a separate worker needs Redis to share jobs with the API. "
            "Without Redis, `r2tuning serve` runs the worker inside the API process.")

_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _split_list(value: object) -> object:
    """``"a, b"`` -> ``["a", "b"]`` so lists can be given as comma-separated environment variables."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """The service's configuration; every limit lives here, none is buried in a method."""

    model_config = SettingsConfigDict(env_prefix="R2_", extra="ignore", frozen=True, validate_by_name=True,
                                      validate_by_alias=True, use_attribute_docstrings=True)

    # --- where things live ------------------------------------------------------------------------------------
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "R2_REDIS_URL", "redis_url"))
    """Unset = embedded mode: API and worker in one process with an in-memory queue and cache."""
    redis_cluster: bool = False
    """``REDIS_URL`` names a node of a Redis Cluster (or several: ``redis://host1:7000,host2:7000``); every
    process then uses redis-py's cluster client, which finds the other nodes and follows failovers. Keys are
    spread over the cluster by their hash tags (one slot per video, one for the queue)."""
    key_prefix: str = "r2"
    """Prefix of every Redis key (several deployments, or tests, can share one Redis database)."""
    cold_dir: Path | None = None
    """The cold tier: a directory where uploaded bytes and encoded features are written once and kept while
    the video lives; Redis then holds only hot copies of the features, within its ``maxmemory``, and a feature
    evicted from Redis is read from here instead of decoding the video again. Local disk for one machine, a
    volume shared by the API and every worker otherwise. Unset: with Redis, everything stays in Redis (an
    evicted entry is lost); in embedded mode, a folder under ``R2_UPLOAD_DIR`` removed when the process stops."""
    cold_sweep_interval_s: float = Field(3600.0, ge=1, le=7 * 24 * 3600)
    """How often each worker removes the cold tier's videos unused for longer than ``R2_VIDEO_TTL_S``."""
    upload_dir: Path | None = None
    """Scratch directory for uploads being received (API) and videos being decoded (worker); default: the
    system temp dir. In embedded mode the uploaded videos themselves are kept here too."""
    registry_file: Path | None = None
    """JSON list of the user's own models (``models.zoo.load_registry_file``), registered at start."""

    # --- models and device ------------------------------------------------------------------------------------
    models: Annotated[list[str], NoDecode] = ["qvhighlights"]
    """Models the workers load at start (comma-separated); the first is the default."""
    default_model: str | None = None
    """Model used when a request names none; default: the first of ``models``."""
    device: str = "auto"
    """``auto`` picks CUDA when present, else the CPU."""
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """``auto``: fp16 on CUDA, fp32 on the CPU."""
    download_weights: bool = True
    """Fetch missing official weights on worker start; when that fails the service runs and reports 503."""

    # --- HTTP ---------------------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    """Address ``r2tuning serve`` binds (0.0.0.0 in containers)."""
    port: int = Field(8000, ge=1, le=65535)
    """Port ``r2tuning serve`` listens on."""
    api_keys: Annotated[list[SecretStr], NoDecode] = []
    """Accepted API keys (comma-separated); empty = no authentication. Sent as ``Authorization: Bearer <key>``
    or ``X-API-Key``. Health routes never need one."""
    public_docs: bool = True
    """Serve /docs and /openapi.json without an API key."""

    # --- limits -------------------------------------------------------------------------------------------------
    max_upload_bytes: int = Field(512 * MiB, ge=1 * KiB, le=16 * GiB)
    """Largest accepted video; enforced while the body streams in (413), chunked uploads included."""
    max_json_bytes: int = Field(256 * KiB, ge=4 * KiB, le=64 * MiB)
    """Largest JSON request body of the answer routes (/moments, /highlights, /summary): 413 before it is
    parsed, chunked bodies included. Must hold ``max_queries`` queries of ``max_query_chars`` characters."""
    train_max_json_bytes: int = Field(16 * MiB, ge=4 * KiB, le=1 * GiB)
    """Largest JSON body of ``POST /v1/models/{name}/train`` (its annotations are text inside JSON)."""
    max_error_chars: int = Field(1000, ge=100, le=64 * KiB)
    """Longest error message sent; input echoed in one is cut to a short prefix before that."""
    header_timeout_s: float = Field(10.0, gt=0, le=600)
    """A connection that has not sent a complete request head (request line and headers) this long after it
    opened or began a request is closed (408): slow clients cannot hold connections open."""
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Longest pause while a request body streams in (between two reads); past it 408 and the connection is
    closed."""
    max_stored_results: int = Field(2000, ge=1, le=10_000_000)
    """Most finished answers kept for repeated requests: past it the oldest are dropped before their
    ``result_ttl_s`` (a repeated request then computes its answer again). Bounds their Redis memory at about
    ``max_stored_results`` x the size of one answer (docs/service.md)."""
    max_duration_s: float = Field(3600.0, gt=0, le=24 * 3600)
    """Longest accepted video in seconds (422 ``video_too_large``)."""
    max_pixels: int = Field(3840 * 2160, ge=64 * 64, le=16384 * 16384)
    """Largest accepted frame, width x height (422 ``video_too_large``)."""
    max_queries: int = Field(32, ge=1, le=1024)
    """Queries per request (422 ``too_many_queries``)."""
    max_query_chars: int = Field(512, ge=1, le=16384)
    """Characters per query (422 ``query_too_long``); CLIP reads at most 77 tokens anyway."""
    max_queue_length: int = Field(1000, ge=1, le=1_000_000)
    """Jobs waiting or running; beyond it requests get 429 with Retry-After."""
    queue_full_retry_after_s: int = Field(5, ge=1, le=3600)
    """Retry-After (seconds) sent with 429."""
    decode_timeout_s: float = Field(600.0, gt=0, le=24 * 3600)
    """Wall-clock limit of one video's decoding child process."""

    # --- lifetimes (seconds) ------------------------------------------------------------------------------------
    video_ttl_s: int = Field(24 * 3600, ge=1, le=90 * 24 * 3600)
    """How long an uploaded video (its bytes and record) is kept after the last use."""
    feature_ttl_s: int = Field(24 * 3600, ge=1, le=90 * 24 * 3600)
    """How long encoded features stay in the cache after the last use."""
    result_ttl_s: int = Field(3600, ge=1, le=7 * 24 * 3600)
    """How long a finished job's answer is kept (a repeated request within it is answered from it)."""

    # --- waiting --------------------------------------------------------------------------------------------------
    moments_wait_s: float = Field(10.0, ge=0, le=300)
    """How long ``/moments``, ``/highlights`` and ``/summary`` wait before answering 409 (video still encoding)
    or 202 (answer not ready yet; repeat the same request)."""
    ground_wait_s: float = Field(120.0, ge=0, le=600)
    """How long the one-shot ``/v1/ground`` waits before answering 202."""

    # --- media (thumbnails, reels, listing) ---------------------------------------------------------------------
    thumbnail_side: int = Field(160, ge=16, le=640)
    """Longest side (pixels) of the JPEG kept per clip while encoding (a few KB each)."""
    thumbnail_quality: int = Field(75, ge=10, le=95)
    """JPEG quality of the thumbnails."""
    reel_max_seconds: float = Field(300.0, gt=0, le=3600)
    """Longest highlight reel rendered (a longer summary answers 422 ``reel_too_long``)."""
    reel_max_bytes: int = Field(64 * MiB, ge=64 * KiB, le=2 * GiB)
    """Largest reel kept (a bigger one fails with 422 ``reel_too_large``)."""
    reel_timeout_s: float = Field(300.0, gt=0, le=3600)
    """Wall-clock limit of rendering one reel."""
    reel_max_height: int = Field(480, ge=64, le=2160)
    """Reels are scaled down to at most this many lines (bounds their size and the time to render)."""
    list_max_limit: int = Field(100, ge=1, le=1000)
    """Most videos one ``GET /v1/videos`` page returns."""

    # --- worker -----------------------------------------------------------------------------------------------------
    batch_size: int = Field(16, ge=1, le=256)
    """Most jobs a worker takes at once; ground jobs on the same video are answered in one model call."""
    batch_window_ms: int = Field(20, ge=0, le=2000)
    """After the first job arrives, how long to wait for more to batch with it."""
    job_max_attempts: int = Field(3, ge=1, le=20)
    """Deliveries of one job before it ends as ``failed`` (a worker died on it each time)."""
    visibility_timeout_s: float = Field(60.0, ge=0.1, le=24 * 3600)
    """A job whose worker stopped refreshing its claim for this long is taken over by another worker."""
    heartbeat_interval_s: float = Field(5.0, gt=0, le=600)
    """How often a worker refreshes its heartbeat key and the claims of the jobs it runs."""
    heartbeat_ttl_s: float = Field(15.0, gt=0, le=3600)
    """A worker whose heartbeat is older than this is dead for /readyz."""
    memory_cache_bytes: int = Field(2 * GiB, ge=1 * MiB, le=1 << 40)
    """Embedded mode: most bytes of features kept in memory (least recently used go first)."""
    chunk_bytes: int = Field(256 * KiB - 64, ge=1 * KiB, le=64 * MiB)
    """Size of one Redis value for features and video bytes. Just under a jemalloc size class: Redis rounds
    an 8 MiB value up to a 10 MiB allocation (+25%), a 256 KiB - 64 B one wastes almost nothing."""
    worker_id: str | None = None
    """Name in heartbeats and logs; default ``<host>-<pid>-<random>``."""
    redis_timeout_s: float = Field(2.0, gt=0, le=60)
    """Connect/read timeout of the API's Redis calls: Redis down -> 503 within about this time."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the API and the workers."""

    # --- training (POST /v1/models/{name}/train) ----------------------------------------------------------------
    training_dir: Path | None = None
    """Where trained models and their training state live, one folder per model name (a volume every worker
    mounts, so any worker serves a trained model and a training survives its worker); default:
    ``<checkpoint dir>/trained``."""
    train_max_epochs: int = Field(100, ge=1, le=100_000)
    """Most epochs one training job may run (a request asking for more gets 422; the preset's default is cut)."""
    train_max_seconds: float = Field(3600.0, gt=0, le=7 * 24 * 3600)
    """Wall-clock limit of one training job; it stops with what it learned so far (a checkpoint and the model)."""
    train_max_memory_bytes: int = Field(4 * GiB, ge=256 * MiB, le=1 << 40)
    """Resident memory the training process may use; past it the worker stops it and the job fails."""
    train_threads: int = Field(1, ge=1, le=256)
    """CPU threads of the training process (the worker's query answering keeps the rest)."""
    train_max_annotation_bytes: int = Field(4 * MiB, ge=1 * KiB, le=256 * MiB)
    """Largest annotation text of a training request (413 ``annotations_too_large``)."""
    train_max_videos: int = Field(2000, ge=1, le=1_000_000)
    """Most distinct videos one training job may use (422 ``too_many_videos``)."""

    # --- outbound HTTP: webhooks and ingest by URL (docs/webhooks.md) -----------------------------------------
    fetch_allowlist: Annotated[list[str], NoDecode] = []
    """Hosts the service may call (comma-separated): callback URLs and ``POST /v1/videos {"url"}``. A host name
    (``cdn.example.com``), a subdomain wildcard (``*.example.com``), ``*`` (any public host), or an IP address or
    network (``127.0.0.1``, ``10.0.0.0/8``): private, loopback and link-local addresses are refused unless an
    entry names them. Empty: no callbacks and no URL ingest (422)."""
    webhook_secret: SecretStr | None = None
    """Key of the HMAC-SHA256 signature of every webhook event; ``callback_url`` is refused (422) while unset."""
    webhook_timeout_s: float = Field(10.0, gt=0, le=300)
    """One delivery attempt's limit (connect + answer); a slower receiver counts as a failure and is retried."""
    webhook_max_attempts: int = Field(12, ge=1, le=100)
    """Attempts per event before it is given up (logged and counted)."""
    webhook_backoff_s: float = Field(1.0, gt=0, le=3600)
    """Wait after the first failed attempt; it doubles with each further failure (with jitter)."""
    webhook_backoff_max_s: float = Field(600.0, gt=0, le=24 * 3600)
    """Longest wait between two attempts."""
    fetch_timeout_s: float = Field(600.0, gt=0, le=24 * 3600)
    """Wall-clock limit of fetching one video by URL, resumes included."""
    fetch_stall_s: float = Field(30.0, gt=0, le=3600)
    """A fetch (or a webhook receiver) sending nothing for this long is cut off."""
    fetch_max_redirects: int = Field(5, ge=0, le=20)
    """Redirects followed per fetch; each hop is checked against the allowlist again."""
    fetch_resume_tries: int = Field(3, ge=0, le=20)
    """Times a dropped fetch is resumed with a ``Range`` request (when the server supports ranges)."""
    idempotency_ttl_s: int = Field(24 * 3600, ge=1, le=30 * 24 * 3600)
    """How long an ``Idempotency-Key`` is remembered with its first answer (docs/service.md)."""

    # ------------------------------------------------------------------------------------------------ validators

    @field_validator("models", "api_keys", "fetch_allowlist", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_url(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None
        if value is not None and not re.match(r"(redis|rediss|unix)://", str(value)):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("cold_dir", mode="before")
    @classmethod
    def _cold_dir(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None
        if isinstance(value, str) and "://" in value:
            raise ValueError("cold_dir must be a directory (an object store would be a ColdStore of its own: "
                             "see service/store/cold.py)")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX_RE.fullmatch(value):
            raise ValueError("key_prefix must be 1-64 characters of letters, digits, '_', '.' or '-'")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE_RE.fullmatch(value):
            raise ValueError("device must be auto, cpu, mps, cuda or cuda:N")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one model must be configured")
        if len(set(value)) != len(value):
            raise ValueError("a model is listed twice")
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            if len(key.get_secret_value()) < 16:
                raise ValueError("API keys must be at least 16 characters long")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.redis_cluster and self.redis_url is None:
            raise ValueError("R2_REDIS_CLUSTER needs REDIS_URL: the address of a node of the cluster")
        if self.redis_url is not None:
            hosts = self.redis_url.split("://", 1)[1].split("/", 1)[0]
            if self.redis_cluster and self.redis_url.startswith("unix://"):
                raise ValueError("a Redis Cluster is reached over TCP: REDIS_URL must be redis:// or rediss://")
            if self.redis_cluster and re.search(r"/[1-9]\d*$|[?&]db=[1-9]", self.redis_url):
                raise ValueError("a Redis Cluster has only database 0: drop the database from REDIS_URL")
            if not self.redis_cluster and "," in hosts:
                raise ValueError("REDIS_URL names several hosts: set R2_REDIS_CLUSTER=1 for a Redis Cluster")
        if self.default_model is not None and self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not one of models {self.models}")
        needed = self.max_queries * (self.max_query_chars * 6 + 8) + 4 * KiB  # \uXXXX escapes at worst
        if self.max_json_bytes < min(needed, 64 * MiB):
            raise ValueError(f"max_json_bytes {self.max_json_bytes} cannot hold max_queries queries of "
                             f"max_query_chars characters: give at least {needed}")
        if self.train_max_json_bytes < 2 * self.train_max_annotation_bytes:
            raise ValueError("train_max_json_bytes must be at least twice train_max_annotation_bytes (the "
                             "annotations and the validation annotations, inside JSON)")
        if self.heartbeat_ttl_s < 2 * self.heartbeat_interval_s:
            raise ValueError("heartbeat_ttl_s must be at least twice heartbeat_interval_s, "
                             "or a live worker would look dead between two beats")
        if self.visibility_timeout_s < 2 * self.heartbeat_interval_s:
            raise ValueError("visibility_timeout_s must be at least twice heartbeat_interval_s, "
                             "or another worker could take over a job that is still running")
        return self

    # ------------------------------------------------------------------------------------------------ derived

    @property
    def embedded(self) -> bool:
        """No Redis: one process, in-memory queue and cache."""
        return self.redis_url is None

    @property
    def model_name(self) -> str:
        """The default model."""
        return self.default_model or self.models[0]

    def api_key_values(self) -> list[str]:
        return [key.get_secret_value() for key in self.api_keys]


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()


def configure_logging(level: str) -> None:
    """One log format for the API and the workers (``R2_LOG_LEVEL``)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
