"""The service's API or worker, keeping a ledger of the jobs it accepted and finished, outside Redis.

Run as ``python tests/ledger_service.py serve --host H --port P`` or ``python tests/ledger_service.py worker`` with
the service's environment plus ``LEDGER_DIR``. The failover test compares the ledgers with what clients saw: a
job the API accepted but no worker finished was lost, one finished twice was answered twice. The ledger is
written here, by wrapping the job store's ``submit`` and ``finish``, so the production code carries no hook.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from service.store.redis_jobs import RedisJobStore

_lock = threading.Lock()
_submit, _finish = RedisJobStore.submit, RedisJobStore.finish


def _write(line: str) -> None:
    path = Path(os.environ["LEDGER_DIR"]) / f"{os.getpid()}.log"
    with _lock, open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _ledger_submit(self, job, ttl_s, request_hash=None):
    record = _submit(self, job, ttl_s, request_hash)
    if record.job_id == job.job_id:  # queued now (a joined request returns the other job's record)
        _write(f"accepted {job.job_id}")
    return record


def _ledger_finish(self, consumer, outcomes, metrics=None, seconds=None):
    _finish(self, consumer, outcomes, metrics, seconds)
    for o in outcomes:  # the answer is stored and its waiters signalled: Redis acknowledged the script
        if o.delivery.job is not None:
            _write(f"finished {o.delivery.job.job_id} {consumer}")


def read_ledger(folder: Path) -> tuple[set[str], dict[str, int]]:
    """(job ids accepted by the API, how many times each job was finished)."""
    accepted: set[str] = set()
    finished: dict[str, int] = {}
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            kind, job_id, *_ = line.split()
            if kind == "accepted":
                accepted.add(job_id)
            else:
                finished[job_id] = finished.get(job_id, 0) + 1
    return accepted, finished


if __name__ == "__main__":
    RedisJobStore.submit = _ledger_submit  # type: ignore[method-assign]
    RedisJobStore.finish = _ledger_finish  # type: ignore[method-assign]
    from r2tuning.cli import main

    sys.exit(main(sys.argv[1:]))
