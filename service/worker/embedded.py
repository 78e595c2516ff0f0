"""Embedded mode: a worker on a thread of the API process, sharing its in-memory backend."""

from __future__ import annotations

import logging
import threading

from service.contract.settings import Settings
from service.store.backend import Backend

from .loop import Worker

log = logging.getLogger("service.worker")


class BackgroundWorker:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.worker = Worker(settings, backend)
        self.thread = threading.Thread(target=self._run, name="r2-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except Exception:
            log.exception("the embedded worker stopped")

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self.worker.stop()
        self.thread.join(timeout_s)
