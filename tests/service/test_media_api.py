"""The media API on both backends (embedded memory, real Redis): the video list, status per (video, model),
``?model=`` on raw uploads, the uploaded bytes with Range, per-clip thumbnails and highlight reels."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from media_helpers import media_service, until_200, upload, videos, wait_ready, wait_until_finished

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module", params=["embedded", "redis"])
def service(request, tmp_path_factory) -> Iterator[tuple[TestClient, list[Path]]]:
    folder = tmp_path_factory.mktemp(f"media-{request.param}")
    with media_service(request.param, folder) as api:
        files = videos(folder, 3)
        yield api, files


@pytest.fixture(scope="module")
def ready(service) -> tuple[TestClient, dict, bytes]:
    """The first video, uploaded for the default model and encoded."""
    api, files = service
    body = upload(api, files[0])
    return api, wait_ready(api, body["video_id"]), files[0].read_bytes()


def test_list_is_paged_newest_first_with_status_per_model(service, ready) -> None:
    api, files = service
    second = upload(api, files[1], model="tiny-fast", raw=True)  # raw bytes: ?model= chooses the model
    assert second["model"] == "tiny-fast" and set(second["models"]) == {"tiny-fast"}
    third = upload(api, files[2])
    page = api.get("/v1/videos", params={"limit": 2}).json()
    assert [v["video_id"] for v in page["videos"]] == [third["video_id"], second["video_id"]]
    assert page["next_page_token"]
    rest = api.get("/v1/videos", params={"limit": 2, "page_token": page["next_page_token"]}).json()
    assert [v["video_id"] for v in rest["videos"]] == [ready[1]["video_id"]] and rest["next_page_token"] is None
    first = rest["videos"][0]
    assert first["models"]["tiny"]["status"] == "ready" and first["content"].endswith("/content")
    for query, code in (({"page_token": "nonsense"}, "invalid_page_token"), ({"limit": 1000}, "invalid_limit")):
        response = api.get("/v1/videos", params=query)
        assert response.status_code == 422 and response.json()["error"]["code"] == code
    assert api.get("/v1/videos", params={"limit": 0}).status_code == 422
    wait_ready(api, second["video_id"], "tiny-fast")
    wait_ready(api, third["video_id"])


def test_a_second_model_is_not_ready_until_encoded_for_it(service, ready) -> None:
    api, _ = service
    _, video, data = ready
    video_id = video["video_id"]
    response = api.get(f"/v1/videos/{video_id}", params={"model": "tiny-fast"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_encoded"
    response = api.post("/v1/videos", content=data, params={"model": "tiny-fast"},
                        headers={"Content-Type": "video/mp4"})
    assert response.status_code == 202, response.text  # not "ready": that is the first model's state
    body = response.json()
    assert body["model"] == "tiny-fast" and body["status"] in ("queued", "processing")
    assert body["models"]["tiny"]["status"] == "ready"
    done = wait_ready(api, video_id, "tiny-fast")
    assert done["clip_seconds"] == 1.0 and done["num_clips"] == 12 and done["models"]["tiny-fast"]["thumbnails"] == 12
    plain = api.get(f"/v1/videos/{video_id}").json()  # the upload's model is still what the plain status shows
    assert plain["model"] == "tiny" and plain["num_clips"] == 6 and set(plain["models"]) == {"tiny", "tiny-fast"}


def test_a_failed_video_fails_per_model(service) -> None:
    api, _ = service
    junk = b"not a video at all " * 64
    response = api.post("/v1/videos", content=junk, headers={"Content-Type": "application/octet-stream"})
    video_id = response.json()["video_id"]
    assert wait_until_finished(api, video_id)["status"] == "failed"
    response = api.post("/v1/videos", content=junk, params={"model": "tiny-fast"},
                        headers={"Content-Type": "application/octet-stream"})
    assert response.status_code == 202 and response.json()["model"] == "tiny-fast", response.text
    body = wait_until_finished(api, video_id, "tiny-fast")
    assert body["status"] == "failed" and body["error"]["code"] and body["models"]["tiny"]["status"] == "failed"
    assert api.delete(f"/v1/videos/{video_id}").status_code == 204


def test_content_serves_exact_ranges(ready) -> None:
    api, video, data = ready
    url = video["content"]
    whole = api.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    size = len(data)
    for header, (start, end) in (("bytes=10-99", (10, 100)), ("bytes=4090-4200", (4090, 4201)),
                                 ("bytes=-50", (size - 50, size)), (f"bytes={size - 7}-", (size - 7, size)),
                                 (f"bytes=5-{size + 100}", (5, size))):
        response = api.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == data[start:end], header
        assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
    for ignored in ("bytes=9-3", "bytes=0-1,5-6", "items=0-5"):  # invalid or several ranges: all of it (RFC 9110)
        response = api.get(url, headers={"Range": ignored})
        assert response.status_code == 200 and response.content == data, ignored
    response = api.get(url, headers={"Range": f"bytes={size}-"})
    assert response.status_code == 416 and response.headers["content-range"] == f"bytes */{size}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


def test_thumbnails_per_clip_named_in_answers(ready) -> None:
    api, video, _ = ready
    video_id = video["video_id"]
    assert video["models"]["tiny"]["thumbnails"] == video["num_clips"] == 6
    jpegs = []
    for clip in range(6):
        response = api.get(f"/v1/videos/{video_id}/thumbnails/{clip}")
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "JPEG" and max(image.size) <= 160 and len(response.content) < 16 << 10
        jpegs.append(response.content)
    assert len(set(jpegs)) > 1  # the frames move: the clips' thumbnails differ
    response = api.get(f"/v1/videos/{video_id}/thumbnails/6")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_clip"
    moments = until_200(api, f"/v1/videos/{video_id}/moments", {"queries": ["dog"], "top_k": 3})
    for moment in moments["results"][0]["moments"]:
        clip = int(moment["start"] / 2.0)
        assert moment["thumbnail"] == f"/v1/videos/{video_id}/thumbnails/{clip}?model=tiny"
        assert api.get(moment["thumbnail"]).content == jpegs[clip]
    highlights = until_200(api, f"/v1/videos/{video_id}/highlights", {"query": "dog", "top_k": 2})
    assert all(h["thumbnail"] for h in highlights["highlights"])


def test_reel_lasts_the_summed_segments(ready, tmp_path) -> None:
    api, video, _ = ready
    video_id = video["video_id"]
    body = until_200(api, f"/v1/videos/{video_id}/summary", {"query": "dog", "budget": 0.4, "render": True})
    segments = body["segments"]
    total = sum(s["end"] - s["start"] for s in segments)
    assert segments and body["reel"]["duration"] == pytest.approx(total, abs=0.2)
    response = api.get(body["reel"]["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "video/mp4"
    assert len(response.content) == body["reel"]["size_bytes"]
    path = tmp_path / "reel.mp4"
    path.write_bytes(response.content)
    with av.open(str(path)) as reel:
        assert reel.duration / 1e6 == pytest.approx(total, abs=0.2)
        assert sum(1 for _ in reel.decode(video=0)) == round(total * 10)  # every frame of the segments
    part = api.get(body["reel"]["url"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == response.content[:100]
    plain = until_200(api, f"/v1/videos/{video_id}/summary", {"query": "dog", "budget": 0.4})
    assert plain["reel"] is None and plain["segments"] == segments
    response = api.get(f"/v1/videos/{video_id}/reels/{'0' * 32}.mp4")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_reel"


def test_deleted_video_has_no_media_left(service) -> None:
    api, files = service
    video_id = wait_ready(api, upload(api, files[2])["video_id"])["video_id"]
    reel = until_200(api, f"/v1/videos/{video_id}/summary", {"query": "dog", "budget": 0.3, "render": True})["reel"]
    assert api.get(f"/v1/videos/{video_id}/thumbnails/0").status_code == 200
    backend = api.app.state.gateway.backend
    feature_id = backend.records.get_video(video_id).encoding("tiny").feature_id
    assert api.delete(f"/v1/videos/{video_id}").status_code == 204
    for url in (f"/v1/videos/{video_id}/thumbnails/0", f"/v1/videos/{video_id}/content", reel["url"]):
        response = api.get(url)
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_video", url
    # gone from the stores too, not only unreachable through the record
    assert backend.thumbnails.get(video_id, feature_id, 0) is None
    assert backend.reels.open(video_id, reel["url"].rsplit("/", 1)[1].removesuffix(".mp4")) is None
    assert video_id not in [v["video_id"] for v in api.get("/v1/videos").json()["videos"]]


def test_media_urls_take_the_api_key_as_a_query_parameter(tmp_path) -> None:
    """<video>/<img> cannot send headers: ?api_key= works on the media routes (and only there)."""
    from service.api import create_app
    from service.contract.settings import Settings

    from service_helpers import REDIS_URL

    key = "k" * 24
    settings = Settings(redis_url=REDIS_URL, key_prefix="r2test-media-keys", models=["tiny"], api_keys=[key],
                        upload_dir=tmp_path)
    with TestClient(create_app(settings)) as api:
        check_media_keys(api, key)


def check_media_keys(api: TestClient, key: str) -> None:
    video = "0" * 64
    for path in (f"/v1/videos/{video}/content", f"/v1/videos/{video}/thumbnails/0", f"/v1/videos/{video}/reels/x.mp4"):
        assert api.get(path).status_code == 401
        assert api.get(path, params={"api_key": "wrong" * 5}).status_code == 401
        response = api.get(path, params={"api_key": key})  # past the key check: the video is unknown
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_video"
    assert api.get(f"/v1/videos/{video}", params={"api_key": key}).status_code == 401
