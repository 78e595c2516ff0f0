"""Webhook events: what is sent when a job ends, and how it is signed (docs/webhooks.md).

A pending delivery holds the receiver's URL and the finished job as stored for its waiters (a
:class:`JobRecord` as JSON); the event body is built from it when it is sent. The signature is HMAC-SHA256
with ``R2_WEBHOOK_SECRET`` over ``"<timestamp>.<body>"``, so a receiver can check both that the service sent
the body and that it was sent recently (a replayed old event has an old timestamp; a replay within the
tolerance repeats an event id the receiver has already seen).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from .schemas import JobKind, JobRecord, Status

ID_HEADER = "R2-Webhook-Id"
TIMESTAMP_HEADER = "R2-Webhook-Timestamp"
SIGNATURE_HEADER = "R2-Webhook-Signature"
SIGNATURE_VERSION = "v1"


@dataclass(frozen=True)
class PendingHook:
    """One event waiting to be delivered to one receiver."""

    hook_id: str
    url: str
    token: str  # the finished job, as JSON
    attempts: int = 0

    def dump(self) -> str:
        return json.dumps({"url": self.url, "token": self.token, "attempts": self.attempts})

    @classmethod
    def load(cls, hook_id: str, raw: str | bytes) -> PendingHook:
        data = json.loads(raw)
        return cls(hook_id, str(data["url"]), str(data["token"]), int(data.get("attempts", 0)))


def event_type(record: JobRecord) -> str:
    """``video.ready``/``video.failed`` for an upload's encoding, ``video.fetched``/``video.failed`` for an
    ingest by URL, ``answer.ready``/``answer.failed`` for moments, highlights and summaries,
    ``training.ready``/``training.failed`` for a training."""
    outcome = "ready" if record.status == Status.ready else "failed"
    if record.kind == JobKind.fetch:
        return "video.fetched" if outcome == "ready" else "video.failed"
    prefix = {JobKind.encode_video: "video", JobKind.ground: "answer", JobKind.train: "training"}[record.kind]
    return f"{prefix}.{outcome}"


def event_body(hook: PendingHook) -> bytes:
    """The JSON body sent for one pending delivery."""
    record = JobRecord.model_validate_json(hook.token)
    event: dict[str, Any] = {"id": hook.hook_id, "type": event_type(record), "job_id": record.job_id,
                             "video_id": record.result.get("video_id", record.video_id)
                             if record.kind == JobKind.fetch and record.result else record.video_id,
                             "model": record.model, "status": record.status.value, "finished_at": record.updated_at}
    if record.status == Status.failed:
        event["error"] = {"code": record.error_code or "internal_error", "message": record.error_message or ""}
    elif record.kind in (JobKind.ground, JobKind.train):
        event["result"] = record.result
    return json.dumps(event, separators=(",", ":")).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: ``v1=<hex HMAC-SHA256 of "<timestamp>.<body>">``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does (docs/webhooks.md has the same as a standalone snippet): a fresh timestamp and a
    matching signature. Rejecting an event id seen before is left to the receiver's own store."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)
