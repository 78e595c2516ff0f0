"""Regression tests of the API's hardening (issue 8, defects 1, 2, 6, 7, 8) with the API in this process
(TestClient) against the real Redis: bounded JSON bodies and messages, text that is no Unicode, the OpenAPI
document agreeing with the server, 405's Allow, keys, scratch files, and the offline /docs page."""

from __future__ import annotations

import json
import re

import pytest

from service_helpers import REDIS_URL, redis_prefix, write_registry  # noqa: F401 - fixture

VIDEO_ID = "ab" * 32
KEY = "k" * 24
MOMENTS = f"/v1/videos/{VIDEO_ID}/moments"



def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]["message"]


# ---------------------------------------------------------------------------------------------------- defect 1


@pytest.mark.redis
def test_json_bodies_over_the_limit_get_413_before_parsing_and_close_the_connection(make_client) -> None:
    client = make_client(max_json_bytes=128 << 10)
    big = json.dumps({"queries": ["x"], **{f"k{i}": i for i in range(20_000)}}).encode()  # ~250 KB
    response = client.post(MOMENTS, content=big, headers={"Content-Type": "application/json"})
    assert "R2_MAX_JSON_BYTES" in error_of(response, 413, "body_too_large")
    assert response.headers["connection"] == "close"
    # Without Content-Length (chunked): cut off by the bytes that actually came.
    response = client.post(MOMENTS, content=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]),
                           headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    error_of(response, 413, "body_too_large")


@pytest.mark.redis
def test_a_422_names_a_bounded_number_of_problems(make_client) -> None:
    client = make_client()
    body = {"queries": ["x"], **{f"unknown_field_{i}": i for i in range(5000)}}  # 5000 problems
    message = error_of(client.post(MOMENTS, json=body), 422, "invalid_request")
    assert "and 4990 more problems" in message and len(message) < 1000


@pytest.mark.redis
def test_invalid_utf8_deep_json_and_lone_surrogates_get_422_not_400_or_500(make_client) -> None:
    client = make_client()
    headers = {"Content-Type": "application/json"}
    assert "UTF-8" in error_of(client.post(MOMENTS, content=b'{"queries": ["\xff\xfe"]}', headers=headers),
                               422, "malformed_json")
    deep = b'{"queries": ["x"], "top_k": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert "nested too deeply" in error_of(client.post(MOMENTS, content=deep, headers=headers), 422,
                                           "malformed_json")
    surrogate = b'{"queries": ["\\ud800 x"]}'
    for _ in range(2):  # the same request again: 422 again (no job record left behind answering 202)
        assert "surrogate" in error_of(client.post(MOMENTS, content=surrogate, headers=headers), 422,
                                       "malformed_json")
    train = b'{"annotations": "\\udc00"}'
    assert "surrogate" in error_of(client.post("/v1/models/new/train", content=train, headers=headers), 422,
                                   "malformed_json")


# ---------------------------------------------------------------------------------------------------- defect 7


@pytest.mark.redis
def test_openapi_agrees_with_what_the_server_refuses(make_client) -> None:
    client = make_client(max_queries=7, max_query_chars=99)
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    queries = schemas["MomentsRequest"]["properties"]["queries"]
    assert (queries["minItems"], queries["maxItems"], queries["items"]["maxLength"]) == (1, 7, 99)
    body = doc["paths"]["/v1/videos/{video_id}/moments"]["post"]["requestBody"]
    assert body["required"] and body["content"]["application/json"]["schema"]["$ref"].endswith("/MomentsRequest")
    error_of(client.post(MOMENTS, json={"queries": []}), 422, "empty_query")
    for name in ("HighlightsRequest", "SummaryRequest"):  # a string when given; null is refused
        query = schemas[name]["properties"]["query"]
        assert query["type"] == "string" and "anyOf" not in query and "default" not in query
    message = error_of(client.post(f"/v1/videos/{VIDEO_ID}/summary", json={"query": None}), 422, "invalid_request")
    assert "not null" in message
    for path, content in (("/v1/videos", "multipart/form-data"), ("/v1/ground", "multipart/form-data")):
        file = doc["paths"][path]["post"]["requestBody"]["content"][content]["schema"]["properties"]["file"]
        assert file["minLength"] == 1
    # No request example names a model: the served models are the deployment's.
    for name in ("MomentsRequest", "HighlightsRequest", "SummaryRequest"):
        for example in schemas[name].get("examples", []):
            assert "model" not in example, (name, example)
    assert "securitySchemes" not in doc.get("components", {})  # no keys configured: nothing to send


@pytest.mark.redis
def test_security_schemes_let_docs_send_the_key(make_client) -> None:
    client = make_client(api_keys=KEY)
    doc = client.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["apiKey"]["name"] == "X-API-Key"
    assert doc["paths"]["/v1/models"]["get"]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


@pytest.mark.redis
def test_405_allow_lists_every_method_of_the_path(make_client) -> None:
    client = make_client()
    for method in ("PUT", "OPTIONS", "PATCH"):
        response = client.request(method, f"/v1/videos/{VIDEO_ID}")
        error_of(response, 405, "method_not_allowed")
        assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}, response.headers


@pytest.mark.redis
def test_docs_page_loads_only_local_assets(make_client) -> None:
    client = make_client(api_keys=KEY)
    page = client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls), urls
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url
    assert "persistAuthorization" in page.text


# ---------------------------------------------------------------------------------------------------- defect 8


@pytest.mark.redis
def test_messages_echo_a_bounded_prefix_of_the_input(make_client) -> None:
    client = make_client()
    long_id = "f" * 60_000
    assert len(error_of(client.get(f"/v1/videos/{long_id}"), 404, "unknown_video")) < 300
    message = error_of(client.post(MOMENTS, json={"queries": ["x"], "model": "m" * 60_000}), 404, "unknown_model")
    assert len(message) < 400
    message = error_of(client.post(MOMENTS, json={"queries": ["x"], "z" * 60_000: 1}), 422, "invalid_request")
    assert len(message) < 300


@pytest.mark.redis
def test_an_empty_x_api_key_does_not_hide_a_valid_bearer_key(make_client) -> None:
    client = make_client(api_keys=KEY)
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}", "X-API-Key": ""}).status_code == 200
    error_of(client.get("/v1/models", headers={"X-API-Key": ""}), 401, "unauthorized")
    error_of(client.get("/v1/models", headers={"Authorization": "Bearer wrong-key-wrong-key", "X-API-Key": ""}),
             401, "unauthorized")


# ---------------------------------------------------------------------------------------------------- defect 6


@pytest.mark.redis
def test_multipart_without_boundary_leaves_no_scratch_file(make_client, tmp_path) -> None:
    client = make_client()
    for _ in range(5):
        response = client.post("/v1/videos", content=b"--x\r\n\r\nbytes",
                               headers={"Content-Type": "multipart/form-data"})
        assert "boundary" in error_of(response, 422, "invalid_upload")
    assert not list((tmp_path / "uploads").glob("*.part"))
