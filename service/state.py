"""Small records both processes read and write: videos, jobs, request de-duplication, heartbeats, metrics.

:class:`RedisState` keeps them in Redis (one hash per record, every field JSON-encoded, with a TTL);
:class:`MemoryState` keeps the same in this process for embedded mode. Updates never resurrect a record
that was deleted meanwhile (a worker finishing a video the user just deleted).
"""

from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

import redis

from .errors import BackendUnavailable
from .keys import Keys
from .schemas import JobRecord, VideoRecord, WorkerInfo


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v.value if hasattr(v, "value") else v) for k, v in fields.items()}


def _decode(raw: dict) -> dict[str, Any]:
    out = {}
    for k, v in raw.items():
        key = k.decode() if isinstance(k, bytes) else k
        out[key] = json.loads(v)
    return out


class State(ABC):
    """Records shared by the API and the workers."""

    # videos
    @abstractmethod
    def create_video(self, record: VideoRecord, ttl_s: int) -> bool:
        """Store a new record; False (and nothing written) when one exists already."""

    @abstractmethod
    def get_video(self, video_id: str) -> VideoRecord | None: ...

    @abstractmethod
    def update_video(self, video_id: str, **fields: Any) -> bool:
        """Change fields of an existing record; False when it does not exist (nothing written)."""

    @abstractmethod
    def delete_video(self, video_id: str) -> bool: ...

    @abstractmethod
    def touch_video(self, video_id: str, ttl_s: int) -> None: ...

    # jobs
    @abstractmethod
    def create_job(self, record: JobRecord, ttl_s: int) -> None: ...

    @abstractmethod
    def get_job(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    def update_job(self, job_id: str, **fields: Any) -> bool: ...

    @abstractmethod
    def count_attempt(self, job_id: str) -> int:
        """One more delivery of the job; returns the number of deliveries so far (0: the record is gone)."""

    @abstractmethod
    def claim_request(self, request_hash: str, job_id: str, ttl_s: int) -> str | None:
        """Register ``job_id`` as the job answering this request; the existing job id when there is one."""

    @abstractmethod
    def release_request(self, request_hash: str, job_id: str) -> None:
        """Forget the request's job (only if it is still ``job_id``) so the next identical request retries."""

    # workers
    @abstractmethod
    def heartbeat(self, info: WorkerInfo, ttl_s: float) -> None: ...

    @abstractmethod
    def remove_worker(self, worker_id: str) -> None: ...

    @abstractmethod
    def live_workers(self) -> list[WorkerInfo]: ...

    # metrics
    @abstractmethod
    def add_metrics(self, increments: dict[str, float]) -> None:
        """Add to shared counters (sample name with labels -> amount)."""

    @abstractmethod
    def read_metrics(self) -> dict[str, float]: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`BackendUnavailable` when the backend cannot be reached."""


_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
_CREATE_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
_COUNT_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return n
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisState(State):
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self._update = client.register_script(_UPDATE_IF_EXISTS)
        self._create = client.register_script(_CREATE_IF_ABSENT)
        self._attempt = client.register_script(_COUNT_ATTEMPT)
        self._release = client.register_script(_RELEASE)

    @staticmethod
    def _flat(fields: dict[str, Any]) -> list[str]:
        return [item for pair in _encode(fields).items() for item in pair]

    def create_video(self, record: VideoRecord, ttl_s: int) -> bool:
        args = [ttl_s, *self._flat(record.model_dump(mode="json"))]
        return bool(self._create(keys=[self.keys.video(record.video_id)], args=args))

    def get_video(self, video_id: str) -> VideoRecord | None:
        raw = self.client.hgetall(self.keys.video(video_id))
        return VideoRecord.model_validate(_decode(raw)) if raw else None  # type: ignore[arg-type]

    def update_video(self, video_id: str, **fields: Any) -> bool:
        fields["updated_at"] = time.time()
        return bool(self._update(keys=[self.keys.video(video_id)], args=self._flat(fields)))

    def delete_video(self, video_id: str) -> bool:
        return bool(self.client.delete(self.keys.video(video_id)))

    def touch_video(self, video_id: str, ttl_s: int) -> None:
        self.client.expire(self.keys.video(video_id), ttl_s)

    def create_job(self, record: JobRecord, ttl_s: int) -> None:
        args = [ttl_s, *self._flat(record.model_dump(mode="json"))]
        self._create(keys=[self.keys.job(record.job_id)], args=args)

    def get_job(self, job_id: str) -> JobRecord | None:
        raw = self.client.hgetall(self.keys.job(job_id))
        return JobRecord.model_validate(_decode(raw)) if raw else None  # type: ignore[arg-type]

    def update_job(self, job_id: str, **fields: Any) -> bool:
        fields["updated_at"] = time.time()
        return bool(self._update(keys=[self.keys.job(job_id)], args=self._flat(fields)))

    def count_attempt(self, job_id: str) -> int:
        return int(self._attempt(keys=[self.keys.job(job_id)]))

    def claim_request(self, request_hash: str, job_id: str, ttl_s: int) -> str | None:
        key = self.keys.request(request_hash)
        if self.client.set(key, job_id, nx=True, ex=ttl_s):
            return None
        existing = self.client.get(key)
        if existing is None:  # expired in between: take it
            self.client.set(key, job_id, ex=ttl_s)
            return None
        return existing.decode() if isinstance(existing, bytes) else str(existing)

    def release_request(self, request_hash: str, job_id: str) -> None:
        self._release(keys=[self.keys.request(request_hash)], args=[job_id])

    def heartbeat(self, info: WorkerInfo, ttl_s: float) -> None:
        self.client.set(self.keys.worker(info.worker_id), info.model_dump_json(), px=int(ttl_s * 1000))

    def remove_worker(self, worker_id: str) -> None:
        self.client.delete(self.keys.worker(worker_id))

    def live_workers(self) -> list[WorkerInfo]:
        names = list(self.client.scan_iter(match=self.keys.workers, count=1000))
        if not names:
            return []
        return [WorkerInfo.model_validate_json(raw) for raw in self.client.mget(names) if raw]  # type: ignore[union-attr]

    def add_metrics(self, increments: dict[str, float]) -> None:
        if not increments:
            return
        pipe = self.client.pipeline(transaction=False)
        for name, amount in increments.items():
            pipe.hincrbyfloat(self.keys.metrics, name, amount)
        pipe.execute()

    def read_metrics(self) -> dict[str, float]:
        raw = self.client.hgetall(self.keys.metrics)
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}  # type: ignore[union-attr]

    def ping(self) -> None:
        try:
            self.client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise BackendUnavailable(f"Redis cannot be reached: {err}") from err


class MemoryState(State):
    """Embedded mode: the same records in this process's memory, with TTLs."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, tuple[Any, float]] = {}  # key -> (value, expires at monotonic)
        self._metrics: dict[str, float] = {}
        self.keys = Keys("memory")

    def _get(self, key: str) -> Any:
        found = self._data.get(key)
        if found is None:
            return None
        if found[1] < time.monotonic():
            del self._data[key]
            return None
        return found[0]

    def _put(self, key: str, value: Any, ttl_s: float) -> None:
        self._data[key] = (value, time.monotonic() + ttl_s)

    def _ttl(self, key: str) -> float:
        return self._data[key][1] - time.monotonic()

    def create_video(self, record: VideoRecord, ttl_s: int) -> bool:
        with self._lock:
            key = self.keys.video(record.video_id)
            if self._get(key) is not None:
                return False
            self._put(key, record.model_dump(mode="json"), ttl_s)
            return True

    def get_video(self, video_id: str) -> VideoRecord | None:
        with self._lock:
            raw = self._get(self.keys.video(video_id))
            return VideoRecord.model_validate(raw) if raw is not None else None

    def _update_record(self, key: str, fields: dict[str, Any]) -> bool:
        with self._lock:
            raw = self._get(key)
            if raw is None:
                return False
            raw.update(json.loads(json.dumps(_encode_plain(fields))))
            raw["updated_at"] = time.time()
            return True

    def update_video(self, video_id: str, **fields: Any) -> bool:
        return self._update_record(self.keys.video(video_id), fields)

    def delete_video(self, video_id: str) -> bool:
        with self._lock:
            return self._data.pop(self.keys.video(video_id), None) is not None

    def touch_video(self, video_id: str, ttl_s: int) -> None:
        with self._lock:
            raw = self._get(self.keys.video(video_id))
            if raw is not None:
                self._put(self.keys.video(video_id), raw, ttl_s)

    def create_job(self, record: JobRecord, ttl_s: int) -> None:
        with self._lock:
            if self._get(self.keys.job(record.job_id)) is None:
                self._put(self.keys.job(record.job_id), record.model_dump(mode="json"), ttl_s)

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock:
            raw = self._get(self.keys.job(job_id))
            return JobRecord.model_validate(raw) if raw is not None else None

    def update_job(self, job_id: str, **fields: Any) -> bool:
        return self._update_record(self.keys.job(job_id), fields)

    def count_attempt(self, job_id: str) -> int:
        with self._lock:
            raw = self._get(self.keys.job(job_id))
            if raw is None:
                return 0
            raw["attempts"] = int(raw.get("attempts", 0)) + 1
            return raw["attempts"]

    def claim_request(self, request_hash: str, job_id: str, ttl_s: int) -> str | None:
        with self._lock:
            existing = self._get(self.keys.request(request_hash))
            if existing is not None:
                return existing
            self._put(self.keys.request(request_hash), job_id, ttl_s)
            return None

    def release_request(self, request_hash: str, job_id: str) -> None:
        with self._lock:
            if self._get(self.keys.request(request_hash)) == job_id:
                del self._data[self.keys.request(request_hash)]

    def heartbeat(self, info: WorkerInfo, ttl_s: float) -> None:
        with self._lock:
            self._put(self.keys.worker(info.worker_id), info.model_dump_json(), ttl_s)

    def remove_worker(self, worker_id: str) -> None:
        with self._lock:
            self._data.pop(self.keys.worker(worker_id), None)

    def live_workers(self) -> list[WorkerInfo]:
        prefix = self.keys.workers[:-1]
        with self._lock:
            found = [self._get(k) for k in list(self._data) if k.startswith(prefix)]
        return [WorkerInfo.model_validate_json(raw) for raw in found if raw is not None]

    def add_metrics(self, increments: dict[str, float]) -> None:
        with self._lock:
            for name, amount in increments.items():
                self._metrics[name] = self._metrics.get(name, 0.0) + amount

    def read_metrics(self) -> dict[str, float]:
        with self._lock:
            return dict(self._metrics)

    def ping(self) -> None:
        return None


def _encode_plain(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in fields.items()}
