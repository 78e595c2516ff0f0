"""The API process never imports torch: it validates, stores and hands off; the worker owns the model."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from service_helpers import REDIS_URL, REPO_ROOT, fixture_video, redis_prefix, write_registry  # noqa: F401

HEAVY = ("torch", "torchvision", "open_clip", "decord", "av", "numpy")


def run_fresh(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("R2_")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_importing_the_app_does_not_import_torch() -> None:
    result = run_fresh(f"""
        import sys
        from service.api import create_app
        import service.contract.schemas, service.store.backend, service.api.gateway, r2tuning.cli
        app = create_app()
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, heavy
        engine = [m for m in sys.modules if m == "models" or m.startswith("models.")]
        assert not engine, engine
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.redis
def test_serving_requests_with_redis_does_not_import_torch(redis_prefix, tmp_path) -> None:  # noqa: F811
    registry = write_registry(tmp_path)
    result = run_fresh(f"""
        import sys
        from fastapi.testclient import TestClient
        from service.api import create_app
        with TestClient(create_app()) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/v1/models").json()["models"][0]["name"] == "tiny"
            with open({str(fixture_video())!r}, "rb") as f:
                up = client.post("/v1/videos", files={{"file": ("v.mp4", f, "video/mp4")}})
            assert up.status_code == 202, up.text
            assert client.get("/v1/videos/" + up.json()["video_id"]).json()["status"] == "queued"
            assert client.get("/readyz").status_code == 503  # no worker
            assert "r2_queue_length 1.0" in client.get("/metrics").text
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, heavy
        engine = [m for m in sys.modules if m == "models" or m.startswith("models.")]
        assert not engine, engine
        print("ok")
    """, env={"REDIS_URL": REDIS_URL, "R2_KEY_PREFIX": redis_prefix, "R2_MODELS": "tiny",
              "R2_REGISTRY_FILE": str(registry)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_r2tuning_command_offers_serve_worker_and_healthcheck() -> None:
    result = run_fresh("""
        from r2tuning.cli import build_parser
        parser = build_parser()
        args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--models", "tiny,qvhighlights"])
        assert args.port == 9000 and args.models == ["tiny", "qvhighlights"]
        args = parser.parse_args(["worker", "--device", "cpu", "--worker-id", "w1"])
        assert args.worker_id == "w1"
        print(parser.parse_args(["serve"]).func.__name__, parser.parse_args(["worker"]).func.__name__,
              parser.parse_args(["healthcheck", "api"]).func.__name__)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cmd_serve", "cmd_worker", "cmd_healthcheck"]


def test_a_separate_worker_needs_redis() -> None:
    result = run_fresh("""
        import sys
        from r2tuning.cli import main
        sys.exit(main(["worker"]))
    """)
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
