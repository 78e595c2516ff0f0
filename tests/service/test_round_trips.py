"""Redis round trips of one warm query, counted: the numbers docs/architecture.md states.

API: the video record, the submit script, the blocking wait on the done token, which carries the finished job
(3). Worker: the finish script and its next read of the queues (2): a query on a video whose state the worker
holds is not marked processing first (the stream counts its attempt). Nothing else: no polling, no feature
read (the worker holds the video's adapter state), no TTL refresh on every query.
"""

from __future__ import annotations

import statistics
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.settings import Settings
from service.worker.loop import Worker

from service_helpers import REDIS_URL, fixture_video, redis_prefix, wait_until, write_registry  # noqa: F401

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WORKER_THREAD = "test-worker-loop"


class RoundTrips:
    """Counts Redis commands sent (one per round trip: a pipeline or transaction counts once) per thread kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []  # (who, command)

    def record(self, command: str) -> None:
        name = threading.current_thread().name
        who = "worker" if name == WORKER_THREAD else "heartbeat" if name == "r2-heartbeat" else "api"
        with self.lock:
            self.calls.append((who, command))

    @staticmethod
    def _finish(calls: list[tuple[str, str]]) -> int | None:
        """Index of the worker's first script call: the finish (a begin would come first, and its finish before
        the next read, so either way every worker round trip of the query is counted)."""
        scripts = [i for i, call in enumerate(calls) if call == ("worker", "EVALSHA")]
        return scripts[0] if scripts else None

    def worker_read_again(self) -> bool:
        """Whether the worker finished a job and sent its next read of the queues."""
        with self.lock:
            calls = list(self.calls)
        finish = self._finish(calls)
        return finish is not None and ("worker", "XREADGROUP") in calls[finish:]

    def take(self) -> Counter[str]:
        """Round trips per kind up to the worker's first read after its finish (later ones belong to idling)."""
        with self.lock:
            calls, self.calls = self.calls, []
        finish = self._finish(calls)
        assert finish is not None, calls
        end = calls.index(("worker", "XREADGROUP"), finish)
        return Counter(who for who, _ in calls[:end + 1] if who != "heartbeat") + Counter(
            who for who, _ in calls[end + 1:] if who == "api")


@pytest.fixture()
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
    counter = RoundTrips()
    sync_execute, pipe_execute = redis.Redis.execute_command, redis.client.Pipeline.execute
    async_execute = redis.asyncio.Redis.execute_command

    def execute_command(self, *args, **kwargs):
        if not isinstance(self, redis.client.Pipeline):  # a pipeline only queues here; execute() sends
            counter.record(str(args[0]))
        return sync_execute(self, *args, **kwargs)

    def execute(self, *args, **kwargs):
        counter.record("PIPELINE")
        return pipe_execute(self, *args, **kwargs)

    async def async_command(self, *args, **kwargs):
        counter.record(str(args[0]))
        return await async_execute(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", execute_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    monkeypatch.setattr(redis.asyncio.Redis, "execute_command", async_command)
    yield counter


def test_one_warm_query_costs_three_api_and_two_worker_round_trips(redis_prefix, tmp_path,  # noqa: F811
                                                                    round_trips) -> None:
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"], upload_dir=tmp_path,
                        registry_file=write_registry(tmp_path), heartbeat_interval_s=5, heartbeat_ttl_s=15,
                        moments_wait_s=30)
    worker = Worker(settings)
    thread = threading.Thread(target=worker.run, name=WORKER_THREAD, daemon=True)
    thread.start()
    try:
        with TestClient(create_app(settings)) as api:
            wait_until(lambda: api.get("/readyz").status_code == 200, 90, "the worker")
            with open(fixture_video(), "rb") as f:
                video_id = api.post("/v1/videos", files={"file": ("v.mp4", f, "video/mp4")}).json()["video_id"]
            wait_until(lambda: api.get(f"/v1/videos/{video_id}").json()["status"] == "ready", 90, "encoding")
            api.post(f"/v1/videos/{video_id}/moments", json={"queries": ["warm up"]})
            per_query = []
            for i in range(5):
                api.get("/v1/models")  # refreshes the API's copy of the heartbeats outside the measured window
                round_trips.calls.clear()
                response = api.post(f"/v1/videos/{video_id}/moments", json={"queries": [f"query {i}"]})
                assert response.status_code == 200, response.text
                # The worker's next read of the queues is sent right after its finish transaction.
                wait_until(round_trips.worker_read_again, 10, "the worker's next read")
                per_query.append(round_trips.take())
    finally:
        worker.stop()
        thread.join(30)
    api_trips = statistics.median(c["api"] for c in per_query)
    worker_trips = statistics.median(c["worker"] for c in per_query)
    assert (api_trips, worker_trips) == (3, 2), per_query
