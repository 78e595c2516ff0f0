"""The jobs: their records, the queue they wait in, and the signal that one finished.

Delivery is at least once. A job is *submitted* in one step: its record is created, identical requests are
joined to it, and it is appended to a queue: the shared one, or the own queue of the worker that already holds
the video's adapter state in memory (affinity), when that worker is alive. A worker reads its own queue and the
shared one, keeps its claim fresh while it works and *finishes* a job by storing the answer, acknowledging it and
leaving a done token that every waiting API request sees at once (no polling). A job whose worker died stops
being refreshed; after ``visibility_timeout_s`` another worker takes it over. Queues are never trimmed: an
entry is deleted only after it was acknowledged, so their length is the number of jobs waiting or running,
which is what the queue limit (429) counts. Payloads are JSON (:class:`Job`), never pickle.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from service.contract.errors import QueueFull
from service.contract.schemas import Job, JobRecord
from service.contract.webhooks import PendingHook

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One job handed to one worker; ``entry_id`` in ``queue`` is what it acknowledges. ``job`` is None for an
    entry whose payload could not be parsed (acknowledge and drop it). ``attempts`` counts the times the job was
    handed to a worker, this one included: the queue counts them as it delivers, so a worker that dies running
    the job has used an attempt without writing anything first."""

    entry_id: str
    queue: str
    job: Job | None
    reclaimed: bool = False
    raw: bytes | str | None = field(default=None, repr=False)  # the payload as stored, for release()
    attempts: int = 1


def parse_delivery(entry_id: str, queue: str, payload: bytes | str | None, reclaimed: bool,
                   attempts: int = 1) -> Delivery:
    try:
        job = Job.model_validate_json(payload) if payload is not None else None
    except ValidationError as err:
        log.error("dropping queue entry %s: its payload is not a job (%s)", entry_id, err)
        job = None
    return Delivery(entry_id, queue, job, reclaimed, payload, attempts)


@dataclass
class Outcome:
    """How one job ended: its answer, or its error (``status``/``code``/``message``)."""

    delivery: Delivery
    result: dict[str, Any] | None = None
    error_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_code is not None


class JobStore(ABC):
    """What the API and the workers need from the jobs."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def full_error(self) -> QueueFull:
        return QueueFull(f"the job queue is full ({self.max_length} jobs waiting or running); retry later")

    # ------------------------------------------------------------------------------------------------ API side

    @abstractmethod
    def submit(self, job: Job, ttl_s: int, request_hash: str | None = None) -> JobRecord:
        """Create the job's record and queue it, in one step; :class:`QueueFull` when ``max_length`` jobs are
        waiting or running. With ``request_hash``, an identical request's job that has not failed is returned
        instead (and nothing is queued)."""

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Block (without polling) until the job finished or ``timeout_s`` passed: the finished job (its answer or
        error), or None while it is not finished."""

    async def aclose(self) -> None:  # noqa: B027 - most stores open nothing in the event loop
        """Close what :meth:`wait` opened in the event loop (the API calls it on shutdown)."""

    @abstractmethod
    def length(self) -> int:
        """Jobs waiting or running (not yet acknowledged), over all queues."""

    def check_capacity(self) -> None:
        """Raise :class:`QueueFull` before any work is done for a request that would submit a job."""
        if self.length() >= self.max_length:
            raise self.full_error()

    # ------------------------------------------------------------------------------------------------ worker side

    @abstractmethod
    def open(self, consumer: str) -> None:
        """Announce a worker's own queue (jobs for the videos it holds come there)."""

    @abstractmethod
    def close(self, consumer: str) -> None:
        """The worker stops: whatever still waits in its own queue goes back to the shared one."""

    @abstractmethod
    def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        """New jobs from the worker's own queue and the shared one (up to ``count`` from each); waits up to
        ``block_s`` for the first."""

    @abstractmethod
    def begin(self, consumer: str, deliveries: list[Delivery]) -> list[int]:
        """Mark each job processing by ``consumer``, with its attempts so far; returns them per job (0: its record
        is gone, nobody waits for it). Optional for a job about to be answered in milliseconds: its attempts are
        counted by the queue either way, and :meth:`finish` stores them."""

    @abstractmethod
    def finish(self, consumer: str, outcomes: list[Outcome], metrics: dict[str, float] | None = None,
               seconds: dict[str, float] | None = None) -> None:
        """Store each job's answer or error, acknowledge it, signal its waiters and add to the shared metrics,
        in one step."""

    @abstractmethod
    def update(self, job_id: str, ttl_s: int, **fields: Any) -> bool:
        """Change fields of a job's record (a long job's progress) and restart its TTL; False when the record is
        gone (nothing is written then)."""

    @abstractmethod
    def release(self, deliveries: list[Delivery]) -> None:
        """Give jobs back unrun so any worker can take them (a worker keeps only what it runs next); this
        delivery is not counted as an attempt."""

    @abstractmethod
    def reclaim(self, consumer: str, min_idle_s: float, count: int) -> list[Delivery]:
        """Jobs of workers that stopped refreshing them for ``min_idle_s`` or more, now owned by ``consumer``;
        own queues of workers gone that long are emptied into the shared queue first."""

    @abstractmethod
    def extend(self, consumer: str, deliveries: list[Delivery]) -> None:
        """Reset the idle time of jobs ``consumer`` is still working on."""

    @abstractmethod
    def hold(self, consumer: str, video_id: str, model: str, ttl_s: float) -> None:
        """``consumer`` now holds the video's adapter state: route that video's next jobs to it."""

    # ------------------------------------------------------------------------------------------------ webhooks
    # A job's receivers are registered on it; finishing the job turns each into a pending delivery in the same
    # step (so no finished job loses its event). Deliverers lease due deliveries: one whose deliverer died is
    # due again when the lease ends, and any deliverer retakes it.

    @abstractmethod
    def add_callback(self, job_id: str, url: str, ttl_s: int, token: str | None = None) -> bool:
        """Deliver the end of job ``job_id`` to ``url``. Scheduled at once (True) when the job has finished, or
        when ``token`` (the finished job as JSON) is given; else registered until the job finishes (False)."""

    @abstractmethod
    def due_hooks(self, lease_s: float, count: int) -> list[PendingHook]:
        """Up to ``count`` deliveries due now, each leased for ``lease_s`` (due again after it)."""

    @abstractmethod
    def hook_done(self, hook_id: str) -> None:
        """The delivery succeeded (or was given up): forget it."""

    @abstractmethod
    def hook_retry(self, hook: PendingHook, due_at: float) -> None:
        """The delivery failed: store its attempt count and try again at ``due_at`` (epoch seconds)."""
