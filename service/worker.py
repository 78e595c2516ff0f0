"""The worker process: owns the models and the device, takes jobs from the queue, runs the pipeline.

Run it with ``python -m service.worker`` or ``r2tuning worker``. It loads the configured models once at
start (fetching missing weights with a progress bar when it can; when it cannot it keeps running and reports
the missing files in its heartbeat, which ``/readyz`` and every request for that model turn into a 503), then
loops: take jobs (or take over jobs of a dead worker), group them by video and model, and run
:meth:`Worker.run_pipeline` once per group, so queries on the same video that arrive together are answered
by one model call. A job that fails (a bad video) fails alone; anything the worker survives it reports.
SIGTERM/SIGINT: finish the jobs in hand, acknowledge them, remove the heartbeat, exit 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from models import zoo
from models.engine import Grounder, GroundingResult
from models.postprocess import select_moments
from models.video import VideoError, VideoInfo

from .backend import Backend, open_backend
from .chunks import CachedFeatures
from .cli import NO_REDIS
from .errors import NotFound, Unavailable, classify
from .metrics import (
    ADAPTER_HITS,
    BATCH_SIZE,
    CACHE_HITS,
    CACHE_MISSES,
    JOB_SECONDS,
    JOBS_RECLAIMED,
    MetricsBatch,
    sample,
)
from .queue import Delivery
from .schemas import Job, JobKind, Mode, Status, WorkerInfo, WorkerModel
from .settings import Settings, configure_logging, get_settings

log = logging.getLogger("service.worker")

_PROGRESS_EVERY_S = 0.5  # how often encoding progress is written to the video record
_MODEL_RETRY_S = 60.0  # how often a worker retries loading models whose weights were missing
_IDLE_BLOCK_S = 1.0  # longest wait for a job before checking for shutdown and stale jobs


def warm_decoder_server() -> None:
    """Start the forkserver the isolated decoders fork from, with this module preloaded, now.

    Each decoder child re-runs the parent's main module (``python -m service.worker``); preloading it (and with
    it torch, the decoders and open_clip) in the server makes that instant instead of seconds per video, and
    starting the server at worker start takes its own start-up off the first job.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["models.video", "service.worker"])
    multiprocessing.forkserver.ensure_running()


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(setting: str, device: str) -> str:
    if setting != "auto":
        return setting
    return "fp16" if device.startswith("cuda") else "fp32"


class Stages:
    """Seconds spent per pipeline stage (decode, encode, ground)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started


def features_to_tensor(cached: CachedFeatures) -> torch.Tensor:
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[cached.dtype]
    return torch.frombuffer(bytearray(cached.data), dtype=dtype).reshape(cached.shape)  # (K, T, P, C)


def tensor_to_features(features: torch.Tensor, info: VideoInfo) -> CachedFeatures:
    array = features.contiguous().cpu().numpy()  # (K, T, P, C) float16
    return CachedFeatures(str(array.dtype), tuple(array.shape), array.tobytes(), dataclasses.asdict(info))


class Worker:
    """One worker: its models, its claim on running jobs and its heartbeat."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        # Blocking reads wait up to _IDLE_BLOCK_S, so the socket timeout must be longer than that.
        self.backend = backend or open_backend(settings, read_timeout_s=max(settings.redis_timeout_s, 10.0))
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.device = resolve_device(settings.device)
        self.precision = resolve_precision(settings.precision, self.device)
        self.grounders: dict[str, Grounder] = {}
        self.model_status: dict[str, WorkerModel] = {
            name: WorkerModel(loaded=False, loading=True, message="the worker is loading this model")
            for name in settings.models}
        self.started_at = time.time()
        self.scratch = Path(settings.upload_dir or tempfile.gettempdir()) / f"r2-worker-{self.worker_id}"
        self._stop = threading.Event()
        self._beat_stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: dict[str, Delivery] = {}
        self._last_reclaim = 0.0
        self._last_model_retry = 0.0
        self._beat_thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ start / stop

    def load_models(self, names: Sequence[str] | None = None) -> None:
        """Load (fetching weights when allowed) each configured model; failures are reported, not raised."""
        if self.settings.registry_file is not None:
            zoo.load_registry_file(self.settings.registry_file, overwrite=True)
        for name in names or self.settings.models:
            spec = zoo.get_model(name)  # an unknown configured model is a configuration error: raise
            failures: list[BaseException] = []
            for fetch in (zoo.ensure_checkpoint, zoo.ensure_clip_weights):  # both, to report every missing file
                try:
                    fetch(spec, download=self.settings.download_weights, progress=True)
                except Exception as err:  # missing/corrupt weights, no network: keep running, report it
                    failures.append(err)
            grounder = None
            if not failures:
                try:
                    grounder = Grounder.from_spec(spec, device=self.device,  # type: ignore[arg-type]
                                                  precision=self.precision, download=False)
                except Exception as err:
                    failures.append(err)
            if grounder is None:
                message = "\n".join(classify(err)[2] for err in failures)
                missing = [f for err in failures for f in self._missing(spec, err)]
                log.error("model %s is not available: %s", name, message)
                self.model_status[name] = WorkerModel(loaded=False, missing_files=list(dict.fromkeys(missing)),
                                                      message=message)
                continue
            self.grounders[name] = grounder
            self.model_status[name] = WorkerModel(loaded=True, feature_id=grounder.feature_id)
            log.info("model %s loaded on %s (%s), feature id %s", name, self.device, self.precision,
                     grounder.feature_id)
        self._last_model_retry = time.monotonic()

    @staticmethod
    def _missing(spec: zoo.ModelSpec, err: BaseException) -> list[str]:
        try:
            found = zoo.missing_files(spec)
        except Exception:
            found = []
        if not found and isinstance(err, zoo.WeightsUnavailableError):
            found = [str(Path(err.target_dir) / name) for name in err.missing]
        return found

    def start(self) -> None:
        """Announce the worker (heartbeat thread), start the decoder server, then load the models."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        warm_decoder_server()
        self._beat_thread = threading.Thread(target=self._beat_loop, name="r2-heartbeat", daemon=True)
        self._beat_thread.start()
        self.load_models()
        self.beat()

    def stop(self) -> None:
        """Ask the loop to finish the jobs in hand and return."""
        self._stop.set()
        wake = getattr(self.backend.queue, "wake", None)
        if wake is not None:
            wake()

    def close(self) -> None:
        self._beat_stop.set()
        if self._beat_thread is not None:
            self._beat_thread.join(5)
        with contextlib.suppress(Exception):
            self.backend.state.remove_worker(self.worker_id)
        with contextlib.suppress(OSError):
            for path in self.scratch.glob("*"):
                path.unlink()
            self.scratch.rmdir()

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
            running = [d.job.job_id for d in self._in_flight.values() if d.job is not None]
        return WorkerInfo(worker_id=self.worker_id, host=socket.gethostname(), pid=os.getpid(), device=self.device,
                          started_at=self.started_at, seen_at=time.time(), models=dict(self.model_status),
                          running=running)

    def beat(self) -> None:
        """Refresh the heartbeat key and the claims on the jobs in hand (so nobody takes them over)."""
        with self._lock:
            entries = list(self._in_flight)
        self.backend.queue.extend(self.worker_id, entries)
        self.backend.state.heartbeat(self.info(), self.settings.heartbeat_ttl_s)

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
        it is light (its video's features are cached), every light job that arrived with it (answered in one
        model call per video); heavy jobs taken along (videos to decode) are given back at once.
        """
        s = self.settings
        queue = self.backend.queue
        deliveries: list[Delivery] = []
        now = time.monotonic()
        if now - self._last_reclaim >= min(s.heartbeat_interval_s, s.visibility_timeout_s / 2):
            self._last_reclaim = now
            deliveries = queue.reclaim(self.worker_id, s.visibility_timeout_s, 1)
            if deliveries:
                log.warning("took over job %s from a worker that stopped", deliveries[0].entry_id)
                self.backend.state.add_metrics({JOBS_RECLAIMED: float(len(deliveries))})
        if not deliveries:
            deliveries = queue.take(self.worker_id, 1, _IDLE_BLOCK_S)
            if deliveries and s.batch_size > 1 and not self.heavy(deliveries[0]):
                if s.batch_window_ms > 0:
                    time.sleep(s.batch_window_ms / 1000)  # let queries sent together arrive together
                more = [(d, self.heavy(d)) for d in queue.take(self.worker_id, s.batch_size - 1, 0)]
                queue.release([d for d, heavy in more if heavy])
                deliveries += [d for d, heavy in more if not heavy]
        if not deliveries:
            if self.model_status and not all(m.loaded for m in self.model_status.values()) \
                    and now - self._last_model_retry > _MODEL_RETRY_S:
                self.load_models([n for n, m in self.model_status.items() if not m.loaded])
            return 0
        with self._holding(deliveries):
            self.handle(deliveries)
        return len(deliveries)

    def heavy(self, delivery: Delivery) -> bool:
        """Whether the job needs a video decoded (its features for this model are not cached)."""
        job = delivery.job
        if job is None or job.model not in self.grounders:
            return False  # fails or is dropped at once
        feature_id = self.grounders[job.model].feature_id
        return not self.backend.features.store.exists(self.backend.keys.features(job.video_id, feature_id))

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
        """Count attempts, drop what cannot run, then run one pipeline per (video, model)."""
        state, queue = self.backend.state, self.backend.queue
        groups: dict[tuple[str, str], list[Delivery]] = defaultdict(list)
        for d in deliveries:
            if d.job is None:  # not a job payload: nothing can ever run it
                queue.ack(d.entry_id)
                continue
            attempts = state.count_attempt(d.job.job_id)
            if attempts == 0:  # its record expired: nobody waits for the answer
                queue.ack(d.entry_id)
                continue
            if attempts > self.settings.job_max_attempts:
                self.fail([d], Unavailable(
                    f"job {d.job.job_id} was given up after {attempts - 1} attempts: each time the worker running "
                    "it stopped (crash, out of memory or killed); see the worker logs", code="job_attempts_exhausted"))
                continue
            groups[(d.job.video_id, d.job.model)].append(d)
        for (video_id, model), group in groups.items():
            self.run_pipeline(video_id, model, group)

    # ------------------------------------------------------------------------------------------------ the pipeline

    def run_pipeline(self, video_id: str, model: str, deliveries: list[Delivery]) -> None:
        """Every step a batch of jobs on one video goes through, in order.

        0. the model, loaded once at start; 1. feature cache lookup; on a miss 2. fetch the uploaded bytes,
        3. decode (child process, time-limited) and 4. CLIP-encode, 5. store the features; then
        6. the adapter (query-independent state from the in-memory LRU) and 7. post-processing, one model call
        for all queries; 8. respond: store each job's answer and acknowledge it.
        """
        jobs = [d.job for d in deliveries if d.job is not None]
        stages, metrics = Stages(), MetricsBatch()
        try:
            self._set_jobs(jobs, status=Status.processing, worker=self.worker_id)
            grounder = self.grounder(model)                                                   # 0
            info, features = self.cache_lookup(video_id, grounder, metrics)                   # 1
            if features is None:
                path = self.fetch_video(video_id)                                             # 2
                try:
                    info, features = self.decode_and_encode(path, video_id, grounder, stages)  # 3, 4
                finally:
                    path.unlink(missing_ok=True)
                self.store(video_id, grounder, info, features)                                # 5
            self.video_ready(video_id, model, grounder, info, features)
            answers = self.answer(video_id, grounder, info, features, jobs, stages, metrics)  # 6, 7
            self.respond(deliveries, answers, stages, metrics)                                # 8
        except Exception as err:
            self.fail(deliveries, err, stages, metrics)
        finally:
            for stage, seconds in stages.seconds.items():
                metrics.observe(JOB_SECONDS, seconds, stage=stage)
            with contextlib.suppress(Exception):
                self.backend.state.add_metrics(metrics.values)

    def grounder(self, model: str) -> Grounder:
        if model in self.grounders:
            return self.grounders[model]
        status = self.model_status.get(model)
        if status is None:
            raise Unavailable(f"this worker does not serve model {model!r}", code="model_not_loaded")
        code = "weights_missing" if status.missing_files else "model_unavailable"
        raise Unavailable(status.message or f"model {model!r} is not loaded", code=code)

    def cache_lookup(self, video_id: str, grounder: Grounder,
                     metrics: MetricsBatch) -> tuple[VideoInfo | None, torch.Tensor | None]:
        cached = self.backend.features.get(video_id, grounder.feature_id)
        if cached is None:
            metrics.inc(CACHE_MISSES)
            return None, None
        metrics.inc(CACHE_HITS)
        return VideoInfo(**cached.video), features_to_tensor(cached)

    def fetch_video(self, video_id: str) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = self.scratch / f"{video_id}-{uuid.uuid4().hex[:8]}.video"
        if not self.backend.videos.fetch_to(video_id, path):
            path.unlink(missing_ok=True)
            self.backend.state.delete_video(video_id)
            raise NotFound(f"the uploaded bytes of video {video_id} expired or were deleted; upload it again",
                           code="video_gone")
        return path

    def decode_and_encode(self, path: Path, video_id: str, grounder: Grounder,
                          stages: Stages) -> tuple[VideoInfo, torch.Tensor]:
        """Decode in a killable child process while encoding the chunks that already arrived."""
        s, state = self.settings, self.backend.state
        record = state.get_video(video_id)
        track = record is not None and record.model == grounder.spec.name  # the upload's own encoding
        if track:
            state.update_video(video_id, status=Status.processing, progress=0.0)
        if s.test_job_delay_s:  # TEST ONLY (R2_TEST_JOB_DELAY_S): a window to kill the worker mid-job
            time.sleep(s.test_job_delay_s)
        last_report = time.monotonic()

        def report(fraction: float) -> None:
            nonlocal last_report
            if track and time.monotonic() - last_report >= _PROGRESS_EVERY_S:
                last_report = time.monotonic()
                state.update_video(video_id, progress=min(0.99, fraction))

        return grounder.encode_file(path, timeout_s=s.decode_timeout_s, max_duration=s.max_duration_s,
                                    max_pixels=s.max_pixels, progress=report, stage=stages)

    def store(self, video_id: str, grounder: Grounder, info: VideoInfo, features: torch.Tensor) -> None:
        self.backend.features.put(video_id, grounder.feature_id, tensor_to_features(features, info))

    def video_ready(self, video_id: str, model: str, grounder: Grounder, info: VideoInfo | None,
                    features: torch.Tensor) -> None:
        """The upload's record turns ready once it has the features of the model it was uploaded for."""
        record = self.backend.state.get_video(video_id)
        if record is None or record.model != model or info is None:
            return
        if record.status != Status.ready:
            self.backend.state.update_video(video_id, status=Status.ready, progress=1.0, duration=info.duration,
                                            num_clips=int(features.shape[1]), clip_seconds=1.0 / grounder.spec.fps,
                                            error_code=None, error_message=None, error_status=None)
        self.backend.state.touch_video(video_id, self.settings.video_ttl_s)
        self.backend.videos.touch(video_id)

    def answer(self, video_id: str, grounder: Grounder, info: VideoInfo | None, features: torch.Tensor,
               jobs: list[Job], stages: Stages, metrics: MetricsBatch) -> dict[str, dict[str, Any]]:
        """One model call per NMS setting for all ground jobs of the batch; each job gets its own cut."""
        answers: dict[str, dict[str, Any]] = {}
        by_nms: dict[float | None, list[Job]] = defaultdict(list)
        for job in jobs:
            if job.kind == JobKind.ground:
                by_nms[job.nms_thres].append(job)
        for nms_thres, group in by_nms.items():
            queries = list(dict.fromkeys(q for job in group for q in job.queries))
            hits_before = grounder.stats.get("video_state_hits", 0)
            with stages("ground"):
                results = grounder.ground(features, queries, video_key=f"{video_id}:{grounder.feature_id}",
                                          duration=info.duration if info else None, top_k=None,
                                          nms_thres=nms_thres, min_score=None)
            metrics.observe(BATCH_SIZE, len(queries))
            if grounder.stats.get("video_state_hits", 0) > hits_before:
                metrics.inc(ADAPTER_HITS)
            by_query = dict(zip(queries, results, strict=True))
            for job in group:
                answers[job.job_id] = format_answer(job, [by_query[q] for q in job.queries], grounder)
        return answers

    def respond(self, deliveries: list[Delivery], answers: dict[str, dict[str, Any]], stages: Stages,
                metrics: MetricsBatch) -> None:
        seconds = {k: round(v, 4) for k, v in stages.seconds.items()}
        for d in deliveries:
            assert d.job is not None
            self.backend.state.update_job(d.job.job_id, status=Status.ready, result=answers.get(d.job.job_id),
                                          worker=self.worker_id, seconds=seconds)
            self.backend.queue.ack(d.entry_id)
            metrics.inc("r2_jobs_total", kind=d.job.kind.value, outcome="ready")

    def fail(self, deliveries: list[Delivery], err: BaseException, stages: Stages | None = None,
             metrics: MetricsBatch | None = None) -> None:
        """Each job of the group ends ``failed`` with the reason; a bad video also marks the video failed."""
        status, code, message = classify(err)
        if status >= 500 and not isinstance(err, Unavailable):
            log.exception("job failed unexpectedly", exc_info=err)
        else:
            log.warning("job failed: %s (%s)", message, code)
        state = self.backend.state
        for d in deliveries:
            assert d.job is not None
            state.update_job(d.job.job_id, status=Status.failed, error_code=code, error_message=message,
                             error_status=status, worker=self.worker_id,
                             seconds={k: round(v, 4) for k, v in (stages.seconds if stages else {}).items()})
            record = state.get_video(d.job.video_id)
            if record is not None and (isinstance(err, VideoError) or
                                       (d.job.kind == JobKind.encode and record.model == d.job.model)):
                state.update_video(d.job.video_id, status=Status.failed, error_code=code, error_message=message,
                                   error_status=status)
            self.backend.queue.ack(d.entry_id)
            if metrics is not None:
                metrics.inc("r2_jobs_total", kind=d.job.kind.value, outcome="failed")
            else:
                state.add_metrics({sample("r2_jobs_total", kind=d.job.kind.value, outcome="failed"): 1.0})

    def _set_jobs(self, jobs: list[Job], **fields: Any) -> None:
        for job in jobs:
            self.backend.state.update_job(job.job_id, **fields)


def format_answer(job: Job, results: list[GroundingResult], grounder: Grounder) -> dict[str, Any]:
    """A job's answer in the shape of its response body (without video_id/model, which the API adds)."""
    if job.mode == Mode.moments:
        return {"results": [
            {"query": r.query, "clip_seconds": r.clip_seconds, "duration": r.duration, "saliency": r.saliency,
             "moments": [{"start": s, "end": e, "score": c}
                         for s, e, c in select_moments(r.moments, job.top_k, job.min_score)]}
            for r in results]}
    (result,) = results
    if job.mode == Mode.highlights:
        clips = [(i * result.clip_seconds, min((i + 1) * result.clip_seconds, result.duration), v)
                 for i, v in enumerate(result.saliency) if i * result.clip_seconds < result.duration]
        best = sorted(clips, key=lambda c: -c[2])[: job.top_k or 5]
        return {"query": result.query, "clip_seconds": result.clip_seconds, "duration": result.duration,
                "saliency": result.saliency,
                "highlights": [{"start": s, "end": e, "score": c} for s, e, c in best]}
    segments = grounder.summarize(result, job.budget or 0.15)
    return {"query": result.query, "budget": job.budget, "duration": result.duration,
            "segments": [{"start": s, "end": e, "score": c} for s, e, c in segments]}


# ---------------------------------------------------------------------------------------------------- embedded


class BackgroundWorker:
    """Embedded mode: a worker on a thread of the API process, sharing its in-memory backend."""

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


# ---------------------------------------------------------------------------------------------------- main


def main(settings: Settings | None = None) -> int:
    """``python -m service.worker``: run a worker until SIGTERM/SIGINT."""
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
    log.info("worker %s starting (device %s, models %s)", worker.worker_id, worker.device,
             ", ".join(settings.models))
    try:
        worker.run()
    finally:
        worker.backend.close()
    log.info("worker %s stopped", worker.worker_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
