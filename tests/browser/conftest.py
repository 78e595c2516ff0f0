"""Fixtures of the browser tests: a service (API + worker, the tiny model, the real Redis) and a headless Debian
``chromium`` per module, a fresh page per test whose every request is checked."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from service_helpers import Proc, free_port, service_env, wait_until, worker_process, write_registry

CHROMIUM = os.environ.get("R2_TEST_CHROMIUM", "/usr/bin/chromium")
API_KEY = "page-test-key-0123456789"  # the keyed API's (at least 16 characters)


@pytest.fixture(scope="module")
def urls(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Base URLs of the service the page is walked through (``main``: API + worker) and of a second API with keys
    on (``keyed``, with its ``key``) in front of the same store and worker, all started at once (each takes
    seconds to import)."""
    folder = tmp_path_factory.mktemp("browser")
    registry = write_registry(folder)
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = service_env(prefix, registry)
    keyed_env = service_env(prefix, registry, api_keys=API_KEY)  # the same Redis keys: the same videos, one worker
    procs = [worker_process(env, folder, "worker")]
    urls = {"key": API_KEY}
    try:
        for name, proc_env in (("main", env), ("keyed", keyed_env)):
            port = free_port()
            procs.append(Proc(["-m", "r2tuning", "serve", "--host", "127.0.0.1", "--port", str(port)], proc_env,
                              folder / f"api-{name}.log"))
            urls[name] = f"http://127.0.0.1:{port}"
        for name, proc in zip(("main", "keyed"), procs[1:], strict=True):
            wait_until(functools.partial(answers, proc, urls[name]), 60,
                       f"the {name} API to start (log: {proc.log_path})")
        yield urls
    finally:
        for proc in procs:
            proc.proc.terminate()
        for proc in procs:
            proc.stop()


def answers(proc: Proc, base: str) -> bool:
    return proc.proc.poll() is None and httpx.get(f"{base}/healthz", timeout=2).status_code == 200


@pytest.fixture(scope="module")
def base_url(urls) -> str:
    return urls["main"]


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


