"""Dockerfile, docker-compose.yml, the API image's pins and docs/service.md agree with the code.

No Docker engine runs here, so these check the files themselves; the health-check commands they name are run.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time

import pytest
import yaml

from service.api import create_app
from service.contract.keys import Keys
from service.contract.schemas import WorkerInfo, WorkerModel
from service.contract.settings import Settings
from service.store.redis_records import RedisRecords

from service_helpers import (  # noqa: F401 - fixtures
    REDIS_URL,
    REPO_ROOT,
    free_port,
    redis_client,
    redis_prefix,
)

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


class ComposeLoader(yaml.SafeLoader):
    """YAML plus Compose's merge tags (``!override``, ``!reset``), read as plain values."""


for _tag in ("!override", "!reset"):
    ComposeLoader.add_constructor(_tag, lambda loader, node: (
        loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else
        loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_scalar(node)))


def compose(name: str) -> dict:
    return yaml.load((REPO_ROOT / name).read_text(), Loader=ComposeLoader)


COMPOSE = compose("docker-compose.yml")
DOCS = (REPO_ROOT / "docs" / "service.md").read_text()


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            out[match.group(1).lower().replace("_", "-")] = match.group(2)
    return out


def test_api_image_pins_match_the_requirements() -> None:
    api = pins(REPO_ROOT / "service" / "api" / "requirements.txt")
    everything = pins(REPO_ROOT / "requirements.txt")
    assert api and all(everything.get(name) == version for name, version in api.items()), (api, everything)
    assert "torch" not in api


def test_dockerfile_has_an_api_and_a_worker_target() -> None:
    targets = {stage: image for image, stage in re.findall(r"^FROM\s+(\S+)\s+AS\s+(\w+)", DOCKERFILE, flags=re.M)}
    assert set(targets) == {"api", "worker"}
    assert "CUDA_IMAGE" in targets["worker"] and "PYTHON_IMAGE" in targets["api"]
    api_part = DOCKERFILE.split("AS api", 1)[1].split("AS worker", 1)[0]
    assert "service/api/requirements.txt" in api_part and "torch" not in api_part.replace("nor torch", "")
    # The API image has no engine: it copies the service and the command, never models/.
    assert "COPY models/" not in api_part and "COPY service/" in api_part
    assert 'CMD ["python", "-m", "r2tuning", "serve"]' in api_part
    worker_part = DOCKERFILE.split("AS worker", 1)[1]
    assert "COPY models/" in worker_part and 'CMD ["python", "-m", "r2tuning", "worker"]' in worker_part


def test_compose_brings_up_redis_api_and_a_gpu_worker_with_health_checks() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"redis", "api", "worker"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert services["api"]["build"]["target"] == "api" and services["worker"]["build"]["target"] == "worker"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["healthcheck"]["test"][1:] == ["python", "-m", "r2tuning", "healthcheck", name]
    assert any(v.startswith("checkpoints:/checkpoints") for v in services["worker"]["volumes"])
    assert "checkpoints" in COMPOSE["volumes"]


def test_compose_keeps_the_cold_tier_in_a_volume_api_and_workers_share() -> None:
    services = COMPOSE["services"]
    for name in ("api", "worker"):
        assert services[name]["environment"]["R2_COLD_DIR"] == "/var/lib/r2/cold"
        assert "cold:/var/lib/r2/cold" in [v.split(" ")[0] for v in services[name]["volumes"]]
    assert "cold" in COMPOSE["volumes"]
    assert services["redis"]["command"][services["redis"]["command"].index("--maxmemory-policy") + 1] == \
        "volatile-lru"  # only keys with a TTL are evicted (docs/scaling.md)


def test_compose_cluster_variant_replaces_redis_with_six_nodes() -> None:
    variant = compose("docker-compose.cluster.yml")
    services = variant["services"]
    nodes = [n for n in services if n.startswith("redis-") and n[6:].isdigit()]
    assert len(nodes) == 6 and services["redis"]["profiles"]  # the single Redis is left out
    command = services["redis-1"]["command"]
    assert "--cluster-enabled" in command and command[command.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert "--cluster-replicas 1" in " ".join(services["redis-cluster-init"]["entrypoint"])
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["R2_REDIS_CLUSTER"] == "1" and env["REDIS_URL"].startswith("redis://redis-1:6379,")
        assert services[name]["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully"
    Settings(redis_url=services["api"]["environment"]["REDIS_URL"], redis_cluster=True)  # a valid setting


def test_compose_shared_volume_variant_mounts_the_cold_tier_over_nfs() -> None:
    variant = compose("docker-compose.shared-volume.yml")
    assert variant["volumes"]["cold"]["driver_opts"]["type"] == "nfs"
    for name in ("api", "worker"):
        assert "REDIS_URL" in variant["services"][name]["environment"]


def test_docs_cover_every_route_setting_and_status() -> None:
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    routes = {(method, route.path) for route in app.routes for method in getattr(route, "methods", ())
              if route.path.startswith(("/v1", "/healthz", "/readyz", "/metrics"))}
    for method, path in routes:
        if method == "HEAD":
            continue
        assert f"{method} {path}" in DOCS, f"docs/service.md does not show {method} {path}"
    for name in Settings.model_fields:
        env = "REDIS_URL" if name == "redis_url" else f"R2_{name.upper()}"
        assert f"`{env}`" in DOCS, f"docs/service.md does not list {env}"
    for status in (401, 404, 409, 413, 422, 429, 503):
        assert f"| {status} |" in DOCS
    assert "docker compose up" in DOCS and "curl" in DOCS


def test_api_health_check_command() -> None:
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "r2tuning", "healthcheck", "api"], cwd=REPO_ROOT,
                            env={"R2_PORT": str(port), "PATH": ""}, capture_output=True, timeout=60)
    assert result.returncode == 1  # nothing listens there


@pytest.mark.redis
def test_worker_health_check_command_reads_this_hosts_heartbeat(redis_prefix) -> None:  # noqa: F811
    env = {"REDIS_URL": REDIS_URL, "R2_KEY_PREFIX": redis_prefix, "PATH": ""}

    def check() -> int:
        return subprocess.run([sys.executable, "-m", "r2tuning", "healthcheck", "worker"], cwd=REPO_ROOT, env=env,
                              capture_output=True, timeout=60).returncode

    assert check() == 1
    state = RedisRecords(redis_client(), Keys(redis_prefix))
    state.heartbeat(WorkerInfo(worker_id="w", host=socket.gethostname(), pid=1, device="cpu", started_at=0,
                               seen_at=time.time(), models={"tiny": WorkerModel(loaded=True)}), 30)
    assert check() == 0
