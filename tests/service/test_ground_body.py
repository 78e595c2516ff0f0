"""`POST /v1/ground` says how to send its body: anything but multipart (JSON, raw bytes) is 415, documented."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.contract.settings import Settings

from service_helpers import REDIS_URL, fixture_video, redis_prefix, write_registry  # noqa: F401 - fixtures

pytestmark = pytest.mark.redis


@pytest.fixture()
def client(redis_prefix, tmp_path):  # noqa: F811
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"],
                        registry_file=write_registry(tmp_path), upload_dir=tmp_path / "uploads")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("kind", ["json", "raw"])
def test_a_body_that_is_not_multipart_is_told_to_send_multipart(client, kind: str) -> None:
    if kind == "json":
        response = client.post("/v1/ground", json={"queries": ["a dog runs"], "model": "tiny"})
    else:
        response = client.post("/v1/ground", content=fixture_video().read_bytes(),
                               headers={"Content-Type": "video/mp4"})
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert "multipart/form-data" in error["message"] and "/v1/videos/{video_id}/moments" in error["message"]
    assert len(error["message"]) < 400
    assert not (client.app.state.settings.upload_dir.exists()
                and any(client.app.state.settings.upload_dir.iterdir()))  # nothing was read into a scratch file


def test_the_415_is_in_the_openapi_schema(client) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/v1/ground"]["post"]["responses"]
    assert "415" in responses and "multipart/form-data" in responses["415"]["description"]
