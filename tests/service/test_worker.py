"""The worker in this process: embedded mode (no Redis), missing weights, damaged cache entries, bounded
attempts. Multi-process behaviour (separate API and workers, killed workers) is in test_service_e2e.py."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.keys import Keys
from service.contract.schemas import Job, JobKind, Mode, VideoRecord
from service.contract.settings import Settings
from service.worker.loop import Worker

from service_helpers import (
    REDIS_URL,
    assert_same_answers,
    direct_answers,
    fixture_video,
    make_video,
    metric,
    redis_client,
    redis_prefix,  # noqa: F401 - fixture
    wait_until,
    worker_thread,
    write_registry,
)

FAST = dict(heartbeat_interval_s=0.2, heartbeat_ttl_s=1, visibility_timeout_s=0.5, moments_wait_s=30,
            ground_wait_s=60, chunk_bytes=4096)



def upload(client: TestClient, path) -> str:
    with open(path, "rb") as f:
        response = client.post("/v1/videos", files={"file": (path.name, f, "video/mp4")})
    assert response.status_code in (200, 202), response.text
    return response.json()["video_id"]


def wait_ready(client: TestClient, video_id: str) -> dict:
    return wait_until(lambda: (b := client.get(f"/v1/videos/{video_id}").json())["status"] in ("ready", "failed")
                      and b, 90, "the video to be encoded")


@pytest.mark.slow
def test_embedded_mode_runs_api_and_worker_in_one_process_without_redis(tmp_path) -> None:
    registry = write_registry(tmp_path)
    settings = Settings(redis_url=None, models=["tiny"], registry_file=registry, upload_dir=tmp_path / "up", **FAST)
    assert settings.embedded
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 90, "the embedded worker")
        assert client.get("/v1/models").json()["models"][0]["loaded"] is True
        video = fixture_video()
        video_id = upload(client, video)
        assert wait_ready(client, video_id)["status"] == "ready"
        queries = ["dog", "a man is cooking"]
        response = client.post(f"/v1/videos/{video_id}/moments", json={"queries": queries, "top_k": 3})
        assert response.status_code == 200, response.text
        assert_same_answers(response.json()["results"], direct_answers(registry, "tiny", video, queries, top_k=3))
        response = client.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a cat"]})
        assert response.status_code == 200
        text = client.get("/metrics").text
        # Encoded once (one miss); both queries answered from the worker's memory without reading the cache.
        assert metric(text, "r2_feature_cache_misses_total") == 1 and metric(text, "r2_feature_cache_hits_total") == 0
        assert metric(text, "r2_adapter_cache_hits_total") == 2
        with open(video, "rb") as f:
            response = client.post("/v1/ground", files={"file": ("v.mp4", f, "video/mp4")}, data={"query": "dog"})
        assert response.status_code == 200 and response.json()["video_id"] == video_id
        assert client.delete(f"/v1/videos/{video_id}").status_code == 204
    # the embedded worker stopped with the app (its thread is a daemon; the test would hang on a stuck join)


@pytest.mark.slow
def test_missing_weights_service_starts_and_answers_503_naming_the_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("R2_CHECKPOINT_DIR", str(tmp_path / "empty-checkpoints"))
    settings = Settings(redis_url=None, models=["qvhighlights"], download_weights=False, upload_dir=tmp_path,
                        **FAST)
    with TestClient(create_app(settings)) as client:
        response = wait_until(
            lambda: (r := client.get("/readyz")).json()["error"]["code"] not in ("no_worker", "model_loading") and r,
            90, "the worker to give up loading")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "weights_missing"
        assert "r2_tuning_qvhighlights-ed516355.pth" in error["message"]  # which file
        assert "empty-checkpoints" in error["message"]  # where it goes
        assert "http" in error["message"]  # and where to get it
        (model,) = client.get("/v1/models").json()["models"]
        assert model["loaded"] is False and any(f.endswith(".pth") for f in model["missing_files"])
        with open(fixture_video(), "rb") as f:
            response = client.post("/v1/ground", files={"file": ("v.mp4", f, "video/mp4")}, data={"query": "dog"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "weights_missing"
        assert client.get("/healthz").status_code == 200


@pytest.mark.redis
@pytest.mark.slow
def test_a_damaged_cache_entry_is_a_miss_and_the_video_is_encoded_again(redis_prefix, tmp_path) -> None:  # noqa: F811
    registry = write_registry(tmp_path)
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"], registry_file=registry,
                        upload_dir=tmp_path, **FAST)
    client = redis_client()
    with worker_thread(settings) as worker, TestClient(create_app(settings)) as api:
        video = fixture_video()
        video_id = upload(api, video)
        assert wait_ready(api, video_id)["status"] == "ready"
        grounder = worker.models.grounders["tiny"]
        entry = Keys(redis_prefix).features(video_id, grounder.feature_id)
        chunk = bytearray(client.get(Keys.chunk(entry, 0)))
        chunk[0] ^= 0x55
        client.set(Keys.chunk(entry, 0), bytes(chunk))
        grounder.forget_video(f"{video_id}:{grounder.feature_id}")  # as if evicted: the next query reads Redis
        response = api.post(f"/v1/videos/{video_id}/moments", json={"queries": ["dog"]})
        assert response.status_code == 200, response.text
        assert_same_answers(response.json()["results"], direct_answers(registry, "tiny", video, ["dog"]))
        text = api.get("/metrics").text
        assert metric(text, "r2_feature_cache_corrupt_total") == 1
        assert metric(text, "r2_feature_cache_misses_total") == 2  # upload, then the damaged entry
        assert client.exists(entry)  # stored again, intact
        grounder.forget_video(f"{video_id}:{grounder.feature_id}")
        response = api.post(f"/v1/videos/{video_id}/moments", json={"queries": ["cat"]})
        assert response.status_code == 200
        assert metric(api.get("/metrics").text, "r2_feature_cache_hits_total") == 1  # the intact copy


@pytest.mark.redis
@pytest.mark.slow
def test_a_job_whose_workers_keep_dying_ends_failed_with_a_reason(redis_prefix, tmp_path) -> None:  # noqa: F811
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"], job_max_attempts=2,
                        registry_file=write_registry(tmp_path), upload_dir=tmp_path, **FAST)
    with TestClient(create_app(settings)) as api:
        backend = api.app.state.gateway.backend
        video_id = "ef" * 32
        backend.records.create_video(VideoRecord(video_id=video_id, model="tiny", size_bytes=1), 60)
        job = Job(job_id="doomed", kind=JobKind.encode_video, video_id=video_id, model="tiny")
        backend.jobs.submit(job, 60)
        for dead in ("dead-1", "dead-2"):  # two workers take it and die without acknowledging
            (delivery,) = (backend.jobs.take(dead, 1, 1.0) if dead == "dead-1"
                           else backend.jobs.reclaim(dead, 0.0, 1))
            assert backend.jobs.begin(dead, [delivery]) == [int(dead[-1])]
        time.sleep(0.6)  # past the visibility timeout
        with worker_thread(settings):
            record = wait_until(lambda: (r := backend.jobs.get("doomed")).status == "failed" and r, 30,
                                "the job to be given up")
        assert record.error_code == "job_attempts_exhausted" and "2 attempts" in record.error_message
        assert backend.jobs.length() == 0
        status = api.get(f"/v1/videos/{video_id}").json()
        assert status["status"] == "failed" and status["error"]["code"] == "job_attempts_exhausted"


@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_keeps_only_what_it_runs_next(redis_prefix, tmp_path) -> None:  # noqa: F811
    """Queries on an encoded video are batched; a video to decode that came along is given back at once."""
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"], batch_window_ms=0,
                        registry_file=write_registry(tmp_path), upload_dir=tmp_path, **FAST)
    worker = Worker(settings)
    worker.models.load()
    with TestClient(create_app(settings)) as api:
        gw = api.app.state.gateway
        video_a = upload(api, fixture_video())
        assert worker.step() == 1  # encodes A
        first = gw.submit(video_a, "tiny", Mode.moments, ["first"], top_k=3, nms_thres=None, min_score=None)
        video_b = upload(api, make_video(tmp_path / "b.mp4", seconds=4, seed=11))
        second = gw.submit(video_a, "tiny", Mode.moments, ["second"], top_k=3, nms_thres=None, min_score=None)
        assert gw.backend.jobs.length() == 3
        assert worker.step() == 2  # both queries on A, in one model call
        assert gw.backend.jobs.get(first.job_id).status == "ready"
        assert gw.backend.jobs.get(second.job_id).status == "ready"
        assert gw.backend.jobs.length() == 1  # B's encode job went back to the queue, unrun
        assert api.get(f"/v1/videos/{video_b}").json()["status"] == "queued"
        assert worker.step() == 1
        assert api.get(f"/v1/videos/{video_b}").json()["status"] == "ready"
        assert metric(api.get("/metrics").text, "r2_batch_size_bucket", le="2.0") == 1
    worker.backend.close()


@pytest.mark.redis
@pytest.mark.slow
def test_a_warm_query_runs_without_a_begin_unless_it_was_handed_out_before(redis_prefix, tmp_path,  # noqa: F811
                                                                          monkeypatch) -> None:
    """A query on a held video is answered without being marked processing first; one a worker took before
    (and maybe died of) is begun, so its attempts are stored before it runs again."""
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"], batch_window_ms=0,
                        registry_file=write_registry(tmp_path), upload_dir=tmp_path, **FAST)
    worker = Worker(settings)
    worker.models.load()
    begun: list[list[str]] = []
    begin = worker.backend.jobs.begin
    monkeypatch.setattr(worker.backend.jobs, "begin", lambda consumer, deliveries: (
        begun.append([d.job.kind.value for d in deliveries if d.job]), begin(consumer, deliveries))[1])
    with TestClient(create_app(settings)) as api:
        gw, jobs = api.app.state.gateway, api.app.state.gateway.backend.jobs
        video_id = upload(api, fixture_video())
        assert worker.step() == 1  # encodes it: begun (a long job shows it is processing)
        warm = gw.submit(video_id, "tiny", Mode.moments, ["warm"], top_k=3, nms_thres=None, min_score=None)
        assert worker.step() == 1
        record = jobs.get(warm.job_id)
        assert (record.status, record.attempts, record.worker) == ("ready", 1, worker.worker_id)
        assert begun == [["encode"]]  # the warm query skipped it

        again = gw.submit(video_id, "tiny", Mode.moments, ["again"], top_k=3, nms_thres=None, min_score=None)
        (taken,) = jobs.take("died-running-it", 1, 1.0)  # a worker took it and died without a trace
        time.sleep(settings.visibility_timeout_s + 0.2)
        assert worker.step() == 1  # taken over
        record = jobs.get(again.job_id)
        assert (record.status, record.attempts) == ("ready", 2)
        assert begun == [["encode"], ["ground"]]
    worker.backend.close()
