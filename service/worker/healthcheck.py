"""``r2tuning healthcheck worker`` (container health check): a worker on this host has a fresh heartbeat.

The worker writes it every ``R2_HEARTBEAT_INTERVAL_S``; it expires after ``R2_HEARTBEAT_TTL_S``. Imports no
torch (it runs next to a busy worker and must be quick).
"""

from __future__ import annotations

import socket
import sys

from service.contract.settings import get_settings
from service.store.backend import open_backend


def check_worker() -> bool:
    settings = get_settings()
    if settings.embedded:
        print("REDIS_URL is not set", file=sys.stderr)
        return False
    backend = open_backend(settings)
    try:
        mine = [w for w in backend.records.live_workers() if w.host == socket.gethostname()]
    except Exception as err:
        print(f"cannot read heartbeats: {err}", file=sys.stderr)
        return False
    finally:
        backend.close()
    if not mine:
        print("no fresh heartbeat from a worker on this host", file=sys.stderr)
    return bool(mine)
