"""POST /v1/search's failure modes, each with its status and code. The API runs in this process against the real
Redis; none of these needs a worker (each is refused before a job is queued); with no worker, the last gets a 202."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.keys import Keys
from service.contract.settings import Settings

from service_helpers import REDIS_URL, redis_client, redis_prefix, write_registry  # noqa: F401 - fixture

pytestmark = pytest.mark.redis
VIDEO_ID = "ab" * 32


@pytest.fixture()
def client(redis_prefix, tmp_path):  # noqa: F811
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"],
                        registry_file=write_registry(tmp_path), search_max_video_ids=2, search_wait_s=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        yield api


def error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    message = response.json()["error"]["message"]
    assert 0 < len(message) < 400
    return message


def test_unknown_model(client) -> None:
    error(client.post("/v1/search", json={"query": "dog", "model": "nope"}), 404, "unknown_model")


def test_no_ready_videos(client) -> None:
    assert "POST /v1/videos" in error(client.post("/v1/search", json={"query": "dog"}), 404, "no_ready_videos")


def test_video_ids_not_found_are_named(client) -> None:
    message = error(client.post("/v1/search", json={"query": "dog", "video_ids": [VIDEO_ID, "x" * 5000]}), 404,
                    "unknown_video")
    assert VIDEO_ID in message and "x" * 65 not in message


def test_bad_page_tokens(client, redis_prefix) -> None:  # noqa: F811
    redis_client().sadd(Keys(redis_prefix).library("tiny"), VIDEO_ID)  # checked after the library
    for token in ["not base64 !", "eyJvIjogLTF9", "e30", "eyJvIjoxMCwiaCI6ImZmIn0"]:  # junk, o=-1, {}, other hash
        error(client.post("/v1/search", json={"query": "dog", "page_token": token}), 422, "invalid_page_token")


@pytest.mark.parametrize("body, code", [
    ({"query": ""}, "empty_query"),
    ({"query": "q" * 600}, "query_too_long"),
    ({"query": "dog", "top_k": 0}, "invalid_request"),
    ({"query": "dog", "top_k": 1001}, "invalid_request"),
    ({"query": "dog", "group_by": "clip"}, "invalid_request"),
    ({"query": "dog", "video_ids": []}, "invalid_request"),
    ({"query": "dog", "page_token": "x" * 600}, "invalid_request"),
    ({"query": "dog", "extra": 1}, "invalid_request"),
    ({"query": "dog", "video_ids": [VIDEO_ID] * 3}, "too_many_videos"),
])
def test_limits(client, body, code) -> None:
    error(client.post("/v1/search", json=body), 422, code)


def test_no_worker_answers_202_with_the_job(client, redis_prefix) -> None:  # noqa: F811
    redis_client().sadd(Keys(redis_prefix).library("tiny"), VIDEO_ID)
    response = client.post("/v1/search", json={"query": "dog"})
    assert response.status_code == 202 and response.headers["Retry-After"], response.text
    assert response.json()["status"] == "queued" and response.json()["job_id"]
