"""Records in Redis: one hash per video (in the video's slot), heartbeat strings indexed by a sorted set."""

from __future__ import annotations

import time
from typing import Any

import redis

from service.contract.errors import BackendUnavailable
from service.contract.keys import Keys
from service.contract.schemas import VideoRecord, WorkerInfo

from .records import Records, decode_fields, encode_fields

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
# KEYS: worker index. ARGV: oldest heartbeat time still alive, queue-slot prefix. The index names the
# candidates; a heartbeat key that expired (TTL) is skipped.
_LIVE_WORKERS = """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  local beat = redis.call('GET', ARGV[2] .. ':worker:' .. id)
  if beat then out[#out + 1] = beat end
end
return out
"""


def _flat(fields: dict[str, Any]) -> list[str]:
    return [item for pair in encode_fields(fields).items() for item in pair]


class RedisRecords(Records):
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self._update = client.register_script(_UPDATE_IF_EXISTS)
        self._create = client.register_script(_CREATE_IF_ABSENT)
        self._live = client.register_script(_LIVE_WORKERS)

    def create_video(self, record: VideoRecord, ttl_s: int) -> bool:
        args: list[str | int] = [ttl_s, *_flat(record.model_dump(mode="json"))]
        return bool(self._create(keys=[self.keys.video(record.video_id)], args=args))

    def get_video(self, video_id: str) -> VideoRecord | None:
        raw = self.client.hgetall(self.keys.video(video_id))
        return VideoRecord.model_validate(decode_fields(raw)) if raw else None

    def update_video(self, video_id: str, **fields: Any) -> bool:
        fields["updated_at"] = time.time()
        return bool(self._update(keys=[self.keys.video(video_id)], args=_flat(fields)))

    def delete_video(self, video_id: str) -> bool:
        return bool(self.client.delete(self.keys.video(video_id)))

    def touch_video(self, video_id: str, ttl_s: int) -> None:
        self.client.expire(self.keys.video(video_id), ttl_s)

    def heartbeat(self, info: WorkerInfo, ttl_s: float) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.keys.worker(info.worker_id), info.model_dump_json(), px=int(ttl_s * 1000))
        pipe.zadd(self.keys.workers, {info.worker_id: time.time()})  # the index; the key's TTL says alive
        pipe.execute()

    def remove_worker(self, worker_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(self.keys.worker(worker_id))
        pipe.zrem(self.keys.workers, worker_id)
        pipe.execute()

    def live_workers(self) -> list[WorkerInfo]:
        # Heartbeats older than an hour cannot be alive under any valid setting (heartbeat_ttl_s <= 3600).
        slot = self.keys.workers.rsplit(":", 1)[0]
        beats = self._live(keys=[self.keys.workers], args=[time.time() - 3600, slot])
        return [WorkerInfo.model_validate_json(raw) for raw in beats]

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
        try:
            self.client.ping()
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise BackendUnavailable(f"Redis cannot be reached: {err}") from err
