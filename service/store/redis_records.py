"""Records in Redis: one hash per video (in the video's slot); heartbeats in the queue's slot, without a TTL.

A heartbeat is a field of one hash plus its stale time in a sorted set, removed explicitly (a worker stopping,
or its orphaned queue being adopted): a TTL would make it evictable under ``maxmemory`` (see
:mod:`service.contract.keys`), and a live worker would vanish from ``/readyz``.
"""

from __future__ import annotations

import time
from typing import Any

from service.contract.errors import BackendUnavailable
from service.contract.keys import Keys
from service.contract.schemas import VideoRecord, WorkerInfo

from .connect import BACKEND_ERRORS, RedisClient
from .records import Records, after, decode_fields, encode_fields

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


_TIES = 16  # index entries read past a page's end, for uploads of the same instant the cursor's bound includes


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _flat(fields: dict[str, Any]) -> list[str]:
    return [item for pair in encode_fields(fields).items() for item in pair]


class RedisRecords(Records):
    def __init__(self, client: RedisClient, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self._update = client.register_script(_UPDATE_IF_EXISTS)
        self._create = client.register_script(_CREATE_IF_ABSENT)

    def create_video(self, record: VideoRecord, ttl_s: int) -> bool:
        args: list[str | int] = [ttl_s, *_flat(record.model_dump(mode="json"))]
        created = bool(self._create(keys=[self.keys.video(record.video_id)], args=args))
        if created:  # another slot: a command of its own (a crash in between leaves the video unlisted only)
            self.client.zadd(self.keys.video_list, {record.video_id: record.created_at})
        return created

    def get_video(self, video_id: str) -> VideoRecord | None:
        raw = self.client.hgetall(self.keys.video(video_id))
        return VideoRecord.model_validate(decode_fields(raw)) if raw else None

    def update_video(self, video_id: str, **fields: Any) -> bool:
        fields["updated_at"] = time.time()
        return bool(self._update(keys=[self.keys.video(video_id)], args=_flat(fields)))

    def delete_video(self, video_id: str) -> bool:
        deleted = bool(self.client.delete(self.keys.video(video_id)))
        self.unlist_video(video_id)
        return deleted

    def video_index(self, limit: int, before: tuple[float, str] | None = None) -> list[tuple[float, str]]:
        top: float | str = before[0] if before is not None else "+inf"
        raw: list[tuple[bytes | str, float]] = self.client.zrevrangebyscore(  # type: ignore[assignment]
            self.keys.video_list, top, "-inf", start=0, num=limit + _TIES, withscores=True)
        return after([(float(score), _text(member)) for member, score in raw], before, limit)

    def unlist_video(self, video_id: str) -> None:
        self.client.zrem(self.keys.video_list, video_id)

    def touch_video(self, video_id: str, ttl_s: int) -> None:
        self.client.expire(self.keys.video(video_id), ttl_s)

    def heartbeat(self, info: WorkerInfo, ttl_s: float) -> None:
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.beats, info.worker_id, info.model_dump_json())
        pipe.zadd(self.keys.alive, {info.worker_id: now + ttl_s})  # stale from then on
        pipe.zadd(self.keys.workers, {info.worker_id: now})  # last beat: what take-over counts from
        pipe.execute()

    def remove_worker(self, worker_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.keys.beats, worker_id)
        pipe.zrem(self.keys.alive, worker_id)
        pipe.zrem(self.keys.workers, worker_id)
        pipe.execute()

    def live_workers(self) -> list[WorkerInfo]:
        pipe = self.client.pipeline(transaction=False)  # one slot: one round trip, on a cluster too
        pipe.zrangebyscore(self.keys.alive, time.time(), "+inf")
        pipe.hgetall(self.keys.beats)
        alive, beats = pipe.execute()
        found = {_text(k): v for k, v in beats.items()}
        return [WorkerInfo.model_validate_json(found[_text(w)]) for w in alive if _text(w) in found]

    def add_metrics(self, increments: dict[str, float]) -> None:
        if not increments:
            return
        pipe = self.client.pipeline(transaction=False)
        for name, amount in increments.items():
            pipe.hincrbyfloat(self.keys.metrics, name, amount)
        pipe.execute()

    def read_metrics(self) -> dict[str, float]:
        raw = self.client.hgetall(self.keys.metrics)
        return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}

    def ping(self) -> None:
        """A read in the queue's slot: on a cluster, the node every request needs (PING would ask any node)."""
        try:
            self.client.exists(self.keys.workers)
        except BACKEND_ERRORS as err:
            raise BackendUnavailable(f"Redis cannot be reached: {err}") from err
