"""A service worker that sleeps before decoding each video, so a test can kill it in the middle of a job.

Run as ``python tests/slow_worker.py`` with the worker's environment plus ``SLOW_WORKER_DELAY_S``. The delay is
added here, by wrapping the engine's decode call (after the video is marked processing), so the production
worker carries no test hook.
"""

from __future__ import annotations

import os
import sys
import time

from models.engine import Grounder
from service.worker import main as worker_main

_encode_file = Grounder.encode_file


def _slow_encode_file(self, *args, **kwargs):
    time.sleep(float(os.environ["SLOW_WORKER_DELAY_S"]))
    return _encode_file(self, *args, **kwargs)


if __name__ == "__main__":
    Grounder.encode_file = _slow_encode_file  # type: ignore[method-assign]
    sys.exit(worker_main.main())
