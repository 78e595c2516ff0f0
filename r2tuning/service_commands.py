"""Service subcommands: serve, worker, healthcheck.

Options given on the command line override the environment (``R2_*`` / ``REDIS_URL``) for this process.
"""

from __future__ import annotations

import argparse
import os
import sys


def _apply(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Turn command-line options into the environment the settings read (one source of truth)."""
    from service.contract.settings import get_settings

    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"R2_{name.upper()}"] = ",".join(value) if isinstance(value, list) else str(value)
    get_settings.cache_clear()


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API with uvicorn; without REDIS_URL the worker runs inside it (embedded mode)."""
    import uvicorn

    from service.api.timeouts import header_timeout_protocol
    from service.contract.settings import configure_logging, get_settings

    _apply(args, ("host", "port", "models", "device"))
    settings = get_settings()
    configure_logging(settings.log_level)
    uvicorn.run("service.api:create_app", factory=True, host=settings.host, port=settings.port,
                log_level=settings.log_level, proxy_headers=True, timeout_graceful_shutdown=30,
                http=header_timeout_protocol(settings.header_timeout_s))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker (needs REDIS_URL)."""
    from service.contract.settings import NO_REDIS, get_settings

    _apply(args, ("models", "device", "worker_id"))
    if get_settings().embedded:  # say so before importing torch
        print(NO_REDIS, file=sys.stderr)
        return 2
    from service.worker.main import main

    return main(get_settings())


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Container health check: exit 0 when healthy."""
    if args.role == "api":
        from service.api.healthcheck import check_api

        return 0 if check_api() else 1
    from service.worker.healthcheck import check_worker

    return 0 if check_worker() else 1


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve", help="run the HTTP API (with no REDIS_URL: API and worker in one process)",
        description="Run the HTTP API. Without REDIS_URL the worker runs in the same process with an in-memory "
                    "queue and cache; with REDIS_URL start workers separately with `r2tuning worker`. "
                    "All settings: docs/service.md (environment variables R2_*).")
    p.add_argument("--host", help="bind address (R2_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (R2_PORT, default 8000)")
    p.add_argument("--models", type=lambda v: v.split(","), help="comma-separated model names (R2_MODELS)")
    p.add_argument("--device", help="embedded worker's device: auto, cpu, cuda, cuda:N (R2_DEVICE)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "worker", help="run a worker: loads the models, takes jobs from Redis",
        description="Run a worker process. Needs REDIS_URL (the same as the API's). Loads the configured models "
                    "once (fetching missing weights), then answers jobs until SIGTERM.")
    p.add_argument("--models", type=lambda v: v.split(","), help="comma-separated model names (R2_MODELS)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (R2_DEVICE)")
    p.add_argument("--worker-id", dest="worker_id", help="name in heartbeats and logs (R2_WORKER_ID)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("healthcheck", help="container health check of the API or of the workers on this host")
    p.add_argument("role", choices=["api", "worker"])
    p.set_defaults(func=cmd_healthcheck)
