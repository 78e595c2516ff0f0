"""Embedded mode (no ``REDIS_URL``): the same stores in this process, for one API and its worker thread.

Each class is the in-process twin of a Redis store with the same semantics (TTLs, at-least-once delivery,
verified chunked entries), kept as small as that allows. Hot copies of the features stay in memory bounded by
``Settings.memory_cache_bytes`` (least recently used out); uploaded videos and the features themselves go to
the cold tier, a folder (:mod:`service.store.cold`).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

from service.contract.keys import Keys
from service.contract.schemas import Job, JobKind, JobRecord, Status, VideoRecord, WorkerInfo
from service.contract.webhooks import PendingHook

from .chunks import ChunkStore, Header
from .jobs import Delivery, JobStore, Outcome, parse_delivery
from .records import Records, after

# ------------------------------------------------------------------------------------------------------ chunks


class _Indexes:
    """Sets of names kept in this process (an index outlives nothing: the process holds every entry)."""

    def _sets(self) -> dict[str, set[str]]:
        sets: dict[str, set[str]] = self.__dict__.setdefault("_index_sets", defaultdict(set))
        return sets

    def index_add(self, index: str, member: str, ttl_s: int) -> None:
        self._sets()[index].add(member)

    def index_members(self, index: str) -> set[str]:
        return set(self._sets().get(index, ()))

    def index_drop(self, index: str) -> None:
        self._sets().pop(index, None)

    def index_remove(self, index: str, member: str) -> None:
        self._sets().get(index, set()).discard(member)


class MemoryChunkStore(_Indexes, ChunkStore):
    """Embedded mode: entries in this process's memory, at most ``capacity_bytes``, least recently used out."""

    def __init__(self, chunk_bytes: int, capacity_bytes: int,
                 on_corrupt: Callable[[str, str], None] | None = None) -> None:
        super().__init__(chunk_bytes, on_corrupt)
        self.capacity_bytes = capacity_bytes
        self._lock = threading.RLock()
        # name -> [header bytes, chunks, expires at]; chunk lists are filled before the header lands.
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        self._chunks: dict[str, list[bytes]] = {}
        self._used = 0

    def _live(self, name: str) -> list[Any] | None:
        entry = self._entries.get(name)
        if entry is not None and entry[2] < time.monotonic():
            self._drop(name)
            return None
        if entry is not None:
            self._entries.move_to_end(name)
        return entry

    def _drop(self, name: str) -> None:
        self._entries.pop(name, None)
        chunks = self._chunks.pop(name, None)
        if chunks:
            self._used -= sum(len(c) for c in chunks)

    def _write_chunks(self, name: str, chunks: Iterator[bytes], ttl_s: int) -> None:
        data = list(chunks)
        with self._lock:
            self._drop(name)
            self._chunks[name] = data
            self._used += sum(len(c) for c in data)

    def _write_header(self, name: str, header: bytes, ttl_s: int) -> None:
        with self._lock:
            self._entries[name] = [header, None, time.monotonic() + ttl_s]
            while self._used > self.capacity_bytes and len(self._entries) > 1:
                oldest = next(iter(self._entries))
                self._drop(oldest)

    def _read_header(self, name: str) -> bytes | None:
        with self._lock:
            entry = self._live(name)
            return None if entry is None else entry[0]

    def _read_chunks(self, name: str, header: Header) -> Iterator[bytes | None]:
        with self._lock:
            chunks = list(self._chunks.get(name, []))
        for index in range(header.num_chunks):
            yield chunks[index] if index < len(chunks) else None

    def exists(self, name: str) -> bool:
        with self._lock:
            return self._live(name) is not None

    def touch(self, name: str, ttl_s: int) -> bool:
        with self._lock:
            entry = self._live(name)
            if entry is None:
                return False
            entry[2] = time.monotonic() + ttl_s
            return True


    def _delete_header(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def _delete_chunks(self, name: str, count: int | None) -> None:
        with self._lock:
            self._drop(name)


# ------------------------------------------------------------------------------------------------------ records


class _Expiring:
    """A dict whose entries expire (monotonic clock), guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.data: dict[str, tuple[Any, float]] = {}

    def get(self, key: str) -> Any:
        found = self.data.get(key)
        if found is None:
            return None
        if found[1] < time.monotonic():
            del self.data[key]
            return None
        return found[0]

    def put(self, key: str, value: Any, ttl_s: float) -> None:
        self.data[key] = (value, time.monotonic() + ttl_s)


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """Field values as they come back from JSON (enums as their values), like the Redis hashes."""
    plain: dict[str, Any] = json.loads(json.dumps({k: (v.value if hasattr(v, "value") else v)
                                                   for k, v in fields.items()}))
    return plain


class MemoryRecords(Records):
    def __init__(self) -> None:
        self._items = _Expiring()
        self._beats = _Expiring()  # worker id -> heartbeat JSON
        self._metrics: dict[str, float] = {}
        self._listed: dict[str, float] = {}  # video id -> upload time: the listing index
        self.keys = Keys("memory")

    def create_video(self, record: VideoRecord, ttl_s: int) -> bool:
        with self._items.lock:
            key = self.keys.video(record.video_id)
            if self._items.get(key) is not None:
                return False
            self._items.put(key, record.model_dump(mode="json"), ttl_s)
            self._listed[record.video_id] = record.created_at
            return True

    def get_video(self, video_id: str) -> VideoRecord | None:
        with self._items.lock:
            raw = self._items.get(self.keys.video(video_id))
            return VideoRecord.model_validate(raw) if raw is not None else None

    def update_video(self, video_id: str, **fields: Any) -> bool:
        with self._items.lock:
            raw = self._items.get(self.keys.video(video_id))
            if raw is None:
                return False
            raw.update(_plain({**fields, "updated_at": time.time()}))
            return True

    def delete_video(self, video_id: str) -> bool:
        with self._items.lock:
            self._listed.pop(video_id, None)
            return self._items.data.pop(self.keys.video(video_id), None) is not None

    def video_index(self, limit: int, before: tuple[float, str] | None = None) -> list[tuple[float, str]]:
        with self._items.lock:
            return after([(t, v) for v, t in self._listed.items()], before, limit)

    def unlist_video(self, video_id: str) -> None:
        with self._items.lock:
            self._listed.pop(video_id, None)

    def touch_video(self, video_id: str, ttl_s: int) -> None:
        with self._items.lock:
            raw = self._items.get(self.keys.video(video_id))
            if raw is not None:
                self._items.put(self.keys.video(video_id), raw, ttl_s)

    def heartbeat(self, info: WorkerInfo, ttl_s: float) -> None:
        with self._beats.lock:
            self._beats.put(info.worker_id, info.model_dump_json(), ttl_s)

    def remove_worker(self, worker_id: str) -> None:
        with self._beats.lock:
            self._beats.data.pop(worker_id, None)

    def live_workers(self) -> list[WorkerInfo]:
        with self._beats.lock:
            found = [self._beats.get(k) for k in list(self._beats.data)]
        return [WorkerInfo.model_validate_json(raw) for raw in found if raw is not None]

    def add_metrics(self, increments: dict[str, float]) -> None:
        with self._items.lock:
            for name, amount in increments.items():
                self._metrics[name] = self._metrics.get(name, 0.0) + amount

    def read_metrics(self) -> dict[str, float]:
        with self._items.lock:
            return dict(self._metrics)

    def ping(self) -> None:
        return None


# ------------------------------------------------------------------------------------------------------ jobs


def _resolve(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)


class MemoryJobStore(JobStore):
    """One shared queue (embedded mode has one worker), job records with TTLs, and done events."""

    def __init__(self, max_length: int, metrics: MemoryRecords, max_results: int = 2000) -> None:
        super().__init__(max_length)
        self.max_results = max_results
        self._answered: OrderedDict[str, None] = OrderedDict()  # finished ground jobs, oldest first
        self._cond = threading.Condition()
        self._records = _Expiring()
        self._requests = _Expiring()
        self._waiting: deque[tuple[str, str]] = deque()  # (entry id, payload JSON)
        self._claims: OrderedDict[str, tuple[str, str, float]] = OrderedDict()  # id -> (consumer, payload, since)
        self._delivered: dict[str, int] = defaultdict(int)  # entry id -> attempts so far (a stream's delivery count)
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bool]]]] = defaultdict(list)
        self._metrics = metrics
        self._seq = 0
        self._callbacks: dict[str, list[str]] = defaultdict(list)  # job id -> webhook URLs waiting for its end
        self._hooks: dict[str, tuple[float, PendingHook]] = {}  # delivery id -> (due at, delivery)
        self._hook_seq = 0

    # ------------------------------------------------------------------------------------------------ API side

    def submit(self, job: Job, ttl_s: int, request_hash: str | None = None) -> JobRecord:
        with self._cond:
            if request_hash is not None:
                existing = self._requests.get(request_hash)
                record = self._records.get(existing) if existing else None
                if record is not None and record["status"] != Status.failed.value:
                    return JobRecord.model_validate(record)
            if len(self._waiting) + len(self._claims) >= self.max_length:
                raise self.full_error()
            record = JobRecord(job_id=job.job_id, kind=job.kind, video_id=job.video_id, model=job.model)
            payload = job.model_dump_json()  # before anything is stored: a job that cannot be queued leaves nothing
            self._records.put(job.job_id, record.model_dump(mode="json"), ttl_s)
            try:
                if request_hash is not None:
                    self._requests.put(request_hash, job.job_id, ttl_s)
                self._seq += 1
                self._waiting.append((f"{int(time.time() * 1000)}-{self._seq}", payload))
            except BaseException:  # all or nothing, like the Redis script
                self._records.data.pop(job.job_id, None)
                if request_hash is not None and self._requests.get(request_hash) == job.job_id:
                    self._requests.data.pop(request_hash, None)
                raise
            self._cond.notify_all()
            return record

    def get(self, job_id: str) -> JobRecord | None:
        with self._cond:
            raw = self._records.get(job_id)
            return JobRecord.model_validate(raw) if raw is not None else None

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self._cond:
            raw = self._records.get(job_id)
            if raw is None or raw["status"] in (Status.ready.value, Status.failed.value):
                return JobRecord.model_validate(raw) if raw is not None else None
            self._waiters[job_id].append((loop, future))
        try:
            await asyncio.wait_for(future, timeout_s)
            return self.get(job_id)
        except TimeoutError:
            return None
        finally:
            with self._cond:
                waiting = self._waiters.get(job_id, [])
                if (loop, future) in waiting:
                    waiting.remove((loop, future))
                if not waiting:
                    self._waiters.pop(job_id, None)

    def length(self) -> int:
        with self._cond:
            return len(self._waiting) + len(self._claims)

    # ------------------------------------------------------------------------------------------------ worker side

    def open(self, consumer: str) -> None:
        return None

    def close(self, consumer: str) -> None:
        return None

    def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        deadline = time.monotonic() + block_s
        with self._cond:
            while not self._waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            out: list[Delivery] = []
            while self._waiting and len(out) < count:
                entry_id, payload = self._waiting.popleft()
                self._claims[entry_id] = (consumer, payload, time.monotonic())
                self._delivered[entry_id] += 1
                out.append(parse_delivery(entry_id, "", payload, False, self._delivered[entry_id]))
            return out

    def begin(self, consumer: str, deliveries: list[Delivery]) -> list[int]:
        counts = []
        with self._cond:
            for d in deliveries:
                raw = self._records.get(d.job.job_id) if d.job is not None else None
                if raw is None:
                    counts.append(0)
                    continue
                raw.update(_plain(dict(attempts=d.attempts, status=Status.processing, worker=consumer,
                                       updated_at=time.time())))
                counts.append(d.attempts)
        return counts

    def finish(self, consumer: str, outcomes: list[Outcome], metrics: dict[str, float] | None = None,
               seconds: dict[str, float] | None = None) -> None:
        with self._cond:
            for o in outcomes:
                self._claims.pop(o.delivery.entry_id, None)
                self._delivered.pop(o.delivery.entry_id, None)
                job = o.delivery.job
                raw = self._records.get(job.job_id) if job is not None else None
                if job is None or raw is None:
                    continue
                fields: dict[str, Any] = dict(worker=consumer, attempts=o.delivery.attempts, updated_at=time.time(),
                                              seconds=seconds or {})
                if o.failed:
                    fields.update(status=Status.failed, error_code=o.error_code, error_message=o.error_message,
                                  error_status=o.error_status)
                else:
                    fields.update(status=Status.ready, result=o.result)
                raw.update(_plain(fields))
                token = JobRecord.model_validate(raw).model_dump_json()
                for url in self._callbacks.pop(job.job_id, []):
                    self._schedule(url, token)
                for loop, future in self._waiters.pop(job.job_id, []):
                    loop.call_soon_threadsafe(_resolve, future)
                if job.kind == JobKind.ground:  # the answers kept are bounded, like in Redis
                    self._answered[job.job_id] = None
                    while len(self._answered) > self.max_results:
                        self._records.data.pop(self._answered.popitem(last=False)[0], None)
        self._metrics.add_metrics(metrics or {})

    def update(self, job_id: str, ttl_s: int, **fields: Any) -> bool:
        with self._cond:
            raw = self._records.get(job_id)
            if raw is None:
                return False
            raw.update(_plain({**fields, "updated_at": time.time()}))
            self._records.put(job_id, raw, ttl_s)
            return True

    def release(self, deliveries: list[Delivery]) -> None:
        with self._cond:
            for d in reversed(deliveries):  # back at the front, in their order
                claim = self._claims.pop(d.entry_id, None)
                if claim is not None:
                    self._delivered[d.entry_id] -= 1  # given back unrun: not an attempt
                    self._waiting.appendleft((d.entry_id, claim[1]))
            self._cond.notify_all()

    def reclaim(self, consumer: str, min_idle_s: float, count: int) -> list[Delivery]:
        now = time.monotonic()
        with self._cond:
            stale = [eid for eid, (_, _, since) in self._claims.items() if now - since >= min_idle_s][:count]
            out = []
            for entry_id in stale:
                _, payload, _ = self._claims[entry_id]
                self._claims[entry_id] = (consumer, payload, now)
                self._delivered[entry_id] += 1
                out.append(parse_delivery(entry_id, "", payload, True, self._delivered[entry_id]))
            return out

    def extend(self, consumer: str, deliveries: list[Delivery]) -> None:
        now = time.monotonic()
        with self._cond:
            for d in deliveries:
                if d.entry_id in self._claims:
                    _, payload, _ = self._claims[d.entry_id]
                    self._claims[d.entry_id] = (consumer, payload, now)

    def hold(self, consumer: str, video_id: str, model: str, ttl_s: float) -> None:
        return None  # one worker: every job is its own

    # ------------------------------------------------------------------------------------------------ webhooks

    def _schedule(self, url: str, token: str) -> None:
        self._hook_seq += 1
        hook_id = str(self._hook_seq)
        self._hooks[hook_id] = (time.time(), PendingHook(hook_id, url, token))

    def add_callback(self, job_id: str, url: str, ttl_s: int, token: str | None = None) -> bool:
        with self._cond:
            raw = self._records.get(job_id)
            if token is None and raw is not None and raw["status"] in (Status.ready.value, Status.failed.value):
                token = JobRecord.model_validate(raw).model_dump_json()
            if token is None:
                self._callbacks[job_id].append(url)
                return False
            self._schedule(url, token)
            return True

    def due_hooks(self, lease_s: float, count: int) -> list[PendingHook]:
        now = time.time()
        with self._cond:
            due = sorted((at, hook_id) for hook_id, (at, _) in self._hooks.items() if at <= now)[:count]
            out = []
            for _, hook_id in due:
                hook = self._hooks[hook_id][1]
                self._hooks[hook_id] = (now + lease_s, hook)
                out.append(hook)
            return out

    def hook_done(self, hook_id: str) -> None:
        with self._cond:
            self._hooks.pop(hook_id, None)

    def hook_retry(self, hook: PendingHook, due_at: float) -> None:
        with self._cond:
            self._hooks[hook.hook_id] = (due_at, hook)

    def wake(self) -> None:
        """Wake consumers blocked in :meth:`take` (shutdown)."""
        with self._cond:
            self._cond.notify_all()
