"""Regression tests of the stores' hardening (issue 8, defects 2, 4, 8): a submit that fails leaves nothing
behind, a Redis write holds a bounded amount in memory, and the stored answers are bounded in number."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

import pytest

from service.api.gateway import Gateway
from service.contract.errors import InvalidRequest
from service.contract.keys import Keys
from service.contract.schemas import Job, JobKind, Mode, Status
from service.contract.settings import Settings
from service.store.backend import open_backend
from service.store.jobs import JobStore, Outcome
from service.store.memory import MemoryJobStore, MemoryRecords
from service.store.redis_chunks import WRITE_BATCH_BYTES, RedisChunkStore
from service.store.redis_jobs import RedisJobStore

from service_helpers import SINGLE, redis_client, redis_prefix  # noqa: F401 - fixture

VIDEO = "cd" * 32


def ground_job(n: int) -> Job:
    return Job(job_id=f"job{n}", kind=JobKind.ground, video_id=VIDEO, model="tiny", queries=[f"q{n}"])


# ---------------------------------------------------------------------------------------------------- defect 2


class _FailingQueue(deque):
    """The in-memory queue, failing its next append (the enqueue step of a submit)."""

    fail = True

    def append(self, item: Any) -> None:
        if self.fail:
            self.fail = False
            raise RuntimeError("enqueue failed")
        super().append(item)


def test_a_submit_that_fails_at_enqueue_leaves_no_record_and_the_same_request_queues(tmp_path) -> None:
    settings = Settings(models=["tiny"], upload_dir=tmp_path)
    backend = open_backend(settings)
    gateway = Gateway(settings, backend)
    jobs = backend.jobs
    assert isinstance(jobs, MemoryJobStore)
    jobs._waiting = _FailingQueue()
    with pytest.raises(RuntimeError, match="enqueue failed"):
        gateway.submit(VIDEO, "tiny", Mode.moments, ["a dog"], top_k=5)
    assert not jobs._records.data and not jobs._requests.data  # nothing answers "queued" for nothing
    record = gateway.submit(VIDEO, "tiny", Mode.moments, ["a dog"], top_k=5)  # the same request again
    assert record.status == Status.queued
    (taken,) = jobs.take("w", count=5, block_s=0.5)
    assert taken.job is not None and taken.job.job_id == record.job_id
    # Text that is no Unicode (a lone surrogate) is refused before anything is stored.
    with pytest.raises(InvalidRequest, match="surrogate"):
        gateway.submit(VIDEO, "tiny", Mode.moments, ["\ud800 x"], top_k=5)
    with pytest.raises(InvalidRequest, match="surrogate"):
        gateway.check_queries(["\udc00"])
    assert len(jobs._records.data) == 1


# ---------------------------------------------------------------------------------------------------- defect 4


class _CountingPipeline:
    """A pipeline that records the bytes it holds when it runs."""

    def __init__(self, pipe: Any, sizes: list[int]) -> None:
        self.pipe, self.sizes, self.pending = pipe, sizes, 0

    def set(self, key: str, value: bytes, **kwargs: Any) -> None:
        self.pending += len(value)
        self.pipe.set(key, value, **kwargs)

    def execute(self) -> Any:
        self.sizes.append(self.pending)
        self.pending = 0
        return self.pipe.execute()


class _CountingClient:
    def __init__(self, client: Any) -> None:
        self.client, self.sizes = client, []

    def pipeline(self, **kwargs: Any) -> _CountingPipeline:
        return _CountingPipeline(self.client.pipeline(**kwargs), self.sizes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.mark.redis
def test_a_large_redis_write_holds_at_most_one_batch_in_memory(redis_prefix) -> None:  # noqa: F811
    client = _CountingClient(redis_client())
    chunk = 256 * 1024 - 64
    store = RedisChunkStore(client, chunk)  # type: ignore[arg-type]
    payload = os.urandom(12 << 20)
    name = f"{redis_prefix}:blob"
    store.put(name, [payload[i:i + (1 << 20)] for i in range(0, len(payload), 1 << 20)], {}, ttl_s=60)
    assert max(client.sizes) <= WRITE_BATCH_BYTES + chunk and WRITE_BATCH_BYTES <= 1 << 20, client.sizes
    got = store.get(name)
    assert got is not None and got[1] == payload
    store.delete(name)


# ---------------------------------------------------------------------------------------------------- defect 8


@pytest.fixture(params=["single", "memory"])
def bounded_jobs(request) -> JobStore:
    if request.param == "memory":
        return MemoryJobStore(max_length=100, metrics=MemoryRecords(), max_results=2)
    prefix = request.getfixturevalue("redis_prefix")
    return RedisJobStore(redis_client(SINGLE), Keys(prefix), 100, result_ttl_s=60, url=SINGLE.url, timeout_s=2,
                         max_results=2)


@pytest.mark.redis
def test_stored_answers_are_bounded_oldest_dropped_first(bounded_jobs) -> None:
    jobs = bounded_jobs
    for n in range(5):
        jobs.submit(ground_job(n), ttl_s=60, request_hash=f"req{n}")
        (d,) = jobs.take("w", count=1, block_s=0.5)
        jobs.begin("w", [d])
        jobs.finish("w", [Outcome(d, result={"answer": n})])
    kept = {n: jobs.get(f"job{n}") for n in range(5)}
    # The oldest go first; Redis deletes the answers one finish late (a script touches only keys it is given).
    assert [n for n, record in kept.items() if record is not None] in ([3, 4], [2, 3, 4])
    assert kept[4] is not None and kept[4].result == {"answer": 4}
    if isinstance(jobs, RedisJobStore):
        assert jobs.client.zcard(jobs.keys.results) == 2
    # The request of a dropped answer computes it again (a new job, queued), it is not stuck.
    again = jobs.submit(ground_job(9), ttl_s=60, request_hash="req0")
    assert again.job_id == "job9" and again.status == Status.queued
