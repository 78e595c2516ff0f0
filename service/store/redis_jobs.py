"""Jobs in Redis: a hash per job, Streams with one consumer group for the queues, a list as the done signal.

Every key here shares the hash tag ``{q}`` (see :mod:`service.contract.keys`), so each script and transaction
touches one slot, and every script is given each key it touches (a cluster routes by them). Submitting is one
script (join an identical request, check the queue limit, pick the queue, create the record, append the job);
a worker's batch is finished with one script (answers, acknowledgements, done tokens, metrics), and begun with
one unless it is answered at once from the state the worker holds. Waiters rotate the done token of their job
with ``BLMOVE``, so every request waiting on the same job wakes, and a late one finds it at once.

Attempts are counted by the streams: each entry's delivery count (``XPENDING``) goes up as it is read or taken
over, atomically with the delivery, so a worker that dies running a job has used an attempt although it wrote
nothing before it ran. An entry moved to another stream (given back, or out of a dead worker's own queue) carries
the attempts it used in its field ``tried``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import orjson
import redis
from redis.exceptions import RedisClusterException

from service.contract.keys import JOB_GROUP, Keys
from service.contract.schemas import Job, JobKind, JobRecord, Status
from service.contract.webhooks import PendingHook

from .connect import AsyncRedisClient, RedisClient, async_redis_client
from .jobs import Delivery, JobStore, Outcome, parse_delivery
from .records import decode_fields, encode_fields

_WAIT_SLICE_S = 1.0  # one blocking call waits at most this long, so a frozen Redis is noticed
_SUBMIT_TRIES = 10  # a submit retries when the own queues or the joined job changed under it

# Every key a script touches is in KEYS (service/contract/keys.py). Names that depend on data (the own queues,
# the job an identical request joined) are passed by the caller with the data they came from; the script
# answers 'stale' (with the current owners) or 'check' (with the job to join) when that data changed, and the
# caller retries with the right keys.
#
# KEYS: shared queue, job record, request key, affinity key, own-queue set, live-worker zset, record of the job
#       to join (the job record again when none), then the own queue of each owner in ARGV order.
# ARGV: max length, payload, ttl, job id, use request key (0/1), id of the job to join ('' when none), now,
#       number of owners N, the N owner ids, record fields...
_SUBMIT = """
local n = tonumber(ARGV[8])
local owners = redis.call('SMEMBERS', KEYS[5])
if #owners ~= n then return {'stale', owners} end
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[5], ARGV[8 + i]) == 0 then return {'stale', owners} end
end
if ARGV[5] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing then
    if existing ~= ARGV[6] then return {'check', existing} end
    local status = redis.call('HGET', KEYS[7], 'status')
    if status and status ~= '"failed"' then return {'joined', existing} end
  end
end
local total = redis.call('XLEN', KEYS[1])
for i = 1, n do total = total + redis.call('XLEN', KEYS[7 + i]) end
if total >= tonumber(ARGV[1]) then return {'full'} end
local queue = KEYS[1]
local holder = redis.call('GET', KEYS[4])
if holder then
  for i = 1, n do
    if ARGV[8 + i] == holder then
      local stale_at = redis.call('ZSCORE', KEYS[6], holder)
      if stale_at and tonumber(stale_at) >= tonumber(ARGV[7]) then queue = KEYS[7 + i] end
    end
  end
end
redis.call('HSET', KEYS[2], unpack(ARGV, 9 + n))
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[5] == '1' then redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3]) end
redis.call('XADD', queue, '*', 'job', ARGV[2])
return {'queued', queue}
"""

# KEYS: job records. ARGV: worker (JSON), now (JSON), record ttl, then per job its attempts and the fields that
# rebuild its record (JSON list) or ''. A record that is gone while its job is younger than its TTL was evicted
# under maxmemory: it is rebuilt from the queued payload. Returns the attempts per job (0: record gone, nobody
# waits).
_BEGIN = """
local out = {}
for i, key in ipairs(KEYS) do
  local a = 2 + 2 * i
  if redis.call('EXISTS', key) == 0 and ARGV[a + 1] ~= '' then
    redis.call('HSET', key, unpack(cjson.decode(ARGV[a + 1])))
    redis.call('EXPIRE', key, ARGV[3])
  end
  if redis.call('EXISTS', key) == 0 then
    out[i] = 0
  else
    redis.call('HSET', key, 'attempts', ARGV[a], 'status', '"processing"', 'worker', ARGV[1], 'updated_at', ARGV[2])
    out[i] = tonumber(ARGV[a])
  end
end
return out
"""

# KEYS: metrics hash, pending webhooks (zset), their data (hash), their id sequence, then per outcome: job record,
#       done list, queue, the job's registered webhook URLs; then the results sorted set, then the records and
#       done lists of answers dropped by the previous call (deleted now: a script only touches its KEYS).
# ARGV: result ttl, consumer group, number of outcomes N, now, then per outcome: entry id, has a job (0/1), the
# fields of the answer (JSON list), the fields that rebuild a missing record (JSON list, '' when it must not be
# rebuilt), the done token (the finished job as JSON); then the most answers kept, the number K of ground jobs
# answered and their K ids; then metric name/amount pairs. Stores each answer (never resurrecting an expired
# record, only rebuilding an evicted one), leaves the token for its waiters, turns each registered webhook into a
# pending delivery due now, acknowledges and deletes the entry, adds to the metrics, and records the answers in
# the results set: one step. Returns the ids of the oldest answers past the limit, for the caller's next call to
# delete (the answers' memory stays bounded whatever the request rate, by the limit plus one batch).
_FINISH = """
local n = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local results = KEYS[4 * n + 5]
for k = 4 * n + 6, #KEYS do redis.call('DEL', KEYS[k]) end
for i = 1, n do
  local record, done, queue, hooks = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local a = 5 * i
  if ARGV[a + 1] == '1' then
    if redis.call('EXISTS', record) == 1 then
      redis.call('HSET', record, unpack(cjson.decode(ARGV[a + 2])))
    elseif ARGV[a + 3] ~= '' then
      redis.call('HSET', record, unpack(cjson.decode(ARGV[a + 3])))
      redis.call('HSET', record, unpack(cjson.decode(ARGV[a + 2])))
      redis.call('EXPIRE', record, ARGV[1])
    end
    redis.call('RPUSH', done, ARGV[a + 4])
    redis.call('EXPIRE', done, ARGV[1])
    for _, url in ipairs(redis.call('LRANGE', hooks, 0, -1)) do
      local id = redis.call('INCR', KEYS[4])
      redis.call('HSET', KEYS[3], id, cjson.encode({url = url, token = ARGV[a + 4], attempts = 0}))
      redis.call('ZADD', KEYS[2], ARGV[4], id)
    end
    redis.call('DEL', hooks)
  end
  redis.call('XACK', queue, ARGV[2], ARGV[a])
  redis.call('XDEL', queue, ARGV[a])
end
local b = 5 + 5 * n
local limit, k = tonumber(ARGV[b]), tonumber(ARGV[b + 1])
for j = b + 2, b + 1 + k do redis.call('ZADD', results, now, ARGV[j]) end
local dropped = {}
if k > 0 then
  redis.call('ZREMRANGEBYSCORE', results, '-inf', now - tonumber(ARGV[1]))
  redis.call('EXPIRE', results, ARGV[1])
  local excess = redis.call('ZCARD', results) - limit
  if excess > 0 then
    for i, member in ipairs(redis.call('ZPOPMIN', results, excess)) do
      if i % 2 == 1 then dropped[#dropped + 1] = member end
    end
  end
end
for j = b + 2 + k, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[j], ARGV[j + 1]) end
return dropped
"""

# KEYS: the job's done list, its registered webhook URLs, pending webhooks (zset), their data, their id sequence.
# ARGV: URL, now, ttl, the finished job ('' when the caller does not know it finished). A job that finished (its
# done token is there) gets a delivery due now; one still running gets the URL registered, which its finish
# turns into a delivery. Atomic with _FINISH: no URL is registered after the job's finish has read them.
_CALLBACK = """
local token = ARGV[4]
if token == '' then token = redis.call('LINDEX', KEYS[1], 0) end
if token then
  local id = redis.call('INCR', KEYS[5])
  redis.call('HSET', KEYS[4], id, cjson.encode({url = ARGV[1], token = token, attempts = 0}))
  redis.call('ZADD', KEYS[3], ARGV[2], id)
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 0
"""

# KEYS: pending webhooks (zset), their data. ARGV: now, lease end, count. Leases the due deliveries.
_DUE_HOOKS = """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))) do
  local data = redis.call('HGET', KEYS[2], id)
  if data then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    out[#out + 1] = id
    out[#out + 1] = data
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# KEYS: job record. ARGV: ttl, fields... Like _UPDATE, and restarts the record's TTL (a long job's progress).
_PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: shared queue, own-queue set, worker index, live-worker zset, heartbeats, the orphan's own queue.
# ARGV: orphaned worker id, consumer group. Moves every entry of the orphan's own queue (waiting or in its hands)
# to the shared queue, with the attempts it used (its field 'tried' plus its deliveries), then forgets the worker.
_ADOPT = """
local moved = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[6], '-', '+')) do
  local fields, job, tried = entry[2], nil, 0
  for i = 1, #fields, 2 do
    if fields[i] == 'job' then job = fields[i + 1] end
    if fields[i] == 'tried' then tried = tonumber(fields[i + 1]) or 0 end
  end
  if job then
    local pending = redis.pcall('XPENDING', KEYS[6], ARGV[2], entry[1], entry[1], 1)  -- no group: never read
    if type(pending) == 'table' and not pending.err and pending[1] then tried = tried + pending[1][4] end
    redis.call('XADD', KEYS[1], '*', 'job', job, 'tried', tried)
    moved = moved + 1
  end
end
redis.call('DEL', KEYS[6])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
return moved
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _tried(fields: dict[Any, Any]) -> int:
    """Attempts an entry's job used in the streams it was moved from (0 for a job queued once)."""
    raw = fields.get(b"tried") or fields.get("tried")
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


def _fields_json(fields: dict[str, Any]) -> str:
    """Record fields as the scripts take them: a JSON list of field, encoded value, field, encoded value..."""
    return orjson.dumps([item for pair in encode_fields(fields).items() for item in pair]).decode()


class RedisJobStore(JobStore):
    """Jobs of every process of a deployment, in one Redis (or one slot of a cluster)."""

    def __init__(self, client: RedisClient, keys: Keys, max_length: int, *, result_ttl_s: int, url: str,
                 timeout_s: float, cluster: bool = False, max_results: int = 2000) -> None:
        super().__init__(max_length)
        self.client, self.keys = client, keys
        self.result_ttl_s, self.max_results = result_ttl_s, max_results
        self._url, self._timeout_s, self._cluster = url, timeout_s, cluster
        self._async: AsyncRedisClient | None = None
        self._submit = client.register_script(_SUBMIT)
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)
        self._adopt = client.register_script(_ADOPT)
        self._progress = client.register_script(_PROGRESS)
        self._callback = client.register_script(_CALLBACK)
        self._due_hooks = client.register_script(_DUE_HOOKS)
        self._groups: set[str] = set()
        self._owners: list[str] | None = None  # workers with an own queue, as last seen (submit checks it)
        self._dropped: list[str] = []  # answers past max_results: deleted by the next finish

    def _ensure_group(self, queue: str) -> None:
        if queue in self._groups:
            return
        try:
            # From id 0: entries added before the group existed are delivered too.
            self.client.xgroup_create(queue, JOB_GROUP, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._groups.add(queue)

    def _nogroup(self, err: redis.ResponseError) -> bool:
        if "NOGROUP" in str(err):  # a stream or group vanished (Redis restarted empty, FLUSHDB): recreate
            self._groups.clear()
            return True
        return False

    def _young(self, job: Job) -> bool:
        """Whether a missing record of this job can only have been evicted (it cannot have expired yet)."""
        return time.time() - job.created_at < self.result_ttl_s

    # ------------------------------------------------------------------------------------------------ API side

    def submit(self, job: Job, ttl_s: int, request_hash: str | None = None) -> JobRecord:
        self._ensure_group(self.keys.jobs)
        record = JobRecord(job_id=job.job_id, kind=job.kind, video_id=job.video_id, model=job.model)
        fields = [item for pair in encode_fields(record.model_dump(mode="json")).items() for item in pair]
        owners = self._owners if self._owners is not None else sorted(
            _text(o) for o in self.client.smembers(self.keys.streams))
        joining = ""
        for _ in range(_SUBMIT_TRIES):
            keys = [self.keys.jobs, self.keys.job(job.job_id), self.keys.request(request_hash or job.job_id),
                    self.keys.affinity(job.video_id, job.model), self.keys.streams, self.keys.alive,
                    self.keys.job(joining or job.job_id), *(self.keys.worker_jobs(o) for o in owners)]
            args = [self.max_length, job.model_dump_json(), ttl_s, job.job_id, "1" if request_hash else "0", joining,
                    time.time(), len(owners), *owners, *fields]
            try:
                reply = self._submit(keys=keys, args=args)
            except redis.ResponseError as err:
                if not self._nogroup(err):
                    raise
                self._ensure_group(self.keys.jobs)
                continue
            outcome = _text(reply[0])
            if outcome == "stale":
                owners = sorted(_text(o) for o in reply[1])
                self._owners = owners
                continue
            if outcome == "check":
                joining = _text(reply[1])
                continue
            self._owners = owners
            if outcome == "full":
                raise self.full_error()
            if outcome == "joined":
                joined = self.get(_text(reply[1]))
                if joined is not None:
                    return joined
                continue  # expired in between: the script now finds no record to join and queues the job
            return record
        raise redis.ConnectionError(f"could not submit job {job.job_id}: the queue kept changing under "
                                    f"{_SUBMIT_TRIES} tries")

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.client.hgetall(self.keys.job(job_id))
        return JobRecord.model_validate(decode_fields(raw)) if raw else None

    def _async_client(self) -> AsyncRedisClient:
        if self._async is None:  # created in the event loop that waits
            self._async = async_redis_client(self._url, self._timeout_s, self._timeout_s + _WAIT_SLICE_S,
                                             cluster=self._cluster)
        return self._async

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        client, key = self._async_client(), self.keys.done(job_id)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            # A rotation (LEFT -> RIGHT of the same list) leaves the token for every other waiter. The token is the
            # finished job itself, so no second round trip reads the record.
            try:
                token = await client.blmove(key, key, max(0.01, min(_WAIT_SLICE_S, left)),  # type: ignore[arg-type]
                                            "LEFT", "RIGHT")  # Redis takes fractional seconds; the stubs say int
            except RedisClusterException as err:  # the cluster client could not even find the cluster
                raise redis.ConnectionError(f"the Redis Cluster cannot be reached: {err}") from err
            if token is not None:
                return JobRecord.model_validate_json(token)
            if deadline - time.monotonic() <= 0:
                return None

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def length(self) -> int:
        owners = [_text(o) for o in self.client.smembers(self.keys.streams)]
        pipe = self.client.pipeline(transaction=False)
        for queue in (self.keys.jobs, *(self.keys.worker_jobs(o) for o in owners)):
            pipe.xlen(queue)
        return sum(int(n) for n in pipe.execute())

    # ------------------------------------------------------------------------------------------------ worker side

    def open(self, consumer: str) -> None:
        self._ensure_group(self.keys.jobs)
        self._ensure_group(self.keys.worker_jobs(consumer))
        self.client.sadd(self.keys.streams, consumer)

    def _adopt_queue(self, orphan: str) -> int:
        keys = [self.keys.jobs, self.keys.streams, self.keys.workers, self.keys.alive, self.keys.beats,
                self.keys.worker_jobs(orphan)]
        return int(self._adopt(keys=keys, args=[orphan, JOB_GROUP]))

    def close(self, consumer: str) -> None:
        self._adopt_queue(consumer)
        self._groups.discard(self.keys.worker_jobs(consumer))

    def take(self, consumer: str, count: int, block_s: float) -> list[Delivery]:
        own = self.keys.worker_jobs(consumer)
        self._ensure_group(self.keys.jobs)
        self._ensure_group(own)
        block_ms = int(block_s * 1000)
        try:
            reply: Any = self.client.xreadgroup(JOB_GROUP, consumer, {own: ">", self.keys.jobs: ">"}, count=count,
                                                block=block_ms if block_ms > 0 else None)
        except redis.ResponseError as err:
            if self._nogroup(err):
                return []
            raise
        out: list[Delivery] = []
        for queue, entries in reply or []:  # (stream, [(entry id, fields), ...]) pairs
            for entry_id, fields in entries:
                out.append(parse_delivery(_text(entry_id), _text(queue), fields.get(b"job") or fields.get("job"),
                                          False, _tried(fields) + 1))
        return out  # up to ``count`` per queue: every entry read is this worker's now

    def begin(self, consumer: str, deliveries: list[Delivery]) -> list[int]:
        if not deliveries:
            return []
        keys: list[str] = []
        per_job: list[int | str] = []
        for d in deliveries:
            if d.job is None:
                keys.append(self.keys.job(f"none-{d.entry_id}"))
                per_job += [d.attempts, ""]
                continue
            keys.append(self.keys.job(d.job.job_id))
            record = JobRecord(job_id=d.job.job_id, kind=d.job.kind, video_id=d.job.video_id, model=d.job.model,
                               created_at=d.job.created_at)
            per_job += [d.attempts, _fields_json(record.model_dump(mode="json")) if self._young(d.job) else ""]
        counts = self._begin(keys=keys, args=[json.dumps(consumer), json.dumps(time.time()), self.result_ttl_s,
                                              *per_job])
        return [int(n) for n in counts]

    def finish(self, consumer: str, outcomes: list[Outcome], metrics: dict[str, float] | None = None,
               seconds: dict[str, float] | None = None) -> None:
        now = time.time()
        keys: list[str] = [self.keys.metrics, self.keys.hooks, self.keys.hook_data, self.keys.hook_seq]
        args: list[Any] = [self.result_ttl_s, JOB_GROUP, len(outcomes), now]
        for o in outcomes:
            d = o.delivery
            job_id = d.job.job_id if d.job is not None else f"none-{d.entry_id}"
            keys += [self.keys.job(job_id), self.keys.done(job_id), d.queue, self.keys.callbacks(job_id)]
            fields: dict[str, Any] = dict(worker=consumer, attempts=d.attempts, updated_at=now, seconds=seconds or {})
            if o.failed:
                fields.update(status=Status.failed, error_code=o.error_code, error_message=o.error_message,
                              error_status=o.error_status)
            else:
                fields.update(status=Status.ready, result=o.result)
            base, token = "", ""
            if d.job is not None:
                record = JobRecord(job_id=d.job.job_id, kind=d.job.kind, video_id=d.job.video_id, model=d.job.model,
                                   created_at=d.job.created_at)
                if self._young(d.job):  # every field, should the record have to be rebuilt
                    base = _fields_json(record.model_dump(mode="json"))
                token = record.model_copy(update=fields).model_dump_json()  # the waiters' answer
            args += [d.entry_id, "1" if d.job is not None else "0", _fields_json(fields), base, token]
        answered = [o.delivery.job.job_id for o in outcomes
                    if o.delivery.job is not None and o.delivery.job.kind == JobKind.ground]
        stale, self._dropped = self._dropped, []
        keys += [self.keys.results, *(self.keys.job(i) for i in stale), *(self.keys.done(i) for i in stale)]
        args += [self.max_results, len(answered), *answered]
        for name, amount in (metrics or {}).items():
            args += [name, amount]
        try:
            self._dropped = [_text(i) for i in self._finish(keys=keys, args=args)]
        except BaseException:
            self._dropped = stale  # not deleted yet: the next call does it
            raise

    def update(self, job_id: str, ttl_s: int, **fields: Any) -> bool:
        flat = [item for pair in encode_fields({**fields, "updated_at": time.time()}).items() for item in pair]
        return bool(self._progress(keys=[self.keys.job(job_id)], args=[int(ttl_s), *flat]))

    def release(self, deliveries: list[Delivery]) -> None:
        # Re-added as new entries of the shared queue and the taken ones removed, in one transaction: the job is
        # never lost nor doubled, and the total length (the queue limit) does not change.
        if not deliveries:
            return
        pipe = self.client.pipeline(transaction=True)
        for d in deliveries:
            if d.raw is not None:
                pipe.xadd(self.keys.jobs, {"job": d.raw, "tried": d.attempts - 1})
            pipe.xack(d.queue, JOB_GROUP, d.entry_id)
            pipe.xdel(d.queue, d.entry_id)
        pipe.execute()

    def reclaim(self, consumer: str, min_idle_s: float, count: int) -> list[Delivery]:
        orphans: Any = self.client.zrangebyscore(self.keys.workers, "-inf", time.time() - min_idle_s)
        for orphan in orphans:
            if _text(orphan) != consumer:
                self._adopt_queue(_text(orphan))
        out: list[Delivery] = []
        for queue in (self.keys.worker_jobs(consumer), self.keys.jobs):  # own: left by an earlier run of this id
            self._ensure_group(queue)
            try:
                reply = self.client.xautoclaim(queue, JOB_GROUP, consumer, int(min_idle_s * 1000), start_id="0-0",
                                               count=count - len(out))
            except redis.ResponseError as err:
                if self._nogroup(err):
                    continue
                raise
            claimed = [(entry_id, fields) for entry_id, fields in (reply[1] if len(reply) > 1 else []) if fields]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:  # pending entries whose payload is gone: nothing to run, just clear them
                self.client.xack(queue, JOB_GROUP, *deleted)
            delivered = self._deliveries(queue, [entry_id for entry_id, _ in claimed])
            out += [parse_delivery(_text(entry_id), queue, fields.get(b"job") or fields.get("job"), True,
                                   _tried(fields) + times)
                    for (entry_id, fields), times in zip(claimed, delivered, strict=True)]
            if len(out) >= count:
                break
        return out

    def _deliveries(self, queue: str, entry_ids: list[Any]) -> list[int]:
        """How often each pending entry was delivered, the take-over that just happened included."""
        if not entry_ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xpending_range(queue, JOB_GROUP, min=entry_id, max=entry_id, count=1)
        return [int(rows[0]["times_delivered"]) if rows else 1 for rows in pipe.execute()]

    def extend(self, consumer: str, deliveries: list[Delivery]) -> None:
        by_queue: dict[str, list[str]] = defaultdict(list)
        for d in deliveries:
            by_queue[d.queue].append(d.entry_id)
        for queue, entry_ids in by_queue.items():
            self.client.xclaim(queue, JOB_GROUP, consumer, 0, list[Any](entry_ids), justid=True)

    def hold(self, consumer: str, video_id: str, model: str, ttl_s: float) -> None:
        self.client.set(self.keys.affinity(video_id, model), consumer, px=int(ttl_s * 1000))

    # ------------------------------------------------------------------------------------------------ webhooks

    def add_callback(self, job_id: str, url: str, ttl_s: int, token: str | None = None) -> bool:
        keys = [self.keys.done(job_id), self.keys.callbacks(job_id), self.keys.hooks, self.keys.hook_data,
                self.keys.hook_seq]
        return bool(self._callback(keys=keys, args=[url, time.time(), int(ttl_s), token or ""]))

    def due_hooks(self, lease_s: float, count: int) -> list[PendingHook]:
        now = time.time()
        reply = self._due_hooks(keys=[self.keys.hooks, self.keys.hook_data], args=[now, now + lease_s, count])
        return [PendingHook.load(_text(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]

    def hook_done(self, hook_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.keys.hooks, hook_id)
        pipe.hdel(self.keys.hook_data, hook_id)
        pipe.execute()

    def hook_retry(self, hook: PendingHook, due_at: float) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.hook_data, hook.hook_id, hook.dump())
        pipe.zadd(self.keys.hooks, {hook.hook_id: due_at})
        pipe.execute()
