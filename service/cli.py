"""``r2tuning serve`` and ``r2tuning worker``: hooks for the ``r2tuning`` command (``r2tuning_cli.py``).

``add_subcommands(subparsers)`` adds both; each sets ``func`` to a handler returning an exit status.
Options given on the command line override the environment (``R2_*`` / ``REDIS_URL``) for this process.
"""

from __future__ import annotations

import argparse
import os

NO_REDIS = ("REDIS_URL is not set: a separate worker needs Redis to share jobs with the API. "
            "Without Redis, `r2tuning serve` runs the worker inside the API process.")


def _apply(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Turn command-line options into the environment the settings read (one source of truth)."""
    from .settings import get_settings

    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"R2_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    get_settings.cache_clear()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API with uvicorn; without REDIS_URL the worker runs inside it (embedded mode)."""
    import uvicorn

    from .settings import configure_logging, get_settings

    _apply(args, ("host", "port", "models", "device"))
    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run("service.api:create_app", factory=True, host=settings.host, port=settings.port,
                log_level=settings.log_level, proxy_headers=True, timeout_graceful_shutdown=30)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker (needs REDIS_URL)."""
    import sys

    from .settings import get_settings

    _apply(args, ("models", "device", "worker_id"))
    settings = get_settings()
    if settings.embedded:  # say so before importing torch
        print(NO_REDIS, file=sys.stderr)
        return 2
    from .worker import main

    return main(settings)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``worker`` to the ``r2tuning`` command's subparsers."""
    p = subparsers.add_parser(
        "serve", help="run the HTTP API (with no REDIS_URL: API and worker in one process)",
        description="Run the HTTP API. Without REDIS_URL the worker runs in the same process with an in-memory "
                    "queue and cache; with REDIS_URL start workers separately with `r2tuning worker`. "
                    "All settings: docs/service.md (environment variables R2_*).")
    p.add_argument("--host", help="bind address (R2_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (R2_PORT, default 8000)")
    p.add_argument("--models", type=lambda v: v.split(","), help="comma-separated model names (R2_MODELS)")
    p.add_argument("--device", help="embedded worker's device: auto, cpu, cuda, cuda:N (R2_DEVICE)")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser(
        "worker", help="run a worker: loads the models, takes jobs from Redis",
        description="Run a worker process. Needs REDIS_URL (the same as the API's). Loads the configured models "
                    "once (fetching missing weights), then answers jobs until SIGTERM.")
    p.add_argument("--models", type=lambda v: v.split(","), help="comma-separated model names (R2_MODELS)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (R2_DEVICE)")
    p.add_argument("--worker-id", dest="worker_id", help="name in heartbeats and logs (R2_WORKER_ID)")
    p.set_defaults(func=cmd_worker)
