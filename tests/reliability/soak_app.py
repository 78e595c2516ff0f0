"""The API for the memory soak, run as ``python tests/reliability/soak_app.py --port P [--leak]``.

With ``--leak`` it is the negative control: the real app wrapped in an ASGI middleware that keeps a piece of
every request's memory forever, as a leak in the service would. The soak check must catch it; that proves the
check can fail. The wrapper lives here, in the test, so the production code carries no hook."""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from service.api import create_app

LEAK_BYTES = 128 * 1024  # per request: 600 requests leak 75 MiB
_kept: list[bytearray] = []


class Leaking:
    """ASGI middleware that leaks ``LEAK_BYTES`` per HTTP request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            _kept.append(bytearray(b"\1" * LEAK_BYTES))
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--leak", action="store_true")
    args = parser.parse_args()
    app: Any = create_app()
    uvicorn.run(Leaking(app) if args.leak else app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
