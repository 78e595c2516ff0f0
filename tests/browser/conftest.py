"""Fixtures of the browser tests: a service (API + worker, the tiny model, the real Redis) and a headless Debian
``chromium`` per module, a fresh page per test whose every request is checked."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service_helpers import api_process, service_env, worker_process, write_registry

CHROMIUM = os.environ.get("R2_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("browser")
    registry = write_registry(folder)
    env = service_env(f"r2test-{uuid.uuid4().hex[:10]}", registry)
    worker = worker_process(env, folder, "worker")
    try:
        with api_process(env, folder) as (_, base):
            yield base
    finally:
        worker.stop()


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


