"""``r2tuning worker``: run a worker until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal

from service.contract.settings import NO_REDIS, Settings, configure_logging, get_settings

from .loop import Worker

log = logging.getLogger("service.worker")


def main(settings: Settings | None = None) -> int:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    if settings.embedded:
        log.error(NO_REDIS)
        return 2
    worker = Worker(settings)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received: finishing the jobs in hand, then exiting", signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker %s starting (device %s, models %s)", worker.worker_id, worker.models.device,
             ", ".join(settings.models))
    try:
        worker.run()
    finally:
        worker.backend.close()
    log.info("worker %s stopped", worker.worker_id)
    return 0
