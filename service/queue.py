"""The job queue: Redis Streams with a consumer group, or an in-memory equivalent for embedded mode.

Delivery is at least once. A worker reads jobs through the group (``XREADGROUP``), keeps its claim fresh
while it works (``XCLAIM ... JUSTID`` from its heartbeat thread resets the idle time) and acknowledges a job
when its answer is stored (``XACK`` then ``XDEL``). A job whose worker died stops being refreshed; after
``visibility_timeout_s`` another worker takes it over with ``XAUTOCLAIM``. The stream is never trimmed: an
entry is deleted only after it was acknowledged, so the stream length is the number of jobs waiting or running,
which is what the queue limit (429) counts. Payloads are JSON (:class:`service.schemas.Job`), never pickle.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import redis
from pydantic import ValidationError

from .errors import QueueFull
from .keys import JOB_GROUP, Keys
from .schemas import Job

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """One job handed to one worker; ``entry_id`` is what it acknowledges. ``job`` is None for an entry whose
    payload could not be parsed (acknowledge and drop it)."""

    entry_id: str
    job: Job | None
    reclaimed: bool = False
    raw: bytes | str | None = field(default=None, repr=False)  # the payload as stored, for release()


def _parse(entry_id: str, fields: dict, reclaimed: bool) -> Delivery:
    raw = fields.get(b"job") or fields.get("job")
    try:
        job = Job.model_validate_json(raw) if raw is not None else None
    except ValidationError as err:
        log.error("dropping queue entry %s: its payload is not a job (%s)", entry_id, err)
        job = None
    return Delivery(entry_id, job, reclaimed, raw)


class JobQueue(ABC):
    """What the API and the workers need from a queue."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    @abstractmethod
    def enqueue(self, job: Job) -> str:
        """Add a job; :class:`QueueFull` when ``max_length`` jobs are waiting or running."""

    @abstractmethod
    def length(self) -> int:
        """Jobs waiting or running (not yet acknowledged)."""

    @abstractmethod
    def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        """Up to ``count`` new jobs for ``consumer``, waiting at most ``block_s`` for the first."""

    @abstractmethod
    def reclaim(self, consumer: str, min_idle_s: float, count: int) -> list[Delivery]:
        """Jobs of other consumers idle for ``min_idle_s`` or more, now owned by ``consumer``."""

    @abstractmethod
    def extend(self, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of jobs ``consumer`` is still working on."""

    @abstractmethod
    def ack(self, entry_id: str) -> None:
        """The job is finished (answered or failed for good): remove it."""

    @abstractmethod
    def release(self, deliveries: list[Delivery]) -> None:
        """Give jobs back unrun so any worker can take them (a worker keeps only what it runs next)."""

    def check_capacity(self) -> None:
        """Raise :class:`QueueFull` before any work is done for a request that would enqueue a job."""
        if self.length() >= self.max_length:
            raise QueueFull(f"the job queue is full ({self.max_length} jobs waiting or running); retry later")


_ENQUEUE = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
"""


class RedisJobQueue(JobQueue):
    """A Redis stream read through the ``workers`` consumer group."""

    def __init__(self, client: redis.Redis, keys: Keys, max_length: int) -> None:
        super().__init__(max_length)
        self.client, self.keys = client, keys
        self._enqueue = client.register_script(_ENQUEUE)
        self._group_ready = False

    def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From id 0: entries added before the group existed are delivered too.
            self.client.xgroup_create(self.keys.jobs, JOB_GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._group_ready = True

    def enqueue(self, job: Job) -> str:
        self.ensure_group()
        entry = self._enqueue(keys=[self.keys.jobs], args=[self.max_length, job.model_dump_json()])
        if entry is None:
            raise QueueFull(f"the job queue is full ({self.max_length} jobs waiting or running); retry later")
        return entry.decode() if isinstance(entry, bytes) else str(entry)

    def length(self) -> int:
        return int(self.client.xlen(self.keys.jobs))  # type: ignore[arg-type]

    def _nogroup(self, err: redis.ResponseError) -> bool:
        if "NOGROUP" in str(err):  # the stream or group vanished (Redis restarted empty, FLUSHDB): recreate
            self._group_ready = False
            self.ensure_group()
            return True
        return False

    def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        self.ensure_group()
        block_ms = int(block_s * 1000)
        try:
            reply = self.client.xreadgroup(JOB_GROUP, consumer, {self.keys.jobs: ">"}, count=count,
                                           block=block_ms if block_ms > 0 else None)
        except redis.ResponseError as err:
            if self._nogroup(err):
                return []
            raise
        out = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(_parse(_sid(entry_id), fields, False))
        return out

    def reclaim(self, consumer: str, min_idle_s: float, count: int) -> list[Delivery]:
        self.ensure_group()
        try:
            reply = self.client.xautoclaim(self.keys.jobs, JOB_GROUP, consumer, int(min_idle_s * 1000),
                                           start_id="0-0", count=count)
        except redis.ResponseError as err:
            if self._nogroup(err):
                return []
            raise
        claimed = reply[1] if len(reply) > 1 else []
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:  # pending entries whose payload is gone: nothing to run, just clear them
            self.client.xack(self.keys.jobs, JOB_GROUP, *deleted)
        return [_parse(_sid(entry_id), fields, True) for entry_id, fields in claimed if fields]

    def extend(self, consumer: str, entry_ids: list[str]) -> None:
        if entry_ids:
            self.client.xclaim(self.keys.jobs, JOB_GROUP, consumer, 0, entry_ids, justid=True)

    def ack(self, entry_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.keys.jobs, JOB_GROUP, entry_id)
        pipe.xdel(self.keys.jobs, entry_id)
        pipe.execute()

    def release(self, deliveries: list[Delivery]) -> None:
        # Re-added as new entries (at the end of the stream) and the taken ones removed, in one transaction:
        # the job is never lost nor doubled, and the stream length (the queue length) does not change.
        if not deliveries:
            return
        pipe = self.client.pipeline(transaction=True)
        for d in deliveries:
            if d.raw is not None:
                pipe.xadd(self.keys.jobs, {"job": d.raw})
            pipe.xack(self.keys.jobs, JOB_GROUP, d.entry_id)
            pipe.xdel(self.keys.jobs, d.entry_id)
        pipe.execute()


def _sid(entry_id: bytes | str) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


class MemoryJobQueue(JobQueue):
    """Embedded mode: the same semantics in one process (a deque of waiting jobs and a table of claims)."""

    def __init__(self, max_length: int) -> None:
        super().__init__(max_length)
        self._cond = threading.Condition()
        self._waiting: deque[tuple[str, str]] = deque()  # (entry id, payload JSON)
        self._claims: OrderedDict[str, tuple[str, str, float]] = OrderedDict()  # id -> (consumer, payload, since)
        self._seq = 0

    def enqueue(self, job: Job) -> str:
        with self._cond:
            if len(self._waiting) + len(self._claims) >= self.max_length:
                raise QueueFull(f"the job queue is full ({self.max_length} jobs waiting or running); retry later")
            self._seq += 1
            entry_id = f"{int(time.time() * 1000)}-{self._seq}"
            self._waiting.append((entry_id, job.model_dump_json()))
            self._cond.notify_all()
            return entry_id

    def length(self) -> int:
        with self._cond:
            return len(self._waiting) + len(self._claims)

    def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        deadline = time.monotonic() + block_s
        with self._cond:
            while not self._waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            out = []
            while self._waiting and len(out) < count:
                entry_id, payload = self._waiting.popleft()
                self._claims[entry_id] = (consumer, payload, time.monotonic())
                out.append(_parse(entry_id, {"job": payload}, False))
            return out

    def reclaim(self, consumer: str, min_idle_s: float, count: int) -> list[Delivery]:
        now = time.monotonic()
        with self._cond:
            stale = [eid for eid, (_, _, since) in self._claims.items() if now - since >= min_idle_s][:count]
            out = []
            for entry_id in stale:
                _, payload, _ = self._claims[entry_id]
                self._claims[entry_id] = (consumer, payload, now)
                out.append(_parse(entry_id, {"job": payload}, True))
            return out

    def extend(self, consumer: str, entry_ids: list[str]) -> None:
        now = time.monotonic()
        with self._cond:
            for entry_id in entry_ids:
                if entry_id in self._claims:
                    _, payload, _ = self._claims[entry_id]
                    self._claims[entry_id] = (consumer, payload, now)

    def ack(self, entry_id: str) -> None:
        with self._cond:
            self._claims.pop(entry_id, None)

    def release(self, deliveries: list[Delivery]) -> None:
        with self._cond:
            for d in reversed(deliveries):  # back at the front, in their order
                claim = self._claims.pop(d.entry_id, None)
                if claim is not None:
                    self._waiting.appendleft((d.entry_id, claim[1]))
            self._cond.notify_all()

    def wake(self) -> None:
        """Wake consumers blocked in :meth:`take` (shutdown)."""
        with self._cond:
            self._cond.notify_all()
