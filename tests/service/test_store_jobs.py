"""The jobs: at-least-once delivery, take-over after the visibility timeout, bounded length, no trimming,
one-step submit with request joining, the done signal, and routing to the worker holding a video."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.contract.errors import QueueFull
from service.contract.keys import JOB_GROUP, Keys
from service.contract.schemas import Job, JobKind, Status, WorkerInfo
from service.store.jobs import JobStore, Outcome
from service.store.memory import MemoryJobStore, MemoryRecords
from service.store.redis_jobs import RedisJobStore
from service.store.redis_records import RedisRecords

from service_helpers import CLUSTER, SINGLE, RedisTarget, redis_client, redis_prefix, redis_target  # noqa: F401 - fixtures


def job(n: int, video: str = "v") -> Job:
    return Job(job_id=f"job{n}", kind=JobKind.ground, video_id=video * 64, model="tiny", queries=[f"q{n}"])


def redis_store(prefix: str, max_length: int = 3, target: RedisTarget = SINGLE) -> RedisJobStore:
    return RedisJobStore(redis_client(target), Keys(prefix), max_length, result_ttl_s=60, url=target.url,
                         timeout_s=2, cluster=target.cluster)


@pytest.fixture(params=["single", "cluster", "memory"])
def jobs(request) -> JobStore:
    if request.param == "memory":
        return MemoryJobStore(max_length=3, metrics=MemoryRecords())
    target = CLUSTER if request.param == "cluster" else SINGLE
    return redis_store(request.getfixturevalue("redis_prefix"), target=target)


def submit(jobs: JobStore, *numbers: int) -> None:
    for n in numbers:
        jobs.submit(job(n), ttl_s=60)


@pytest.mark.redis
def test_jobs_go_out_in_order_and_leave_when_finished(jobs) -> None:
    submit(jobs, 0, 1)
    assert jobs.length() == 2
    assert jobs.get("job0").status == Status.queued
    taken = jobs.take("w1", count=5, block_s=0.5)
    assert [d.job.job_id for d in taken] == ["job0", "job1"]
    assert jobs.take("w2", count=5, block_s=0.1) == []  # delivered once
    assert jobs.length() == 2  # running jobs still count
    assert jobs.begin("w1", taken) == [1, 1]
    assert jobs.get("job0").status == Status.processing and jobs.get("job0").worker == "w1"
    jobs.finish("w1", [Outcome(taken[0], result={"answer": 0}),
                       Outcome(taken[1], error_status=422, error_code="bad_video", error_message="no")])
    assert jobs.length() == 0
    assert jobs.get("job0").status == Status.ready and jobs.get("job0").result == {"answer": 0}
    failed = jobs.get("job1")
    assert failed.status == Status.failed and (failed.error_status, failed.error_code) == (422, "bad_video")


@pytest.mark.redis
def test_progress_updates_a_running_job_and_never_resurrects_one(jobs) -> None:
    submit(jobs, 0)
    (taken,) = jobs.take("w1", count=1, block_s=0.5)
    jobs.begin("w1", [taken])
    assert jobs.update("job0", 600, progress=0.5, detail={"stage": "training", "epoch": 2}) is True
    record = jobs.get("job0")
    assert record.status == Status.processing and record.progress == 0.5 and record.detail["epoch"] == 2
    assert jobs.update("nope", 600, progress=1.0) is False and jobs.get("nope") is None


@pytest.mark.redis
def test_full_queue_refuses_and_nothing_is_trimmed(jobs) -> None:
    submit(jobs, 0, 1, 2)
    with pytest.raises(QueueFull):
        jobs.submit(job(9), ttl_s=60)
    assert jobs.get("job9") is None  # refused: no record left behind
    with pytest.raises(QueueFull):
        jobs.check_capacity()
    taken = jobs.take("w1", count=5, block_s=0.5)
    assert [d.job.job_id for d in taken] == ["job0", "job1", "job2"]  # the oldest were not dropped


@pytest.mark.redis
def test_identical_requests_join_one_job_until_it_fails(jobs) -> None:
    first = jobs.submit(job(1), ttl_s=60, request_hash="same")
    second = jobs.submit(job(2), ttl_s=60, request_hash="same")
    assert second.job_id == first.job_id == "job1" and jobs.length() == 1
    (d,) = jobs.take("w", count=5, block_s=0.5)
    jobs.finish("w", [Outcome(d, error_status=503, error_code="x", error_message="y")])
    third = jobs.submit(job(3), ttl_s=60, request_hash="same")  # a failed job is not joined: it runs again
    assert third.job_id == "job3" and jobs.length() == 1


@pytest.mark.redis
def test_waiters_wake_when_the_job_finishes_and_late_ones_at_once(jobs) -> None:
    submit(jobs, 1)
    (d,) = jobs.take("w", count=1, block_s=0.5)

    async def scenario() -> tuple[bool, bool, float, bool, bool]:
        loop = asyncio.get_running_loop()
        waiting = [asyncio.create_task(jobs.wait("job1", 5.0)) for _ in range(3)]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await loop.run_in_executor(None, lambda: jobs.finish("w", [Outcome(d, result={"answer": 1})]))
        woke = await asyncio.gather(*waiting)
        latency = time.monotonic() - started
        late = await jobs.wait("job1", 5.0)
        timed_out = await jobs.wait("job-never", 0.3)
        await jobs.aclose()
        # Every waiter gets the finished job itself, answer included.
        return (all(r.status == Status.ready and r.result == {"answer": 1} for r in woke), len(woke) == 3, latency,
                late is not None and late.result == {"answer": 1}, timed_out is not None)

    all_woke, three, latency, late, timed_out = asyncio.run(scenario())
    assert all_woke and three and late and not timed_out
    assert latency < 2.0  # woken by the signal, not by the 5 s timeout


@pytest.mark.redis
def test_a_dead_consumers_job_is_taken_over_after_the_visibility_timeout(jobs) -> None:
    submit(jobs, 1)
    (first,) = jobs.take("dead", count=1, block_s=0.5)
    assert jobs.reclaim("alive", min_idle_s=0.3, count=10) == []  # not idle long enough yet
    time.sleep(0.4)
    (again,) = jobs.reclaim("alive", min_idle_s=0.3, count=10)
    assert again.entry_id == first.entry_id and again.job == first.job and again.reclaimed
    assert (first.attempts, again.attempts) == (1, 2)  # the dead worker wrote nothing: the queue counted it
    jobs.finish("alive", [Outcome(again, result={})])
    assert jobs.length() == 0
    assert jobs.get("job1").attempts == 2  # stored by the finish, though no begin ran


@pytest.mark.redis
def test_attempts_are_counted_without_a_begin_and_begin_stores_them(jobs) -> None:
    submit(jobs, 1)
    (first,) = jobs.take("dead", count=1, block_s=0.5)
    time.sleep(0.35)
    (second,) = jobs.reclaim("dead-too", min_idle_s=0.3, count=10)
    time.sleep(0.35)
    (third,) = jobs.reclaim("alive", min_idle_s=0.3, count=10)
    assert [d.attempts for d in (first, second, third)] == [1, 2, 3]
    assert jobs.begin("alive", [third]) == [3] and jobs.get("job1").attempts == 3


@pytest.mark.redis
def test_refreshing_a_claim_keeps_the_job(jobs) -> None:
    submit(jobs, 1)
    (mine,) = jobs.take("busy", count=1, block_s=0.5)
    for _ in range(3):
        time.sleep(0.15)
        jobs.extend("busy", [mine])
    assert jobs.reclaim("thief", min_idle_s=0.3, count=10) == []


@pytest.mark.redis
def test_released_jobs_go_back_for_any_worker(jobs) -> None:
    submit(jobs, 0, 1, 2)
    taken = jobs.take("w1", count=3, block_s=0.5)
    jobs.release(taken[1:])
    assert jobs.length() == 3  # nothing lost, nothing doubled
    again = jobs.take("w2", count=5, block_s=0.5)
    assert sorted(d.job.job_id for d in again) == ["job1", "job2"]
    assert [d.attempts for d in again] == [1, 1]  # given back unrun: not an attempt


@pytest.mark.redis
def test_redis_payloads_are_json_and_bad_ones_are_dropped(redis_prefix, redis_target) -> None:  # noqa: F811
    store = redis_store(redis_prefix, 10, redis_target)
    keys, client = Keys(redis_prefix), store.client
    store.submit(job(1), ttl_s=60)
    raw = client.xrange(keys.jobs)[0][1][b"job"]
    assert Job.model_validate_json(raw).job_id == "job1"  # plain JSON, no pickle
    client.xadd(keys.jobs, {"job": b"\x80\x04not json"})
    taken = store.take("w", count=5, block_s=0.5)
    assert [d.job is None for d in taken] == [False, True]
    store.finish("w", [Outcome(d) for d in taken])
    assert client.xlen(keys.jobs) == 0
    assert client.xinfo_groups(keys.jobs)[0]["name"].decode() == JOB_GROUP


def _beat(records: RedisRecords, worker_id: str) -> None:
    records.heartbeat(WorkerInfo(worker_id=worker_id, host="h", pid=1, device="cpu", started_at=time.time(),
                                 seen_at=time.time(), models={}), ttl_s=30)


@pytest.mark.redis
def test_jobs_for_a_held_video_go_to_the_live_worker_holding_it(redis_prefix, redis_target) -> None:  # noqa: F811
    store = redis_store(redis_prefix, 10, redis_target)
    records = RedisRecords(store.client, Keys(redis_prefix))
    for worker in ("w1", "w2"):
        store.open(worker)
        _beat(records, worker)
    store.hold("w2", "a" * 64, "tiny", ttl_s=60)
    store.submit(job(1, "a"), ttl_s=60)  # held by w2
    store.submit(job(2, "b"), ttl_s=60)  # held by nobody: the shared queue
    assert store.length() == 2
    assert [d.job.job_id for d in store.take("w1", count=5, block_s=0.2)] == ["job2"]
    assert [d.job.job_id for d in store.take("w2", count=5, block_s=0.2)] == ["job1"]

    records.remove_worker("w2")  # w2's heartbeat is gone: its videos' jobs go to anyone
    store.submit(job(3, "a"), ttl_s=60)
    assert [d.job.job_id for d in store.take("w1", count=5, block_s=0.2)] == ["job3"]


@pytest.mark.redis
def test_an_orphaned_own_queue_is_emptied_into_the_shared_one(redis_prefix, redis_target) -> None:  # noqa: F811
    store = redis_store(redis_prefix, 10, redis_target)
    records = RedisRecords(store.client, Keys(redis_prefix))
    store.open("gone")
    _beat(records, "gone")
    store.hold("gone", "a" * 64, "tiny", ttl_s=60)
    store.submit(job(1, "a"), ttl_s=60)
    store.submit(job(2, "a"), ttl_s=60)
    store.take("gone", count=1, block_s=0.2)  # one in its hands, one still waiting
    assert store.reclaim("alive", min_idle_s=60, count=10) == []  # its heartbeat is recent
    time.sleep(0.3)
    store.reclaim("alive", min_idle_s=0.2, count=10)  # now it is an orphan: both jobs go to the shared queue
    adopted = sorted(store.take("alive", count=5, block_s=0.2), key=lambda d: d.job.job_id)
    assert [d.job.job_id for d in adopted] == ["job1", "job2"]
    assert [d.attempts for d in adopted] == [2, 1]  # the one it was running when it went counts as tried
    assert store.length() == 2  # nothing doubled: the orphan's queue is gone


@pytest.mark.redis
def test_closing_hands_the_own_queue_back(redis_prefix, redis_target) -> None:  # noqa: F811
    store = redis_store(redis_prefix, 10, redis_target)
    records = RedisRecords(store.client, Keys(redis_prefix))
    store.open("leaving")
    _beat(records, "leaving")
    store.hold("leaving", "a" * 64, "tiny", ttl_s=60)
    store.submit(job(1, "a"), ttl_s=60)
    store.close("leaving")
    assert [d.job.job_id for d in store.take("other", count=5, block_s=0.2)] == ["job1"]


@pytest.mark.redis
def test_finish_adds_to_the_shared_metrics(redis_prefix, redis_target) -> None:  # noqa: F811
    store = redis_store(redis_prefix, 10, redis_target)
    records = RedisRecords(store.client, Keys(redis_prefix))
    store.submit(job(1), ttl_s=60)
    taken = store.take("w", count=1, block_s=0.2)
    store.finish("w", [Outcome(taken[0], result={})], metrics={"r2_x_total": 2.0})
    assert records.read_metrics() == {"r2_x_total": 2.0}


@pytest.mark.redis
def test_an_evicted_job_record_is_rebuilt_from_the_queued_job(redis_prefix, redis_target) -> None:  # noqa: F811
    """Under maxmemory (volatile-lru) a queued job's record may be evicted: the job still runs and answers."""
    store = redis_store(redis_prefix, 10, redis_target)
    keys = Keys(redis_prefix)
    store.submit(job(1), ttl_s=60)
    store.client.delete(keys.job("job1"))  # as Redis evicts it
    (d,) = store.take("w", count=1, block_s=0.5)
    assert store.begin("w", [d]) == [1]
    store.client.delete(keys.job("job1"))  # and once more while it runs
    store.finish("w", [Outcome(d, result={"answer": 1})])
    record = store.get("job1")
    assert record.status == Status.ready and record.result == {"answer": 1} and record.video_id == "v" * 64
    assert 0 < store.client.ttl(keys.job("job1")) <= 60


@pytest.mark.redis
def test_a_job_older_than_its_record_lifetime_is_dropped(redis_prefix, redis_target) -> None:  # noqa: F811
    store = redis_store(redis_prefix, 10, redis_target)
    old = job(1).model_copy(update={"created_at": time.time() - 3600})  # its record expired long ago
    store.submit(old, ttl_s=60)
    store.client.delete(Keys(redis_prefix).job("job1"))
    (d,) = store.take("w", count=1, block_s=0.5)
    assert store.begin("w", [d]) == [0]  # nobody waits for it: the worker drops it
    store.finish("w", [Outcome(d)])
    assert store.get("job1") is None and store.length() == 0


@pytest.mark.redis
def test_submit_follows_workers_that_came_or_went_since_it_last_looked(redis_prefix, redis_target) -> None:  # noqa: F811
    api = redis_store(redis_prefix, 10, redis_target)
    worker = redis_store(redis_prefix, 10, redis_target)
    records = RedisRecords(worker.client, Keys(redis_prefix))
    api.submit(job(1), ttl_s=60)  # the API has seen no own queue yet
    worker.open("late")
    _beat(records, "late")
    worker.hold("late", "a" * 64, "tiny", ttl_s=60)
    api.submit(job(2, "a"), ttl_s=60)  # a stale view of the owners: the script says so, the API retries
    assert [d.job.job_id for d in worker.take("late", count=5, block_s=0.2)][:1] == ["job2"]
    assert api.length() == 2
    worker.close("late")
    api.submit(job(3, "a"), ttl_s=60)  # the owner went away: the shared queue
    assert api.length() == 3


def test_scripts_name_every_key_they_touch() -> None:
    """A cluster routes a script by its KEYS, and Redis requires every key it touches to be among them: no script
    may build a key name (Lua's ``..``) or take one from ARGV."""
    import re

    from service.store import redis_jobs, redis_records

    scripts = {f"{m.__name__}.{n}": v for m in (redis_jobs, redis_records) for n, v in vars(m).items()
               if n.isupper() and isinstance(v, str) and "redis.call" in v}
    assert len(scripts) >= 6
    for name, script in scripts.items():
        assert " .. " not in script and "..'" not in script, f"{name} builds a key name"
        for call in re.findall(r"redis\.call\('(\w+)', ([^,)]+)", script):
            command, first = call
            if command in ("TIME",):
                continue
            assert not first.startswith("ARGV"), f"{name}: {command} on a key from ARGV"
