"""The frame pipeline chosen per upload / request, end to end through the API, the queue, the worker and the
Redis feature cache: each pipeline's features are their own cache entries, a video encoded one way is never
answered as the other (not even by a worker that starts with an empty memory), and the status and the answers
say which pipeline was used."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.keys import Keys
from service.contract.schemas import Mode
from service.contract.settings import Settings
from service.worker.loop import Worker

from service_helpers import (
    REDIS_URL,
    assert_same_answers,
    direct_answers,
    fixture_video,
    metric,
    redis_client,
    redis_prefix,  # noqa: F401 - fixture
    wait_until,
    worker_thread,
    write_registry,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

FAST = dict(heartbeat_interval_s=0.2, heartbeat_ttl_s=1, visibility_timeout_s=0.5, moments_wait_s=60,
            ground_wait_s=60, chunk_bytes=4096)
QUERIES = ["a man is cooking pasta in the kitchen", "dog"]



def _moments(api: TestClient, video_id: str, **extra) -> dict:
    response = api.post(f"/v1/videos/{video_id}/moments", json={"queries": QUERIES, "top_k": 5, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def _cache(api: TestClient) -> tuple[float, float]:
    text = api.get("/metrics").text
    return metric(text, "r2_feature_cache_hits_total"), metric(text, "r2_feature_cache_misses_total")


def test_each_pipeline_has_its_own_features_end_to_end(redis_prefix, tmp_path) -> None:  # noqa: F811
    # The model's default is "extract"; the upload asks for "script".
    registry = write_registry(tmp_path, preprocess="extract")
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"], registry_file=registry,
                        upload_dir=tmp_path, **FAST)
    video = fixture_video()
    script = direct_answers(registry, "tiny", video, QUERIES, top_k=5, preprocess="script")
    extract = direct_answers(registry, "tiny", video, QUERIES, top_k=5, preprocess="extract")
    # The two pipelines give the model visibly different inputs (docs/preprocessing.md): otherwise this test
    # could not tell them apart.
    assert any(abs(a - b) > 1e-4 for a, b in zip(script[0].saliency, extract[0].saliency, strict=False))

    with TestClient(create_app(settings)) as api:
        with worker_thread(settings):
            wait_until(lambda: api.get("/readyz").status_code == 200, 90, "a ready worker")
            (model,) = api.get("/v1/models").json()["models"]
            assert model["preprocess"] == "extract" and set(model["preprocess_options"]) == {"script", "extract"}

            with open(video, "rb") as f:
                response = api.post("/v1/videos", files={"file": ("v.mp4", f, "video/mp4")},
                                    data={"preprocess": "script"})
            assert response.status_code == 202, response.text
            assert response.json()["preprocess"] == "script"
            video_id = response.json()["video_id"]
            status = wait_until(lambda: (b := api.get(f"/v1/videos/{video_id}").json())["status"] == "ready" and b,
                                90, "the upload to be encoded")
            assert status["preprocess"] == "script"

            # No pipeline named: the upload's, answered without a second encoding.
            body = _moments(api, video_id)
            assert body["preprocess"] == "script"
            assert_same_answers(body["results"], script)
            assert _cache(api) == (0, 1)

            # The model's default pipeline: encoded on demand, its own entry.
            body = _moments(api, video_id, preprocess="extract")
            assert body["preprocess"] == "extract"
            assert_same_answers(body["results"], extract)
            assert _cache(api) == (0, 2)
            response = api.post(f"/v1/videos/{video_id}/highlights",
                                json={"query": "dog", "top_k": 2, "preprocess": "script"})
            assert response.status_code == 200 and response.json()["preprocess"] == "script"
            assert response.json()["saliency"] == pytest.approx(script[1].saliency, abs=1e-5)
            assert api.get(f"/v1/videos/{video_id}").json()["preprocess"] == "script"  # the upload's, still

            feature_ids = {i.decode() for i in redis_client().smembers(Keys(redis_prefix).feature_ids(video_id))}
            embeddings = {i for i in feature_ids if i.endswith("-clip")}  # library search's, default pipeline only
            assert len(feature_ids - embeddings) == 2 and len(embeddings) == 1

        # A fresh worker holds nothing in memory: both answers now come from the Redis cache, each its own.
        with worker_thread(settings):
            wait_until(lambda: api.get("/readyz").status_code == 200, 90, "the second worker")
            for preprocess, want in (("extract", extract), ("script", script)):
                body = _moments(api, video_id, preprocess=preprocess, top_k=4)
                assert body["preprocess"] == preprocess
                assert_same_answers(body["results"], [
                    dataclasses.replace(r, moments=r.moments[:4]) for r in want])
            assert _cache(api) == (2, 2)


def test_unknown_pipelines_are_refused_by_the_api_and_by_the_worker(redis_prefix, tmp_path) -> None:  # noqa: F811
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"],
                        registry_file=write_registry(tmp_path), upload_dir=tmp_path, **FAST)
    worker = Worker(settings)
    worker.models.load()
    with TestClient(create_app(settings)) as api:
        gw = api.app.state.gateway
        with open(fixture_video(), "rb") as f:
            response = api.post("/v1/videos", files={"file": ("v.mp4", f, "video/mp4")})
        video_id = response.json()["video_id"]
        assert response.json()["preprocess"] is None  # the model's default, not resolved yet
        assert worker.step() == 1
        assert api.get(f"/v1/videos/{video_id}").json()["preprocess"] == "script"  # the tiny model's default

        # Not a name at all: the request schema refuses it.
        response = api.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a"], "preprocess": "No Such"})
        assert response.status_code == 422, response.text
        # A name, but no worker has said which pipelines exist: the job reaches the worker, which refuses it.
        job = gw.submit(video_id, "tiny", Mode.moments, ["a"], top_k=3, nms_thres=None, min_score=None,
                        preprocess="bogus")
        assert worker.step() == 1
        record = gw.backend.jobs.get(job.job_id)
        assert record.status == "failed" and record.error_status == 422
        assert record.error_code == "unknown_preprocess" and "script, extract" in record.error_message
        assert api.get(f"/v1/videos/{video_id}").json()["status"] == "ready"  # the video is fine

        # Once a worker's heartbeat lists the pipelines, the API refuses an unknown one itself.
        # Beats again while waiting: the FAST heartbeat lives 1 s, less than a loaded machine may take here.
        wait_until(lambda: worker.beat() or api.get("/v1/models").json()["models"][0]["preprocess_options"], 10,
                   "the model card")
        response = api.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a"], "preprocess": "bogus"})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "unknown_preprocess"
        assert "script, extract" in response.json()["error"]["message"]
        with open(fixture_video(), "rb") as f:
            response = api.post("/v1/ground", files={"file": ("v.mp4", f, "video/mp4")},
                                data={"query": "a", "preprocess": "bogus"})
        assert response.status_code == 422 and response.json()["error"]["code"] == "unknown_preprocess"
        assert gw.backend.jobs.length() == 0  # nothing was queued for the refused requests
    worker.backend.close()
