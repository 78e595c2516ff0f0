"""Fixtures shared by the service tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service_helpers import REDIS_URL, redis_prefix, write_registry  # noqa: F401 - fixture


@pytest.fixture()
def make_client(redis_prefix: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:  # noqa: F811 - the fixture imported above
    """Build in-process API clients (TestClient, server exceptions as 500s) on the test Redis with the tiny
    model; ``make(**settings_overrides)``. Every client is closed after the test."""
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.contract.settings import Settings

    registry = write_registry(tmp_path)
    clients = []

    def make(**overrides: Any) -> Any:
        base = dict(redis_url=REDIS_URL, key_prefix=redis_prefix, models=["tiny"], registry_file=registry,
                    moments_wait_s=0.3, upload_dir=tmp_path / "uploads")
        client = TestClient(create_app(Settings(**{**base, **overrides})), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)

