"""schemathesis against the service's own OpenAPI document, served by a real ``r2tuning serve`` (uvicorn)
on the test Redis with one worker of the tiny model (so /readyz is 200 and jobs get answered). Every generated
request must get a documented status, content type and body, and never a 5xx. Three runs: the API without
keys, and the API with a key, cases sent with the key and without it. Bounded in count
(``CASES_PER_OPERATION`` per route) so the check takes seconds, not hours."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.figures import record

from service_helpers import (
    REDIS_URL,
    api_process,
    delete_prefix,
    redis_client,
    service_env,
    wait_until,
    worker_process,
    write_registry,
)

pytestmark = [pytest.mark.reliability, pytest.mark.redis]

API_KEY = "reliability-key-0123456789"
CASES_PER_OPERATION = 10


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Base URLs of two APIs: one without keys, one that needs ``API_KEY``."""
    folder = tmp_path_factory.mktemp("schemathesis")
    prefix = f"r2test-{uuid.uuid4().hex[:10]}"
    env = service_env(prefix, write_registry(folder), moments_wait_s=0, ground_wait_s=0,
                      upload_dir=folder / "uploads", log_level="warning")
    env["REDIS_URL"] = REDIS_URL
    keyed = {**env, "R2_API_KEYS": API_KEY}
    worker = worker_process(env, folder, "worker")
    try:
        with api_process(env, folder, "open") as (_, open_base), api_process(keyed, folder, "keyed") as (_, keyed_base):
            wait_until(lambda: httpx.get(f"{open_base}/readyz").status_code == 200, 120, "the worker")
            yield {"open": open_base, "keyed": keyed_base}
    finally:
        worker.stop()
        client = redis_client()
        delete_prefix(client, prefix)
        client.close()


def run_schemathesis(base: str, headers: dict[str, str]) -> tuple[int, Counter, list[str]]:
    """(cases sent, statuses seen, failures) of a bounded run over every operation of the document."""
    import hypothesis
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    sent, statuses, failures = 0, Counter(), []
    def run_operation(operation) -> None:
        @hypothesis.settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(hypothesis.HealthCheck),
                             phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])
        @hypothesis.given(case=operation.as_strategy())
        def one(case) -> None:
            nonlocal sent
            sent += 1
            try:
                response = case.call(base_url=base, headers=headers, timeout=30)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=checks, headers=headers)
            except (Exception, BaseExceptionGroup) as err:  # every failure is collected, reported together
                failures.append(f"{operation.label}: {str(err)[:600]}")

        one()

    for result in schema.get_all_operations():
        run_operation(result.ok())
    return sent, statuses, failures


@pytest.mark.parametrize("mode", ["no keys", "key sent", "key missing"])
def test_schemathesis_finds_no_5xx_and_no_schema_violation(servers, mode, tmp_path: Path) -> None:
    base = servers["open"] if mode == "no keys" else servers["keyed"]
    headers = {"Authorization": f"Bearer {API_KEY}"} if mode == "key sent" else {}
    sent, statuses, failures = run_schemathesis(base, headers)
    server_errors = sum(n for s, n in statuses.items() if s >= 500)
    record(f"schemathesis-{mode.replace(' ', '-')}", cases=sent, server_errors=server_errors,
           failures=len(failures), statuses=dict(sorted(statuses.items())))
    assert sent >= 50, "schemathesis generated almost nothing: is the document empty?"
    assert not failures, f"{len(failures)} of {sent} cases failed:\n" + "\n".join(failures[:10])
    assert server_errors == 0
    if mode == "key missing":
        assert statuses[401] > 0, statuses
