"""The worker process: owns the models and the device, takes jobs from the queues, runs the pipeline.

Run it with ``r2tuning worker`` (or ``python -m service.worker``). It loads the configured models once at start
(fetching missing weights with a progress bar when it can; when it cannot it keeps running and reports the
missing files in its heartbeat, which ``/readyz`` and every request for that model turn into a 503), then
loops: take jobs (its own queue first: jobs for videos whose state it holds; or take over jobs of a dead
worker), group them by video and model, and run :meth:`Pipeline.run` once per group, so queries on the same
video that arrive together are answered by one model call. A job that fails (a bad video) fails alone; anything
the worker survives it reports. SIGTERM/SIGINT: finish the jobs in hand, hand back its own queue, remove the
heartbeat, exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from models.allocator import keep_freed_blocks
from models.engine import Grounder
from service.contract.errors import Unavailable
from service.contract.metrics import JOBS_RECLAIMED, MetricsBatch
from service.contract.schemas import Job, JobKind, WorkerInfo
from service.contract.settings import Settings
from service.store.backend import Backend, open_backend
from service.store.jobs import Delivery, Outcome

from .fetch import FetchRunner
from .models import Models
from .pipeline import Pipeline
from .search import Searcher
from .training import TrainingRunner
from .webhooks import WebhookSender

log = logging.getLogger("service.worker")

_MODEL_RETRY_S = 60.0  # how often a worker retries loading models whose weights were missing
_IDLE_BLOCK_S = 1.0  # longest wait for a job before checking for shutdown and stale jobs
_SCRATCH_PREFIX = "r2-worker-"


def warm_decoder_server() -> None:
    """Start the forkserver the isolated decoders fork from, with the decoder preloaded, now.

    Preloading the decoder module (and with it torch) in the server makes each decoder child start at once
    instead of importing for seconds, and starting the server here takes its start-up off the first job.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["models.video"])
    multiprocessing.forkserver.ensure_running()


class Worker:
    """One worker: its models, its claim on running jobs and its heartbeat."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        # Blocking reads wait up to _IDLE_BLOCK_S, so the socket timeout must be longer than that.
        self.backend = backend or open_backend(settings, read_timeout_s=max(settings.redis_timeout_s, 10.0))
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.models = Models(settings)
        self.started_at = time.time()
        self.scratch_root = Path(settings.upload_dir or tempfile.gettempdir())
        self.scratch = self.scratch_root / f"{_SCRATCH_PREFIX}{self.worker_id}"
        self.pipeline = Pipeline(settings, self.backend, self.models, self.worker_id, self.scratch)
        self.searcher = Searcher(settings, self.backend, self.models)
        self.training = TrainingRunner(settings, self.backend, self.models, self.worker_id, announce=self.beat)
        self.fetches = FetchRunner(settings, self.backend, self.worker_id, self.scratch)
        self.webhooks = WebhookSender(settings, self.backend.jobs, self.backend.records)
        self._stop = threading.Event()
        self._beat_stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, Delivery] = {}
        self._last_reclaim = 0.0
        self._last_model_retry = 0.0
        self._last_sweep = 0.0
        self._beat_thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ start / stop

    def start(self) -> None:
        """Announce the worker (heartbeat thread, own queue), start the decoder server, then load the models."""
        with contextlib.suppress(Exception):  # Redis may not answer yet: sweeping is only housekeeping
            live = {w.worker_id for w in self.backend.records.live_workers()}
            sweep_scratch(self.scratch_root, live | {self.worker_id}, self.settings.heartbeat_ttl_s)
        self.scratch.mkdir(parents=True, exist_ok=True)
        warm_decoder_server()
        self._beat_thread = threading.Thread(target=self._beat_loop, name="r2-heartbeat", daemon=True)
        self._beat_thread.start()
        self.backend.jobs.open(self.worker_id)
        if self.settings.fetch_allowlist:  # without it no callback can be registered
            self.webhooks.start()
        self.models.load()
        keep_freed_blocks()  # from now on a query's blocks stay in the heap for the next (2x on long videos)
        self._last_model_retry = time.monotonic()
        self.beat()

    def stop(self) -> None:
        """Ask the loop to finish the jobs in hand and return."""
        self._stop.set()
        wake = getattr(self.backend.jobs, "wake", None)
        if wake is not None:
            wake()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a training in hand checkpoints and goes back to the queue
            self.training.shutdown()
        self.webhooks.stop()
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(5)
        with contextlib.suppress(Exception):
            self.backend.jobs.close(self.worker_id)
        with contextlib.suppress(Exception):
            self.backend.records.remove_worker(self.worker_id)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def run(self) -> None:
        """Start, then take and run jobs until :meth:`stop`."""
        self.start()
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                    failures = 0
                except Exception as err:  # Redis down or similar: keep the process, back off
                    failures += 1
                    wait = min(5.0, 0.2 * 2**failures)
                    log.warning("worker loop error (%s: %s); retrying in %.1f s", type(err).__name__, err, wait)
                    self._stop.wait(wait)
        finally:
            self.close()

    # ------------------------------------------------------------------------------------------------ heartbeat

    def info(self) -> WorkerInfo:
        with self._lock:
            running = [d.job.job_id for d in [*self._in_flight.values(), *self.training.in_hand()]
                       if d.job is not None]
        return WorkerInfo(worker_id=self.worker_id, host=socket.gethostname(), pid=os.getpid(),
                          device=self.models.device, started_at=self.started_at, seen_at=time.time(),
                          models=dict(self.models.status), running=running)

    def beat(self) -> None:
        """Refresh the heartbeat key and the claims on the jobs in hand (so nobody takes them over)."""
        with self._lock:
            in_hand = list(self._in_flight.values())
        self.backend.jobs.extend(self.worker_id, in_hand + self.training.in_hand())
        self.backend.records.heartbeat(self.info(), self.settings.heartbeat_ttl_s)

    def _beat_loop(self) -> None:
        while True:
            try:
                self.beat()
            except Exception as err:
                log.warning("heartbeat failed: %s", err)
            if self._beat_stop.wait(self.settings.heartbeat_interval_s):
                return

    # ------------------------------------------------------------------------------------------------ the loop

    def step(self) -> int:
        """Take the next jobs and run them; returns how many queue entries were handled.

        A worker keeps only what it runs next, so idle workers elsewhere get the rest: the first job, and if
        it is light (its video's state or features are at hand), every light job that arrived with it
        (answered in one model call per video); heavy jobs taken along (videos to decode) are given back at
        once. Only when several jobs were waiting does it wait ``batch_window_ms`` for more to join them.
        """
        s = self.settings
        jobs = self.backend.jobs
        deliveries: list[Delivery] = []
        self.training.poll()  # a training runs in its own process: this only moves it forward
        now = time.monotonic()
        if now - self._last_reclaim >= min(s.heartbeat_interval_s, s.visibility_timeout_s / 2):
            self._last_reclaim = now
            deliveries = jobs.reclaim(self.worker_id, s.visibility_timeout_s, 1)
            if deliveries:
                log.warning("took over job %s from a worker that stopped", deliveries[0].entry_id)
                self.backend.records.add_metrics({JOBS_RECLAIMED: float(len(deliveries))})
        if not deliveries:
            deliveries = self._take(s.batch_size)
        if not deliveries:
            if self.backend.cold is not None and now - self._last_sweep >= s.cold_sweep_interval_s:
                self._last_sweep = now
                self.sweep_cold()
            if now - self._last_model_retry > _MODEL_RETRY_S:
                if self.models.complete:
                    self.models.discover_trained()  # models other workers trained since
                else:
                    self.models.load([n for n in s.models if not self.models.status[n].loaded])
                self._last_model_retry = time.monotonic()
            return 0
        with self._holding(deliveries):
            self.handle(deliveries)
        return len(deliveries)

    def _take(self, count: int) -> list[Delivery]:
        jobs = self.backend.jobs
        taken = jobs.take(self.worker_id, count, _IDLE_BLOCK_S)
        if len(taken) > 1 and self.settings.batch_window_ms > 0 and count > len(taken):
            time.sleep(self.settings.batch_window_ms / 1000)  # others are arriving: let them join this batch
            taken += jobs.take(self.worker_id, count - len(taken), 0)
        if not taken or count == 1:
            return taken
        if self.heavy(taken[0]):
            keep, give_back = taken[:1], taken[1:]
        else:
            keep, give_back = [], []
            for d in taken:
                (give_back if self.heavy(d) else keep).append(d)
        jobs.release(give_back)
        return keep

    def sweep_cold(self) -> int:
        """Remove the cold tier's videos unused for longer than their lifetime (their Redis records expired
        with it; a tenth more covers touches that lag and clocks that differ)."""
        assert self.backend.cold is not None
        removed = self.backend.cold.sweep(self.settings.video_ttl_s * 1.1)
        if removed:
            log.info("removed %d expired videos from the cold tier", removed)
        return removed

    def heavy(self, delivery: Delivery) -> bool:
        """Whether the job needs a video decoded (neither its state nor its features are at hand)."""
        job = delivery.job
        if job is None or job.kind in (JobKind.train, JobKind.search):
            return False  # dropped at once; a training runs in its own process; a search reads features only
        if job.kind == JobKind.fetch:
            return True  # a download
        grounder = self._grounder(job)
        if grounder is None:
            return False  # fails at once
        if grounder.holds(f"{job.video_id}:{grounder.feature_id}"):
            return False
        return not self.backend.features.exists(job.video_id, grounder.feature_id)

    def answered_at_once(self, delivery: Delivery) -> bool:
        """Whether the job is a query on a video whose adapter state this worker holds, handed out for the first
        time: it is answered in milliseconds, so it is not marked processing first (a round trip on every warm
        query). A job handed out before goes through ``begin``: it may be what stopped the last worker."""
        job = delivery.job
        if job is None or job.kind != JobKind.ground or delivery.attempts != 1:
            return False
        grounder = self._grounder(job)
        return grounder is not None and grounder.holds(f"{job.video_id}:{grounder.feature_id}")

    def _grounder(self, job: Job) -> Grounder | None:
        """The job's model with its frame pipeline, or None when it cannot be had (the job fails when it runs)."""
        try:
            return self.models.get(job.model, job.preprocess)
        except Exception:
            return None

    @contextlib.contextmanager
    def _holding(self, deliveries: list[Delivery]) -> Iterator[None]:
        with self._lock:
            self._in_flight.update({d.entry_id: d for d in deliveries})
        try:
            yield
        finally:
            with self._lock:
                for d in deliveries:
                    self._in_flight.pop(d.entry_id, None)

    def handle(self, deliveries: list[Delivery]) -> None:
        """Mark the jobs processing, drop what cannot run, then run one pipeline per (video, model, frame
        pipeline)."""
        jobs = self.backend.jobs
        groups: dict[tuple[str, str, str | None], list[Delivery]] = defaultdict(list)
        dropped: list[Outcome] = []
        fetches: list[Delivery] = []
        searches: list[Delivery] = []
        metrics = MetricsBatch()
        to_begin = [d for d in deliveries if not self.answered_at_once(d)]
        begun = dict(zip((d.entry_id for d in to_begin), jobs.begin(self.worker_id, to_begin) if to_begin else [],
                         strict=True))
        for d in deliveries:
            attempts = begun.get(d.entry_id, d.attempts)
            if d.job is None or attempts == 0:  # not a job, or its record expired: nobody waits for it
                dropped.append(Outcome(d))
            elif d.job.kind == JobKind.train and attempts <= self.settings.job_max_attempts:
                self.training.accept(d)  # runs in its own process; the runner finishes it
            elif d.job.kind == JobKind.fetch and attempts <= self.settings.job_max_attempts:
                fetches.append(d)
            elif attempts > self.settings.job_max_attempts:
                err = Unavailable(
                    f"job {d.job.job_id} was given up after {attempts - 1} attempts: each time the worker running "
                    "it stopped (crash, out of memory or killed); see the worker logs", code="job_attempts_exhausted")
                dropped += self.pipeline.failed([d], err, metrics)
            elif d.job.kind == JobKind.search:
                searches.append(d)
            else:
                groups[(d.job.video_id, d.job.model, d.job.preprocess)].append(d)
        if dropped:
            jobs.finish(self.worker_id, dropped, metrics.values)
        for d in fetches:
            self.fetches.run(d)  # downloads, stores the video and queues its encoding, finishes the job
        for d in searches:
            self.search(d)
        for (video_id, model, preprocess), group in groups.items():
            self.pipeline.run(video_id, model, group, preprocess=preprocess)

    def search(self, delivery: Delivery) -> None:
        """One library search job: its answer, or its failure, stored in one step."""
        assert delivery.job is not None
        started, metrics = time.perf_counter(), MetricsBatch()
        try:
            outcomes = [Outcome(delivery, result=self.searcher.run(delivery.job))]
            metrics.inc("r2_jobs_total", kind=JobKind.search.value, outcome="ready")
        except Exception as err:
            outcomes = self.pipeline.failed([delivery], err, metrics)
        self.backend.jobs.finish(self.worker_id, outcomes, metrics.values,
                                 {"search": round(time.perf_counter() - started, 4)})


def sweep_scratch(root: Path, live_ids: set[str], min_age_s: float) -> int:
    """Remove scratch folders that killed workers left behind: not of a live worker, and older than
    ``min_age_s`` (a worker starting right now has a folder before its first heartbeat)."""
    removed = 0
    for folder in root.glob(f"{_SCRATCH_PREFIX}*"):
        stale = time.time() - folder.stat().st_mtime >= min_age_s
        if folder.is_dir() and stale and folder.name[len(_SCRATCH_PREFIX):] not in live_ids:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
