"""End to end: the API (uvicorn) and separate worker processes against the real Redis, the fixtures' tiny
CLIP and R2 weights registered as a local model through a registry file, real mp4 files.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.contract.keys import Keys

from service_helpers import (
    api_process,
    assert_same_answers,
    corrupt_video,
    delete_prefix,
    direct_answers,
    fixture_video,
    make_video,
    metric,
    post_chunked,
    redis_client,
    service_env,
    wait_until,
    worker_process,
    write_registry,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

MAX_UPLOAD = 400_000
LIMITS = dict(max_duration_s=15, max_pixels=100_000, max_upload_bytes=MAX_UPLOAD)


class Service:
    def __init__(self, base: str, folder: Path, registry: Path, prefix: str) -> None:
        self.base, self.folder, self.registry, self.prefix = base, folder, registry, prefix
        self.http = httpx.Client(base_url=base, timeout=90)
        self.api_pid = 0

    def upload(self, path: Path, url: str = "/v1/videos", **data) -> httpx.Response:
        with open(path, "rb") as f:
            return self.http.post(url, files={"file": (path.name, f, "video/mp4")}, data=data)

    def wait_video(self, video_id: str, status: str = "ready", timeout_s: float = 90) -> dict:
        return wait_until(lambda: (body := self.http.get(f"/v1/videos/{video_id}").json())["status"] == status
                          and body, timeout_s, f"video {video_id} to be {status}")

    def metrics(self) -> str:
        return self.http.get("/metrics").text


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("e2e")
    registry = write_registry(folder)
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = service_env(prefix, registry, **LIMITS)
    worker = worker_process(env, folder, "worker-1")
    try:
        with api_process(env, folder) as (api, base):
            svc = Service(base, folder, registry, prefix)
            svc.api_pid = api.proc.pid
            wait_until(lambda: svc.http.get("/readyz").status_code == 200, 120,
                       f"a ready worker (log: {worker.log_path})", interval_s=0.3)
            yield svc
            svc.http.close()
            assert worker.proc.poll() is None, "the worker died:\n" + worker.log()[-3000:]
    finally:
        code = worker.stop()
        client = redis_client()
        assert code == 0, "SIGTERM should stop the worker cleanly:\n" + worker.log()[-3000:]
        assert not client.exists(Keys(prefix).worker("worker-1")), "the heartbeat should be removed on shutdown"
        delete_prefix(client, prefix)


def test_upload_then_queries_match_the_engine_and_reuse_the_cached_features(service) -> None:
    video = fixture_video()
    before = service.metrics()
    hits0, misses0 = metric(before, "r2_feature_cache_hits_total"), metric(before, "r2_feature_cache_misses_total")
    held0 = metric(before, "r2_adapter_cache_hits_total")

    response = service.upload(video)
    assert response.status_code == 202, response.text
    video_id = response.json()["video_id"]
    status = service.wait_video(video_id)
    assert status["progress"] == 1.0 and status["duration"] > 0 and status["num_clips"] >= 1
    assert status["clip_seconds"] == 2.0 and status["error"] is None
    assert metric(service.metrics(), "r2_feature_cache_misses_total") == misses0 + 1  # encoded once

    queries = ["a man is cooking pasta in the kitchen", "dog", "two women talk, then laugh"]
    response = service.http.post(f"/v1/videos/{video_id}/moments", json={"queries": queries, "top_k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["video_id"] == video_id and body["model"] == "tiny"
    assert_same_answers(body["results"], direct_answers(service.registry, "tiny", video, queries, top_k=5))
    # The worker that encoded the video holds its adapter state: no feature read from Redis at all.
    assert metric(service.metrics(), "r2_adapter_cache_hits_total") == held0 + 1
    assert metric(service.metrics(), "r2_feature_cache_hits_total") == hits0

    response = service.http.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a red car"], "top_k": 3})
    assert response.status_code == 200, response.text
    assert_same_answers(response.json()["results"],
                        direct_answers(service.registry, "tiny", video, ["a red car"], top_k=3))
    text = service.metrics()
    assert metric(text, "r2_adapter_cache_hits_total") == held0 + 2  # the second query: from memory too
    assert metric(text, "r2_feature_cache_misses_total") == misses0 + 1  # ... and no new encode
    for stage in ("decode", "encode", "ground"):
        assert metric(text, "r2_job_seconds_count", stage=stage) >= 1
    assert metric(text, "r2_batch_size_sum") >= 4
    assert metric(text, "r2_http_requests_total", route="/v1/videos/{video_id}/moments", method="POST",
                  status="200") >= 2

    again = service.upload(video)
    assert again.status_code == 200 and again.json()["status"] == "ready"  # same bytes: already encoded


def test_the_api_process_has_no_torch_loaded(service) -> None:
    assert service.http.get("/v1/models").status_code == 200
    maps = Path(f"/proc/{service.api_pid}/maps")
    if not maps.exists():
        pytest.fail("this check reads /proc (Linux)")
    libraries = maps.read_text()
    assert "libtorch" not in libraries and "libc10" not in libraries


def test_queries_sent_together_are_answered_correctly(service, tmp_path) -> None:
    video = make_video(tmp_path / "together.mp4", seconds=8, seed=3)
    video_id = service.upload(video).json()["video_id"]
    service.wait_video(video_id)
    queries = [f"query number {i}" for i in range(6)]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(
            lambda q: service.http.post(f"/v1/videos/{video_id}/moments", json={"queries": [q]}), queries))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    want = direct_answers(service.registry, "tiny", video, queries)
    for response, expected in zip(responses, want, strict=True):
        assert_same_answers(response.json()["results"], [expected])


def test_highlights_summary_and_delete(service, tmp_path) -> None:
    video = make_video(tmp_path / "hl.mp4", seconds=10, seed=4)
    video_id = service.upload(video).json()["video_id"]
    service.wait_video(video_id)
    response = service.http.post(f"/v1/videos/{video_id}/highlights", json={"query": "dog", "top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    (want,) = direct_answers(service.registry, "tiny", video, ["dog"])
    assert body["saliency"] == pytest.approx(want.saliency, abs=1e-5)
    assert [h["score"] for h in body["highlights"]] == pytest.approx(sorted(want.saliency, reverse=True)[:2],
                                                                     abs=1e-5)
    response = service.http.post(f"/v1/videos/{video_id}/summary", json={"query": "dog", "budget": 0.4})
    assert response.status_code == 200, response.text
    segments = response.json()["segments"]
    assert segments and sum(s["end"] - s["start"] for s in segments) <= 0.4 * want.duration + 1e-6

    assert service.http.delete(f"/v1/videos/{video_id}").status_code == 204
    assert service.http.get(f"/v1/videos/{video_id}").status_code == 404
    assert not list(redis_client().scan_iter(match=f"{service.prefix}:{{v:{video_id}}}:*"))  # nothing left


def test_one_shot_ground(service, tmp_path) -> None:
    video = make_video(tmp_path / "oneshot.mp4", seconds=6, seed=5)
    with open(video, "rb") as f:
        response = service.http.post("/v1/ground", files={"file": ("v.mp4", f, "video/mp4")},
                                     data={"query": ["a person walks", "the sky"], "top_k": "4"})
    assert response.status_code == 200, response.text
    want = direct_answers(service.registry, "tiny", video, ["a person walks", "the sky"], top_k=4)
    assert_same_answers(response.json()["results"], want)
    video_id = response.json()["video_id"]
    assert service.http.get(f"/v1/videos/{video_id}").json()["status"] == "ready"


def test_422_for_videos_over_the_duration_or_resolution_limit(service, tmp_path) -> None:
    too_long = make_video(tmp_path / "long.mp4", seconds=20, fps=2)
    too_big = make_video(tmp_path / "big.mp4", seconds=2, fps=2, size=(640, 480))
    for video in (too_long, too_big):
        with open(video, "rb") as f:
            response = service.http.post("/v1/ground", files={"file": (video.name, f, "video/mp4")},
                                         data={"query": "a dog"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "video_too_large"
    response = service.upload(too_long)
    assert response.status_code in (200, 202)
    video_id = response.json()["video_id"]
    status = service.wait_video(video_id, "failed")
    assert status["error"]["code"] == "video_too_large" and "15" in status["error"]["message"]
    response = service.http.post(f"/v1/videos/{video_id}/moments", json={"queries": ["a"]})
    assert response.status_code == 422 and response.json()["error"]["code"] == "video_too_large"


def test_a_corrupt_video_fails_alone_and_the_service_keeps_answering(service, tmp_path) -> None:
    bad = corrupt_video(tmp_path / "bad.mp4", make_video(tmp_path / "src.mp4", seconds=6, seed=6))
    garbage = tmp_path / "notes.mp4"
    garbage.write_bytes(b"this is not a video at all\n" * 50)
    good = make_video(tmp_path / "good.mp4", seconds=6, seed=7)
    ids = [service.upload(path).json()["video_id"] for path in (bad, garbage, good)]  # queued together
    bad_status = service.wait_video(ids[0], "failed")
    assert bad_status["error"]["code"] in {"corrupt_video", "not_a_video", "empty_video"}
    assert service.wait_video(ids[1], "failed")["error"]["code"] == "not_a_video"
    service.wait_video(ids[2], "ready")
    response = service.http.post(f"/v1/videos/{ids[2]}/moments", json={"queries": ["a cat"]})
    assert response.status_code == 200, response.text
    response = service.http.post(f"/v1/videos/{ids[0]}/moments", json={"queries": ["a cat"]})
    assert response.status_code == 422
    assert service.http.get("/readyz").status_code == 200
    assert metric(service.metrics(), "r2_jobs_total", kind="encode", outcome="failed") >= 2


def test_real_chunked_uploads(service, tmp_path) -> None:
    def chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start:start + size]

    status, headers, body = post_chunked(service.base, "/v1/videos", chunks(b"\0" * (3 * MAX_UPLOAD)),
                                         "application/octet-stream")
    assert status == 413 and b"upload_too_large" in body
    video = make_video(tmp_path / "chunked.mp4", seconds=4, seed=8)
    status, headers, body = post_chunked(service.base, "/v1/videos", chunks(video.read_bytes()), "video/mp4")
    assert status in (200, 202), body


def test_a_killed_workers_job_is_finished_by_another_worker(tmp_path) -> None:
    registry = write_registry(tmp_path)
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = service_env(prefix, registry)
    client = redis_client()
    slow = worker_process(env, tmp_path, "worker-slow", delay_s=60)
    rescuer = None
    try:
        with contextlib.ExitStack() as stack, api_process(env, tmp_path) as (_, base):
            http = stack.enter_context(httpx.Client(base_url=base, timeout=30))
            wait_until(lambda: http.get("/readyz").status_code == 200, 120, "the slow worker", interval_s=0.3)
            with open(fixture_video(), "rb") as f:
                video_id = http.post("/v1/videos", files={"file": ("v.mp4", f, "video/mp4")}).json()["video_id"]
            wait_until(lambda: http.get(f"/v1/videos/{video_id}").json()["status"] == "processing", 30,
                       "the slow worker to start the job")
            slow.kill()  # SIGKILL in the middle of the job: no cleanup, no acknowledgement
            rescuer = worker_process(env, tmp_path, "worker-rescuer")
            status = wait_until(lambda: (b := http.get(f"/v1/videos/{video_id}").json())["status"] == "ready" and b,
                                120, f"the rescuer to finish the job (log: {rescuer.log_path})", interval_s=0.3)
            assert status["num_clips"] >= 1
            keys = Keys(prefix)
            job_id = client.hget(keys.video(video_id), "job_id").decode().strip('"')
            job = client.hgetall(keys.job(job_id))
            assert job[b"worker"] == b'"worker-rescuer"' and job[b"attempts"] == b"2"
            assert client.xlen(keys.jobs) == 0  # acknowledged and removed
            assert metric(http.get("/metrics").text, "r2_jobs_reclaimed_total") == 1
            response = http.post(f"/v1/videos/{video_id}/moments", json={"queries": ["dog"]})
            assert response.status_code == 200, response.text
    finally:
        slow.stop()
        if rescuer is not None:
            assert rescuer.stop() == 0
        delete_prefix(client, prefix)


def test_queries_follow_the_worker_holding_the_video_and_survive_its_death(tmp_path) -> None:
    """Two workers: a video's queries go to the worker that encoded it (it holds the adapter state); when that
    worker is killed, the other one answers (reading the features from Redis)."""
    registry = write_registry(tmp_path)
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = service_env(prefix, registry)
    client = redis_client()
    first = worker_process(env, tmp_path, "worker-a")
    second = None
    try:
        with contextlib.ExitStack() as stack, api_process(env, tmp_path) as (_, base):
            http = stack.enter_context(httpx.Client(base_url=base, timeout=60))
            wait_until(lambda: http.get("/readyz").status_code == 200, 120, "worker a", interval_s=0.3)
            with open(fixture_video(), "rb") as f:
                video_id = http.post("/v1/videos", files={"file": ("v.mp4", f, "video/mp4")}).json()["video_id"]
            wait_until(lambda: http.get(f"/v1/videos/{video_id}").json()["status"] == "ready", 90, "encoding")
            second = worker_process(env, tmp_path, "worker-b")
            wait_until(lambda: http.get("/readyz").json().get("workers") == 2, 120, "worker b", interval_s=0.3)
            keys = Keys(prefix)
            for i in range(4):
                response = http.post(f"/v1/videos/{video_id}/moments", json={"queries": [f"q{i}"]})
                assert response.status_code == 200, response.text
            answered_by = {client.hget(keys.job(job_id.decode().rsplit(":", 1)[-1]), "worker")
                           for job_id in client.scan_iter(match=f"{keys.job('')}*")}
            assert answered_by == {b'"worker-a"'}, answered_by  # the encode job and the 4 queries: all on a
            first.kill()  # the holder dies; its heartbeat expires after R2_HEARTBEAT_TTL_S
            wait_until(lambda: http.get("/readyz").json().get("workers") == 1, 30, "worker a's heartbeat to expire")
            response = http.post(f"/v1/videos/{video_id}/moments", json={"queries": ["after the death"]})
            assert response.status_code == 200, response.text
            assert metric(http.get("/metrics").text, "r2_feature_cache_hits_total") >= 1  # b read the features
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0
        delete_prefix(client, prefix)
