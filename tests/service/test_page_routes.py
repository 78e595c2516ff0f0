"""The page's files as the API serves them (the browser tests in tests/browser use them in chromium).

The API runs in this process (TestClient) against the real Redis; no worker is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.api.routes.page import PAGE_DIR
from service.contract.settings import Settings

from service_helpers import REDIS_URL, redis_prefix, write_registry  # noqa: F401 - fixture

pytestmark = pytest.mark.redis

KEY = "page-test-key-0123456789"


@pytest.fixture()
def client(redis_prefix, tmp_path) -> Iterator[TestClient]:  # noqa: F811
    settings = Settings(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"],
                        registry_file=write_registry(tmp_path), api_keys=KEY, upload_dir=tmp_path / "uploads")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_the_page_and_everything_it_loads_are_served_locally_without_a_key(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/page/vendor/plotly.min.js" in assets and "/page/app.js" in assets
    for asset in [a for a in assets if a.startswith("/page/")]:
        answer = client.get(asset)
        assert answer.status_code == 200, asset
        assert answer.headers["content-type"].split(";")[0] in {"text/javascript", "text/css"}, asset
    assert all(a.startswith(("/", "data:")) for a in assets), "the page loads nothing from another host"
    # The modules import each other by relative path only: each one named is served.
    for module in PAGE_DIR.glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', module.read_text()):
            assert client.get(f"/page/{imported}").status_code == 200, (module.name, imported)
    plotly = client.get("/page/vendor/plotly.min.js")
    assert len(plotly.content) > 1_000_000 and b"plotly" in plotly.content[:2000].lower()


def test_only_the_page_files_are_served(client) -> None:
    for path in ("/page/nothing.js", "/page/..%2Fapp.py", "/page/__init__.py"):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"]["code"] == "not_found"
    assert client.get("/v1/models").status_code == 401  # the API itself still needs the key
