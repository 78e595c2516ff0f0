"""``r2tuning healthcheck api`` (container health check): the API on this host answers ``/healthz``."""

from __future__ import annotations

import sys
import urllib.request

from service.contract.settings import get_settings


def check_api() -> bool:
    settings = get_settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    try:
        with urllib.request.urlopen(f"http://{host}:{settings.port}/healthz", timeout=5) as response:
            return bool(response.status == 200)
    except OSError as err:
        print(f"API not healthy: {err}", file=sys.stderr)
        return False
