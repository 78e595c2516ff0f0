"""Typed errors of the service; the API maps each to an HTTP status and a stable ``code``.

Workers store a failed job's ``code``/``message``/``status`` in its record with :func:`classify`, so the API
answers a worker-side failure with the same status as if it had happened in the API process.
"""

from __future__ import annotations

import re

# Names of scratch files (the API's received uploads, a worker's downloaded copy) and the folders they live in:
# internal, so a message that names one says "the video" instead.
_SCRATCH_NAME = re.compile(r"[^\s'\"]*(?:r2-upload-[\w-]+\.part|r2-worker-[^\s'\"/]*/[^\s'\"]*|"
                           r"\b[0-9a-f]{64}-[0-9a-f]{8}\.video)")


def public_message(message: str, max_chars: int) -> str:
    """An error message as sent to a client: no scratch file names, at most ``max_chars`` characters."""
    text = _SCRATCH_NAME.sub("the video", message)
    return text if len(text) <= max_chars else text[:max_chars - 14] + " ... (cut off)"


class ServiceError(Exception):
    """An error with an HTTP status, a stable machine-readable code and a human message."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}


class NotFound(ServiceError):
    status, code = 404, "not_found"


class InvalidRequest(ServiceError):
    status, code = 422, "invalid_request"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class PayloadTooLarge(ServiceError):
    status, code = 413, "upload_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Unavailable(ServiceError):
    status, code = 503, "unavailable"


class BackendUnavailable(Unavailable):
    """Redis cannot be reached (or answered an error): the API answers 503 at once."""

    code = "redis_unavailable"


class QueueFull(ServiceError):
    """Too many jobs waiting or running: 429 with Retry-After."""

    status, code = 429, "queue_full"


# Video error codes the engine uses (models.video.VideoError.code) are all the caller's input: 422.
_STATUS_BY_TYPE = {
    "VideoError": 422,
    "WeightsUnavailableError": 503,
    "ChecksumError": 503,
    "ClipLoadError": 503,
    "CheckpointError": 503,
    "UnknownModelError": 404,
}
_CODE_BY_TYPE = {
    "WeightsUnavailableError": "weights_missing",
    "ChecksumError": "weights_corrupt",
    "ClipLoadError": "weights_unusable",
    "CheckpointError": "weights_unusable",
    "UnknownModelError": "unknown_model",
}


def classify(exc: BaseException) -> tuple[int, str, str]:
    """(HTTP status, code, message) of an exception raised while running a job.

    Works by class name along the MRO so that this module (imported by the API) needs no engine import.
    """
    if isinstance(exc, ServiceError):
        return exc.status, exc.code, exc.message
    for cls in type(exc).__mro__:
        name = cls.__name__
        if name in _STATUS_BY_TYPE:
            code = getattr(exc, "code", None) if name == "VideoError" else _CODE_BY_TYPE.get(name)
            return _STATUS_BY_TYPE[name], str(code or "bad_video"), str(exc)
    return 500, "internal_error", f"{type(exc).__name__}: {exc}"
