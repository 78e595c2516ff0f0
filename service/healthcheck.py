"""Container health checks (``docker-compose.yml``); exit status 0 = healthy. Never imports torch.

``python -m service.healthcheck api``: the API on this host answers ``/healthz``.
``python -m service.healthcheck worker``: a worker on this host has a fresh heartbeat in Redis (the worker
writes it every ``R2_HEARTBEAT_INTERVAL_S``; it expires after ``R2_HEARTBEAT_TTL_S``).
"""

from __future__ import annotations

import socket
import sys
import urllib.request

from .settings import get_settings


def check_api() -> bool:
    settings = get_settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.port}/healthz", timeout=5) as response:
            return response.status == 200
    except OSError as err:
        print(f"API not healthy: {err}", file=sys.stderr)
        return False


def check_worker() -> bool:
    from .backend import open_backend

    settings = get_settings()
    if settings.embedded:
        print("REDIS_URL is not set", file=sys.stderr)
        return False
    backend = open_backend(settings)
    try:
        mine = [w for w in backend.state.live_workers() if w.host == socket.gethostname()]
    except Exception as err:
        print(f"cannot read heartbeats: {err}", file=sys.stderr)
        return False
    finally:
        backend.close()
    if not mine:
        print("no fresh heartbeat from a worker on this host", file=sys.stderr)
    return bool(mine)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    role = args[0] if args else "api"
    checks = {"api": check_api, "worker": check_worker}
    if role not in checks:
        print(f"usage: python -m service.healthcheck [{'|'.join(checks)}]", file=sys.stderr)
        return 2
    return 0 if checks[role]() else 1


if __name__ == "__main__":
    sys.exit(main())
