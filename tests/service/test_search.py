"""POST /v1/search end to end in embedded mode (API, queue, worker, feature cache in one process): the two-stage
search against the exhaustive reference and the per-video answers, grouping, pages, video_ids, deletion."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.settings import Settings

from service_helpers import wait_until, write_registry

pytestmark = pytest.mark.slow
QUERY = "a red car drives along the road"


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Iterator[tuple[TestClient, list[str]]]:
    """Three videos of the tiny model, stored as the worker stores an encoded upload (record, features, clip
    embeddings, library set), with features made up directly: decoding real files is not what is tested here."""
    import torch

    from models.video import VideoInfo
    from service.contract.schemas import EncodingRecord, Status, VideoRecord
    from service.worker.models import Models
    from service.worker.pipeline import tensor_to_features
    from service.worker.search import store_embeddings

    folder = tmp_path_factory.mktemp("search")
    settings = Settings(redis_url=None, models=["tiny"], registry_file=write_registry(folder),
                        upload_dir=folder / "up", search_candidates=2, heartbeat_interval_s=0.2, moments_wait_s=60)
    models = Models(settings)
    models.load()
    grounder = models.get("tiny")
    clip = grounder.clip
    with TestClient(create_app(settings)) as client:
        backend = client.app.state.gateway.backend
        ids = []
        generator = torch.Generator().manual_seed(0)
        for n, clips in enumerate((3, 5, 4)):
            video_id = f"{n:02d}" * 32
            features = torch.randn(grounder.k, clips, clip.num_patches_tokens, clip.vision_width,
                                   generator=generator).half()  # (K, T, P, C)
            info = VideoInfo(num_frames=clips * 10, avg_fps=5.0, width=64, height=64, duration=2.0 * clips)
            kept = {"tiny": EncodingRecord(status=Status.ready, feature_id=grounder.feature_id, num_clips=clips,
                                           thumbnails=clips)} if n == 0 else {}  # only the first has thumbnails
            backend.records.create_video(VideoRecord(video_id=video_id, status=Status.ready, progress=1.0,
                                                     model="tiny", size_bytes=1, duration=info.duration,
                                                     num_clips=clips, clip_seconds=2.0, encodings=kept),
                                         settings.video_ttl_s)
            backend.features.put(video_id, grounder.feature_id, tensor_to_features(features, info))
            store_embeddings(backend, settings, "tiny", grounder, video_id, features, dataclasses.asdict(info))
            ids.append(video_id)
        wait_until(lambda: client.get("/readyz").status_code == 200, 90, "the embedded worker")
        yield client, ids


def search(client: TestClient, **body) -> dict:
    response = client.post("/v1/search", json={"query": QUERY, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_exhaustive_search_ranks_every_videos_own_answers(library) -> None:
    client, ids = library
    found = search(client, exhaustive=True, top_k=1000)
    assert found["exhaustive"] is True and found["searched_videos"] == found["grounded_videos"] == len(ids)
    scores = [m["score"] for m in found["moments"]]
    assert scores == sorted(scores, reverse=True) and set(m["video_id"] for m in found["moments"]) == set(ids)
    for video_id in ids:  # the reference: each video's own moments answer, in the same order
        own = client.post(f"/v1/videos/{video_id}/moments", json={"queries": [QUERY], "top_k": 1000}).json()
        want = [(m["start"], m["end"], m["score"]) for m in own["results"][0]["moments"]]
        got = [(m["start"], m["end"], m["score"]) for m in found["moments"] if m["video_id"] == video_id]
        assert len(got) == len(want) and [g[:2] for g in got] == [w[:2] for w in want]
        assert [g[2] for g in got] == pytest.approx([w[2] for w in want], abs=1e-5)


def test_moments_name_the_thumbnail_of_their_first_clip_when_the_video_has_them(library) -> None:
    client, ids = library
    for m in search(client, exhaustive=True, top_k=1000)["moments"]:
        if m["video_id"] == ids[0]:
            assert m["thumbnail"] == f"/v1/videos/{ids[0]}/thumbnails/{min(2, int(m['start'] / 2.0))}?model=tiny"
        else:
            assert "thumbnail" not in m


def test_two_stage_grounds_only_the_candidates_and_agrees_with_the_reference_on_them(library) -> None:
    client, ids = library
    fast, full = search(client, top_k=1000), search(client, exhaustive=True, top_k=1000)
    assert fast["exhaustive"] is False and fast["searched_videos"] == len(ids) and fast["grounded_videos"] == 2
    picked = {m["video_id"] for m in fast["moments"]}
    assert len(picked) == 2
    assert fast["moments"] == [m for m in full["moments"] if m["video_id"] in picked]


def test_group_by_video_and_pages_walk_the_same_ranking(library) -> None:
    client, ids = library
    whole = search(client, exhaustive=True, top_k=1000, group_by="video")
    videos = whole["videos"]
    assert "moments" not in whole and [v["video_id"] for v in videos] and len(videos) == len(ids)
    assert [v["score"] for v in videos] == sorted((v["score"] for v in videos), reverse=True)
    for v in videos:
        assert v["score"] == v["moments"][0]["score"] and all(m["video_id"] == v["video_id"] for m in v["moments"])
    pages, token = [], None
    while True:
        page = search(client, exhaustive=True, top_k=3, group_by="video",
                      **({"page_token": token} if token else {}))
        pages += page["videos"]
        token = page.get("next_page_token")
        if token is None:
            break
    assert pages == videos


def test_video_ids_limit_the_search_and_a_deleted_video_leaves_it(tmp_path, library) -> None:
    client, ids = library
    only = search(client, exhaustive=True, top_k=1000, video_ids=ids[:2])
    assert only["searched_videos"] == 2 and {m["video_id"] for m in only["moments"]} == set(ids[:2])
    token = search(client, top_k=1)["next_page_token"]
    assert client.delete(f"/v1/videos/{ids[2]}").status_code == 204
    stale = client.post("/v1/search", json={"query": QUERY, "top_k": 1, "page_token": token})
    assert stale.status_code == 422 and stale.json()["error"]["code"] == "invalid_page_token"
    after = search(client, exhaustive=True, top_k=1000)
    assert after["searched_videos"] == len(ids) - 1 and ids[2] not in {m["video_id"] for m in after["moments"]}
    response = client.post("/v1/search", json={"query": QUERY, "video_ids": [ids[2]]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_video"
