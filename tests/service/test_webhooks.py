"""Webhooks: pending deliveries recorded with the job's finish (Redis, Redis Cluster, memory), leased by senders
(a sender that dies loses nothing), signed, retried with back-off, checked against the allowlist again at
delivery; a local receiver on 127.0.0.1 (allowed explicitly) verifies them. Plus one run through the API and a
worker: an upload, a moments request and a video ingested by URL each end in a signed event."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time

import pytest
from fastapi.testclient import TestClient
from local_http import local_server, send

from service.api import create_app
from service.contract.keys import Keys
from service.contract.schemas import Job, JobKind, JobRecord, Status
from service.contract.settings import Settings
from service.contract.webhooks import verify
from service.store.jobs import JobStore, Outcome
from service.store.memory import MemoryJobStore, MemoryRecords
from service.store.redis_jobs import RedisJobStore
from service.worker.webhooks import WebhookSender

from service_helpers import (  # noqa: F401 - fixtures
    CLUSTER,
    REDIS_URL,
    REPO_ROOT,
    SINGLE,
    fixture_video,
    redis_client,
    redis_prefix,
    wait_until,
    write_registry,
)

SECRET = "test-webhook-secret"
RECEIVER = "http://127.0.0.1:9/hook"  # never connected to by the store tests


def redis_jobs(prefix: str, target) -> RedisJobStore:
    client = redis_client(target)
    return RedisJobStore(client, Keys(prefix), 10, result_ttl_s=60, url=target.url, timeout_s=2,
                         cluster=target.cluster)


@pytest.fixture(params=["single", "cluster", "memory"])
def jobs(request) -> JobStore:
    if request.param == "memory":
        return MemoryJobStore(10, MemoryRecords())
    return redis_jobs(request.getfixturevalue("redis_prefix"), SINGLE if request.param == "single" else CLUSTER)


def run_one(jobs: JobStore, job_id: str, result: dict | None = None) -> None:
    """Submit, take and finish one ground job."""
    jobs.submit(Job(job_id=job_id, kind=JobKind.ground, video_id="v" * 64, model="tiny", queries=["q"]), 60)
    taken = jobs.take("w1", 10, 1)
    jobs.begin("w1", taken)
    jobs.finish("w1", [Outcome(d, result=result or {"results": []}) for d in taken])


def test_a_callback_becomes_a_pending_delivery_when_its_job_finishes(jobs) -> None:
    jobs.submit(Job(job_id="j1", kind=JobKind.ground, video_id="v" * 64, model="tiny", queries=["q"]), 60)
    assert jobs.add_callback("j1", RECEIVER, 60) is False  # registered: nothing due before the job ends
    assert jobs.due_hooks(30, 10) == []
    taken = jobs.take("w1", 10, 1)
    jobs.begin("w1", taken)
    jobs.finish("w1", [Outcome(taken[0], result={"results": [1]})])
    (hook,) = jobs.due_hooks(30, 10)
    record = JobRecord.model_validate_json(hook.token)
    assert (hook.url, hook.attempts, record.job_id, record.status, record.result) == (
        RECEIVER, 0, "j1", Status.ready, {"results": [1]})
    assert jobs.due_hooks(30, 10) == []  # leased
    jobs.hook_done(hook.hook_id)
    # Registered after the end: due at once, with the finished job.
    assert jobs.add_callback("j1", RECEIVER + "2", 60) is True
    (late,) = jobs.due_hooks(30, 10)
    assert late.url == RECEIVER + "2" and JobRecord.model_validate_json(late.token).result == {"results": [1]}


def test_a_dead_senders_lease_ends_and_another_sender_retakes_the_delivery(jobs) -> None:
    run_one(jobs, "j2")
    jobs.add_callback("j2", RECEIVER, 60)
    (leased,) = jobs.due_hooks(0.3, 10)  # this sender dies now
    assert jobs.due_hooks(30, 10) == []
    time.sleep(0.4)
    (again,) = jobs.due_hooks(30, 10)
    assert again.hook_id == leased.hook_id and again.token == leased.token


def docs_verify():
    """The verification snippet of docs/webhooks.md, as a reader would paste it."""
    text = (REPO_ROOT / "docs" / "webhooks.md").read_text()
    namespace: dict = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), namespace)  # noqa: S102 - our own docs
    return namespace["verify"]


def signed_receiver(fail_first: int, seen: list[dict]) -> object:
    """A receiver checking each delivery with its own HMAC and with the snippet of docs/webhooks.md."""
    snippet, ids = docs_verify(), set()

    def answer(h) -> None:
        body, ts, signature = h.seen_body, h.headers["R2-Webhook-Timestamp"], h.headers["R2-Webhook-Signature"]
        expected = "v1=" + hmac.new(SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        good = hmac.compare_digest(expected, signature) and abs(time.time() - int(ts)) < 300
        fresh = snippet(SECRET.encode(), dict(h.headers.items()), body, ids)
        seen.append(dict(good=good, fresh=fresh, id=h.headers["R2-Webhook-Id"], event=json.loads(body)))
        send(h, 500 if len(seen) <= fail_first else 204)
    return answer


def sender(jobs: JobStore, **overrides) -> WebhookSender:
    settings = Settings(**{"fetch_allowlist": ["127.0.0.1"], "webhook_secret": SECRET, "webhook_backoff_s": 0.2,
                           "webhook_timeout_s": 2, **overrides})
    return WebhookSender(settings, jobs, MemoryRecords())


def test_a_receiver_that_fails_first_gets_the_signed_event_again_after_a_back_off(jobs) -> None:
    seen: list[dict] = []
    with local_server(signed_receiver(1, seen)) as server:
        run_one(jobs, "j3", {"results": ["a"]})
        jobs.add_callback("j3", f"{server.url}/hook", 60)
        out = sender(jobs)
        assert out.send_due() == 1 and len(seen) == 1  # 500: retried later, not at once
        assert out.send_due() == 0
        wait_until(lambda: out.send_due(), 3, "the retry to be due")
        out.stop()
    assert [s["good"] for s in seen] == [True, True] and seen[0]["id"] == seen[1]["id"]
    assert [s["fresh"] for s in seen] == [True, False]  # the snippet refuses the repeated id
    event = seen[1]["event"]
    assert (event["type"], event["job_id"], event["status"], event["result"]) == (
        "answer.ready", "j3", "ready", {"results": ["a"]})
    assert jobs.due_hooks(30, 10) == []  # delivered: gone
    assert not verify(SECRET, str(int(time.time()) - 3600), b"{}", "v1=00", time.time())  # a replay is refused


def test_a_delivery_survives_a_restart_of_the_store_client_and_the_sender(redis_prefix) -> None:  # noqa: F811
    seen: list[dict] = []
    with local_server(signed_receiver(0, seen)) as server:
        first = redis_jobs(redis_prefix, SINGLE)
        run_one(first, "j4")
        first.add_callback("j4", f"{server.url}/hook", 60)
        first.due_hooks(0.3, 10)  # leased by a sender that then crashes with its worker
        restarted = sender(redis_jobs(redis_prefix, SINGLE))  # a new process: new clients, same Redis
        assert restarted.send_due() == 0
        time.sleep(0.4)
        assert restarted.send_due() == 1
        restarted.stop()
    assert len(seen) == 1 and seen[0]["good"] and seen[0]["event"]["job_id"] == "j4"


def test_the_allowlist_is_checked_again_at_delivery_and_a_hopeless_delivery_is_given_up() -> None:
    jobs = MemoryJobStore(10, MemoryRecords())
    seen: list[dict] = []
    with local_server(signed_receiver(0, seen)) as server:
        run_one(jobs, "j5")
        jobs.add_callback("j5", f"{server.url}/hook", 60)
        records = MemoryRecords()
        strict = WebhookSender(Settings(fetch_allowlist=["10.0.0.0/8"], webhook_secret=SECRET, webhook_max_attempts=2,
                                        webhook_backoff_s=0.05), jobs, records)
        strict.send_due()
        wait_until(lambda: strict.send_due(), 2, "the retry")
        strict.stop()
    assert seen == [] and jobs.due_hooks(30, 10) == []
    metrics = records.read_metrics()
    assert metrics['r2_webhooks_total{outcome="given_up"}'] == 1 and metrics['r2_webhooks_total{outcome="failed"}'] == 1


@pytest.mark.redis
def test_callback_urls_are_checked_at_submit(redis_prefix, tmp_path) -> None:  # noqa: F811
    base = dict(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"], registry_file=write_registry(tmp_path),
                upload_dir=tmp_path / "up", moments_wait_s=0.2)
    body = {"queries": ["a dog"], "callback_url": "http://10.0.0.1/hook"}
    with TestClient(create_app(Settings(**base)), raise_server_exceptions=False) as client:
        response = client.post(f"/v1/videos/{'ab' * 32}/moments", json=body)
        assert response.status_code == 422 and response.json()["error"]["code"] == "webhooks_disabled"
    with TestClient(create_app(Settings(**base, webhook_secret=SECRET, fetch_allowlist=["127.0.0.1"])),
                    raise_server_exceptions=False) as client:
        for url in ("http://10.0.0.1/hook", "http://localhost/hook", "ftp://127.0.0.1/x"):
            response = client.post(f"/v1/videos/{'ab' * 32}/highlights", json={"query": "a", "callback_url": url})
            assert response.status_code == 422 and response.json()["error"]["code"] == "url_not_allowed", url
        with open(fixture_video(), "rb") as f:
            response = client.post("/v1/videos", files={"file": ("v.mp4", f, "video/mp4")},
                                   data={"callback_url": "http://192.168.0.1/x"})
        assert response.status_code == 422 and response.json()["error"]["code"] == "url_not_allowed"
        response = client.post("/v1/videos", json={"url": "http://192.168.0.1/v.mp4"})
        assert response.status_code == 422 and response.json()["error"]["code"] == "url_not_allowed"
        assert client.get("/v1/ingests/nope").status_code == 404


@pytest.mark.redis
@pytest.mark.slow
def test_uploads_answers_and_url_ingests_end_in_signed_events(redis_prefix, tmp_path) -> None:  # noqa: F811
    from service.worker.loop import Worker

    video = fixture_video().read_bytes()
    seen: list[dict] = []
    receiver = signed_receiver(0, seen)

    def answer(h) -> None:
        if h.path == "/hook":
            receiver(h)
        else:
            send(h, 200, video, {"Accept-Ranges": "bytes"})

    with local_server(answer) as server:
        settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"],
                            registry_file=write_registry(tmp_path), upload_dir=tmp_path / "up", moments_wait_s=30,
                            heartbeat_interval_s=0.2, heartbeat_ttl_s=1, visibility_timeout_s=5,
                            webhook_secret=SECRET, fetch_allowlist=["127.0.0.1"])
        worker = Worker(settings)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            with TestClient(create_app(settings)) as client:
                hook = f"{server.url}/hook"
                ingest = client.post("/v1/videos", json={"url": f"{server.url}/v.mp4", "model": "tiny",
                                                         "callback_url": hook})
                assert ingest.status_code == 202, ingest.text
                location = ingest.headers["Location"]
                done = wait_until(lambda: (b := client.get(location).json())["status"] in ("ready", "failed") and b,
                                  60, "the fetch")
                assert done["video_id"] == hashlib.sha256(video).hexdigest(), done
                wait_until(lambda: client.get(f"/v1/videos/{done['video_id']}").json()["status"] == "ready", 60,
                           "the encoding")
                response = client.post(f"/v1/videos/{done['video_id']}/moments",
                                       json={"queries": ["a dog"], "callback_url": hook})
                assert response.status_code == 200, response.text
                with open(fixture_video(), "rb") as f:  # the same bytes again: ready at once, event at once
                    again = client.post("/v1/videos", files={"file": ("v.mp4", f, "video/mp4")},
                                        data={"callback_url": hook})
                assert again.status_code == 200
                wait_until(lambda: len(seen) >= 4, 20, "four events")
        finally:
            worker.stop()
            thread.join(30)
    types = sorted(s["event"]["type"] for s in seen)
    assert types == ["answer.ready", "video.fetched", "video.ready", "video.ready"], seen
    assert all(s["good"] and s["fresh"] for s in seen) and len({s["id"] for s in seen}) == 4
    answer_event = next(s["event"] for s in seen if s["event"]["type"] == "answer.ready")
    assert answer_event["result"]["results"][0]["query"] == "a dog" and answer_event["video_id"] == done["video_id"]
