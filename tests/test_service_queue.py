"""The job queue: at-least-once delivery, take-over after the visibility timeout, bounded length, no trimming."""

from __future__ import annotations

import time

import pytest

from service.errors import QueueFull
from service.keys import JOB_GROUP, Keys
from service.queue import JobQueue, MemoryJobQueue, RedisJobQueue
from service.schemas import Job, JobKind

from service_helpers import redis_client, redis_prefix  # noqa: F401 - fixture


def job(n: int) -> Job:
    return Job(job_id=f"job{n}", kind=JobKind.ground, video_id="v" * 64, model="tiny", queries=[f"q{n}"])


@pytest.fixture(params=["redis", "memory"])
def queue(request) -> JobQueue:
    if request.param == "memory":
        return MemoryJobQueue(max_length=3)
    prefix = request.getfixturevalue("redis_prefix")
    return RedisJobQueue(redis_client(), Keys(prefix), max_length=3)


@pytest.mark.redis
def test_jobs_go_out_in_order_and_leave_when_acknowledged(queue) -> None:
    for n in range(2):
        queue.enqueue(job(n))
    assert queue.length() == 2
    taken = queue.take("w1", count=5, block_s=0.5)
    assert [d.job.job_id for d in taken] == ["job0", "job1"]
    assert queue.take("w2", count=5, block_s=0.1) == []  # delivered once
    assert queue.length() == 2  # running jobs still count
    for d in taken:
        queue.ack(d.entry_id)
    assert queue.length() == 0


@pytest.mark.redis
def test_full_queue_refuses_and_nothing_is_trimmed(queue) -> None:
    for n in range(3):
        queue.enqueue(job(n))
    with pytest.raises(QueueFull):
        queue.enqueue(job(9))
    with pytest.raises(QueueFull):
        queue.check_capacity()
    taken = queue.take("w1", count=5, block_s=0.5)
    assert [d.job.job_id for d in taken] == ["job0", "job1", "job2"]  # the oldest were not dropped


@pytest.mark.redis
def test_a_dead_consumers_job_is_taken_over_after_the_visibility_timeout(queue) -> None:
    queue.enqueue(job(1))
    (first,) = queue.take("dead", count=1, block_s=0.5)
    assert queue.reclaim("alive", min_idle_s=0.3, count=10) == []  # not idle long enough yet
    time.sleep(0.4)
    (again,) = queue.reclaim("alive", min_idle_s=0.3, count=10)
    assert again.entry_id == first.entry_id and again.job == first.job and again.reclaimed
    queue.ack(again.entry_id)
    assert queue.length() == 0


@pytest.mark.redis
def test_refreshing_a_claim_keeps_the_job(queue) -> None:
    queue.enqueue(job(1))
    (mine,) = queue.take("busy", count=1, block_s=0.5)
    for _ in range(3):
        time.sleep(0.15)
        queue.extend("busy", [mine.entry_id])
    assert queue.reclaim("thief", min_idle_s=0.3, count=10) == []


@pytest.mark.redis
def test_redis_payloads_are_json_and_bad_ones_are_dropped(redis_prefix) -> None:  # noqa: F811
    client = redis_client()
    keys = Keys(redis_prefix)
    queue = RedisJobQueue(client, keys, max_length=10)
    queue.enqueue(job(1))
    raw = client.xrange(keys.jobs)[0][1][b"job"]
    assert Job.model_validate_json(raw).job_id == "job1"  # plain JSON, no pickle
    client.xadd(keys.jobs, {"job": b"\x80\x04not json"})
    taken = queue.take("w", count=5, block_s=0.5)
    assert [d.job is None for d in taken] == [False, True]
    for d in taken:
        queue.ack(d.entry_id)
    assert client.xlen(keys.jobs) == 0
    assert client.xinfo_groups(keys.jobs)[0]["name"].decode() == JOB_GROUP


@pytest.mark.redis
def test_released_jobs_go_back_for_any_worker(queue) -> None:
    for n in range(3):
        queue.enqueue(job(n))
    taken = queue.take("w1", count=3, block_s=0.5)
    queue.release(taken[1:])
    assert queue.length() == 3  # nothing lost, nothing doubled
    again = queue.take("w2", count=5, block_s=0.5)
    assert sorted(d.job.job_id for d in again) == ["job1", "job2"]
