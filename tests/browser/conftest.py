"""Fixtures of the browser tests: a service (API + worker, the tiny model, the real Redis) and a headless Debian
``chromium`` per module, a fresh page per test whose every request is checked."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service_helpers import api_process, delete_prefix, redis_client, service_env, worker_process, write_registry

CHROMIUM = os.environ.get("R2_TEST_CHROMIUM", "/usr/bin/chromium")
API_KEY = "page-test-key-0123456789"  # keys are at least 16 characters


@dataclass(frozen=True)
class Service:
    url: str
    key: str

    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Service]:
    """The service the page is walked through: API (keys on, as a deployment would run it) and one worker with the
    tiny model on the real Redis; its keys are deleted afterwards."""
    folder = tmp_path_factory.mktemp("browser")
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = service_env(prefix, write_registry(folder), api_keys=API_KEY)
    worker = worker_process(env, folder, "worker")
    try:
        with api_process(env, folder) as (_, base):
            yield Service(base, API_KEY)
    finally:
        worker.stop()
        client = redis_client()
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():  # fail, never skip: .ci/run installs it
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does), or set R2_TEST_CHROMIUM")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser) -> Iterator[tuple[object, list[str]]]:
    """A fresh page whose requests are all checked: one that would leave 127.0.0.1 is aborted and recorded."""
    context = browser.new_context(viewport={"width": 1360, "height": 980})
    outside: list[str] = []

    def guard(route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    # The browser's console and script errors are printed (pytest shows them when the test fails).
    page.on("console", lambda m: print(f"console.{m.type}: {m.text}"))
    page.on("pageerror", lambda e: print(f"page error: {e}"))
    yield page, outside
    context.close()


