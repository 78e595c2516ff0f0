"""Training jobs on a worker: at most one at a time, in a separate process, never in the way of queries.

A train job goes through three steps, none of which blocks the worker's loop for more than a moment:

1. **prepare** (a thread of the worker): read the annotations, take every video's features from the feature
   cache (they were encoded on upload, for the base model), write them and the query features (the base
   model's text tower) into ``<training dir>/<name>/<job id>/data`` in the official layout;
2. **train** (a child process with ``R2_TRAIN_THREADS`` CPU threads): :func:`models.training.run.run_training`
   with the official preset of the dataset, limited to ``R2_TRAIN_MAX_EPOCHS`` epochs and ``R2_TRAIN_MAX_SECONDS``
   (it stops itself with a checkpoint and the model so far); its resident memory is watched and it is stopped past
   ``R2_TRAIN_MAX_MEMORY_BYTES``; progress goes into the job record;
3. **serve**: the trained model is registered (``<training dir>/<name>/model.json``) and loaded by this worker, so
   the next query can use it; other workers load it from the same folder when a job names it.

The worker's loop calls :meth:`TrainingRunner.poll` between batches. A second train job taken while one runs
waits in the worker's hands (its claim kept fresh) until the first ends. If the worker dies, its claim lapses,
another worker takes the job over and resumes from the checkpoint in the training folder (when that folder is
shared); if it stops cleanly the training checkpoints and the job goes back to the queue.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue as queue_module
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from models import zoo
from models.datasets import AnnotationError, AnnotationSet, parse_annotations
from models.engine import Grounder
from models.training.run import write_registry_entry
from service.contract.errors import Conflict, InvalidRequest, ServiceError, classify
from service.contract.metrics import MetricsBatch
from service.contract.schemas import TrainRequest
from service.contract.settings import Settings
from service.store.backend import Backend
from service.store.jobs import Delivery, Outcome

from .models import Models

log = logging.getLogger("service.worker")

_UPDATE_EVERY_S = 1.0  # how often progress is written to the job record
_KILL_GRACE_S = 60.0  # past the time limit, how long a training that did not stop by itself is given
_STOP_WAIT_S = 30.0  # on shutdown, how long to wait for the training to write its checkpoint
_TEXT_BATCH = 64
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")  # ids that become file names in the training folder


def training_root(settings: Settings) -> Path:
    return Path(settings.training_dir) if settings.training_dir else zoo.checkpoint_dir() / "trained"


@dataclass
class _Run:
    delivery: Delivery
    request: TrainRequest
    work_dir: Path
    started: float = field(default_factory=time.monotonic)
    stage: str = "features"
    detail: dict[str, Any] = field(default_factory=dict)
    progress: float = 0.0
    prepared: threading.Thread | None = None
    prepare_error: BaseException | None = None
    process: Any = None
    channel: Any = None
    stop: Any = None
    finished: tuple[str, dict[str, Any]] | None = None
    last_update: float = 0.0

    @property
    def job_id(self) -> str:
        assert self.delivery.job is not None
        return self.delivery.job.job_id

    @property
    def name(self) -> str:
        assert self.delivery.job is not None
        return self.delivery.job.model

    @property
    def base(self) -> str:
        assert self.delivery.job is not None
        return self.delivery.job.video_id  # train jobs carry the base model there


class TrainingRunner:
    """The training jobs of one worker."""

    def __init__(self, settings: Settings, backend: Backend, models: Models, consumer: str,
                 announce: Callable[[], None] | None = None) -> None:
        self.settings, self.backend, self.models, self.consumer = settings, backend, models, consumer
        self.announce = announce  # refreshes the worker's heartbeat (so a trained model is listed before ready)
        self.root = training_root(settings)
        self._backlog: deque[Delivery] = deque()
        self._run: _Run | None = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._run is not None

    def in_hand(self) -> list[Delivery]:
        """Train jobs this worker holds (running or waiting): the worker keeps their claims fresh."""
        with self._lock:
            running = [self._run.delivery] if self._run is not None else []
            return running + list(self._backlog)

    def accept(self, delivery: Delivery) -> None:
        """Take a begun train job: run it now, or after the one running."""
        with self._lock:
            self._backlog.append(delivery)
        self.poll()

    # ------------------------------------------------------------------------------------------------ the steps

    def poll(self) -> None:
        """Move the running job forward (called by the worker's loop between batches); start the next one."""
        run = self._run
        if run is None:
            with self._lock:
                if not self._backlog:
                    return
                delivery = self._backlog.popleft()
            self._start(delivery)
            return
        try:
            self._advance(run)
        except Exception as err:  # anything unexpected fails this job, never the worker
            self._kill(run)
            self._finish(run, error=err)

    def _start(self, delivery: Delivery) -> None:
        job = delivery.job
        assert job is not None
        if job.train is None:
            self._fail_now(delivery, InvalidRequest("a train job without its request", code="invalid_request"))
            return
        run = _Run(delivery=delivery, request=job.train, work_dir=self.root / job.model / job.job_id)
        self._run = run
        self._update(run, force=True)
        run.prepared = threading.Thread(target=self._prepare_thread, args=(run,), name="r2-train-prepare",
                                        daemon=True)
        run.prepared.start()

    def _advance(self, run: _Run) -> None:
        if run.process is None:  # still preparing
            assert run.prepared is not None
            if run.prepared.is_alive():
                self._update(run)
                return
            if run.prepare_error is not None:
                self._finish(run, error=run.prepare_error)
                return
            self._spawn(run)
            return
        self._drain(run)
        if run.finished is not None or not run.process.is_alive():
            run.process.join(5)
            self._drain(run)
            if run.finished is None:
                code = run.process.exitcode
                self._finish(run, error=ServiceError(
                    f"the training process exited with status {code} before reporting a result (killed by the "
                    "system, e.g. out of memory?)", code="training_crashed"))
                return
            kind, payload = run.finished
            if kind == "done":
                self._finish(run, result=payload)
            else:
                self._finish(run, error=ServiceError(payload["message"], code=payload["code"],
                                                     status=payload["status"]))
            return
        rss = _tree_rss(run.process.pid)
        if rss > self.settings.train_max_memory_bytes:
            self._kill(run)
            self._finish(run, error=InvalidRequest(
                f"the training used {rss / 2**20:.0f} MiB, more than R2_TRAIN_MAX_MEMORY_BYTES "
                f"({self.settings.train_max_memory_bytes / 2**20:.0f} MiB); use a smaller batch_size or fewer "
                "videos", code="training_memory_limit"))
            return
        if time.monotonic() - run.started > self.settings.train_max_seconds + _KILL_GRACE_S:
            self._kill(run)
            self._finish(run, error=ServiceError(
                f"the training did not stop within R2_TRAIN_MAX_SECONDS ({self.settings.train_max_seconds:g} s) "
                f"+ {_KILL_GRACE_S:g} s and was stopped", code="training_timeout", status=504))
            return
        self._update(run)

    # ------------------------------------------------------------------------------------------------ prepare

    def _prepare_thread(self, run: _Run) -> None:
        try:
            self._prepare(run)
        except BaseException as err:  # reported by poll() in the loop's thread
            run.prepare_error = err

    def _prepare(self, run: _Run) -> None:
        """Write the annotations and the features of every video and query into ``work_dir/data``."""
        grounder = self.models.get(run.base)
        request = run.request
        data = run.work_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        sets = {"train": self._parse(request.annotations, request.format, "annotations")}
        if request.val_annotations:
            sets["val"] = self._parse(request.val_annotations, request.format, "val_annotations")
        for split, text in (("train", request.annotations), ("val", request.val_annotations)):
            if text:
                (data / f"{split}.txt").write_text(text, encoding="utf-8")
        vids = list(dict.fromkeys(v for s in sets.values() for v in s.vids))
        keys = vids + [key for s in sets.values() for key, _ in _queries(s)]
        bad = next((key for key in keys if not _SAFE_KEY.fullmatch(key)), None)
        if bad is not None:
            raise InvalidRequest(f"video and query id {bad[:80]!r} must be 1-200 letters, digits, '.', '_' or '-' "
                                 "(not starting with '.'); map other names with 'videos'", code="bad_annotations")
        if len(vids) > self.settings.train_max_videos:
            raise InvalidRequest(f"the annotations name {len(vids)} videos; at most {self.settings.train_max_videos} "
                                 "(R2_TRAIN_MAX_VIDEOS)", code="too_many_videos")
        videos = data / "videos"
        videos.mkdir(exist_ok=True)
        for index, vid in enumerate(vids):
            self._write_video(grounder, vid, request.videos.get(vid, vid), videos)
            run.progress, run.detail = 0.0, dict(stage="features", stage_fraction=(index + 1) / (2 * len(vids)))
        queries = data / "queries"
        queries.mkdir(exist_ok=True)
        pairs = list(dict.fromkeys((key, text) for s in sets.values() for key, text in _queries(s)))
        for start in range(0, len(pairs), _TEXT_BATCH):
            part = pairs[start: start + _TEXT_BATCH]
            for (key, _), feats in zip(part, grounder._text_features([t for _, t in part], False), strict=True):
                _save(queries / f"{key}.npy", feats.permute(1, 0, 2).reshape(feats.shape[1], -1).half().numpy())
            run.detail = dict(stage="features", stage_fraction=0.5 + (start + len(part)) / (2 * len(pairs)))

    def _parse(self, text: str, fmt: str, what: str) -> AnnotationSet:
        try:
            annotations = parse_annotations(text, fmt, what)
        except AnnotationError as err:
            raise InvalidRequest(str(err), code="bad_annotations") from None
        if not len(annotations):
            raise InvalidRequest(f"{what} hold no annotation", code="bad_annotations")
        return annotations

    def _write_video(self, grounder: Grounder, vid: str, video_id: str, folder: Path) -> None:
        cached = self.backend.features.get(video_id, grounder.feature_id)
        if cached is None:
            record = self.backend.records.get_video(video_id)
            state = "was never uploaded (or expired)" if record is None else (
                f"is {record.status.value}" if record.model == grounder.spec.name else
                f"was uploaded for model {record.model!r}")
            raise Conflict(f"video {video_id[:80]!r} (annotation video {vid[:80]!r}) has no features for base model "
                           f"{grounder.spec.name!r}: it {state}; upload it with model={grounder.spec.name} and wait "
                           "until it is ready", code="video_not_ready")
        k, t = cached.shape[0], cached.shape[1]
        array = np.frombuffer(cached.data, dtype=np.dtype(cached.dtype)).reshape(cached.shape)  # (K, T, P, C)
        _save(folder / f"{vid}.npy", np.ascontiguousarray(array.transpose(1, 0, 2, 3)).reshape(t, -1))
        (folder / f"{vid}.json").write_text(json.dumps(dict(duration=cached.video.get("duration"), layers=k)))

    # ------------------------------------------------------------------------------------------------ train

    def _spawn(self, run: _Run) -> None:
        grounder = self.models.get(run.base)
        request, data = run.request, run.work_dir / "data"
        left = self.settings.train_max_seconds - (time.monotonic() - run.started)
        limit = min(request.max_seconds or left, left)
        job = dict(
            name=run.name, annotations=str(data / "train.txt"), work_dir=str(run.work_dir), base_model=run.base,
            registry=str(self.settings.registry_file) if self.settings.registry_file else None,
            format=request.format, val_annotations=str(data / "val.txt") if request.val_annotations else None,
            video_features=str(data / "videos"), query_features=str(data / "queries"), preset=request.preset,
            init=request.init, fps=grounder.spec.fps, epochs=request.epochs, max_epochs=self.settings.train_max_epochs,
            batch_size=request.batch_size, lr=request.lr, warmup_iters=request.warmup_iters, seed=request.seed,
            max_seconds=max(1.0, limit), device=self.models.device, threads=self.settings.train_threads,
            resume=True, download=False)
        ctx = multiprocessing.get_context("forkserver")
        run.channel, run.stop = ctx.Queue(), ctx.Event()
        from . import train_child

        run.process = ctx.Process(target=train_child.main, args=(job, run.channel, run.stop, os.getpid()),
                                  name=f"r2-train-{run.job_id[:8]}", daemon=True)
        run.process.start()
        run.detail = dict(stage="training")
        self._update(run, force=True)
        log.info("training %s (job %s) started from %s, pid %s", run.name, run.job_id, run.base, run.process.pid)

    def _drain(self, run: _Run) -> None:
        while True:
            try:
                kind, payload = run.channel.get_nowait()
            except queue_module.Empty:
                return
            except (EOFError, OSError):
                return
            if kind == "progress":
                if payload.get("stage") == "training" and payload.get("iteration") == 0 and payload.get("metrics"):
                    run.detail["initial_metrics"] = payload["metrics"]
                run.detail.update({k: v for k, v in payload.items() if k not in ("fraction",)})
                run.progress = float(payload.get("fraction") or 0.0)
            else:
                run.finished = (kind, payload)

    def _kill(self, run: _Run) -> None:
        if run.process is not None and run.process.is_alive():
            run.process.kill()
            run.process.join(10)

    # ------------------------------------------------------------------------------------------------ report

    def _update(self, run: _Run, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - run.last_update < _UPDATE_EVERY_S:
            return
        run.last_update = now
        detail = dict(run.detail)
        detail.setdefault("stage", "features" if run.process is None else "training")
        self.backend.jobs.update(run.job_id, self._ttl(), progress=run.progress, detail=detail)

    def _ttl(self) -> int:
        return int(self.settings.train_max_seconds + self.settings.result_ttl_s)

    def _finish(self, run: _Run, *, result: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        metrics = MetricsBatch()
        outcome: Outcome
        if result is not None:
            try:
                spec = self._serve(run, result)
            except Exception as err:
                error = err
            else:
                answer = {k: v for k, v in result.items() if k != "spec"}
                answer.update(model=spec.name, base_model=run.base, outputs=spec.outputs, fps=spec.fps)
                outcome = Outcome(run.delivery, result=answer)
                metrics.inc("r2_jobs_total", kind="train", outcome="ready")
                log.info("training %s (job %s) done: %s epochs, metrics %s", run.name, run.job_id,
                         result.get("epochs"), result.get("metrics"))
        if error is not None:
            status, code, message = classify(error)
            if status >= 500:
                log.error("training %s (job %s) failed: %s", run.name, run.job_id, message)
            outcome = Outcome(run.delivery, error_status=status, error_code=code, error_message=message)
            metrics.inc("r2_jobs_total", kind="train", outcome="failed")
        detail = dict(run.detail, stage="done")
        self.backend.jobs.update(run.job_id, self._ttl(), progress=1.0 if error is None else run.progress,
                                 detail=detail)
        self.backend.jobs.finish(self.consumer, [outcome], metrics.values,
                                 {"train": round(time.monotonic() - run.started, 3)})
        self._run = None
        if error is not None and run.process is None:  # nothing was trained: its data is of no further use
            shutil.rmtree(run.work_dir, ignore_errors=True)

    def _serve(self, run: _Run, result: dict[str, Any]) -> zoo.ModelSpec:
        """Register the trained model where every worker finds it, and load it here."""
        spec = zoo.ModelSpec(**result["spec"])
        write_registry_entry(spec, self.root / run.name / "model.json")
        self.models.add_trained(spec)
        if self.announce is not None:
            self.announce()
        return spec

    def _fail_now(self, delivery: Delivery, err: ServiceError) -> None:
        self.backend.jobs.finish(self.consumer, [Outcome(delivery, error_status=err.status, error_code=err.code,
                                                         error_message=err.message)])

    # ------------------------------------------------------------------------------------------------ shutdown

    def shutdown(self) -> None:
        """Stop cleanly: the running training writes its checkpoint, and every train job goes back to the queue
        (a worker that takes it again resumes from the checkpoint)."""
        run = self._run
        if run is not None and run.process is not None:
            run.stop.set()
            run.process.join(_STOP_WAIT_S)
            self._kill(run)
        elif run is not None and run.prepared is not None:
            run.prepared.join(_STOP_WAIT_S)
        with self._lock:
            held = ([run.delivery] if run is not None else []) + list(self._backlog)
            self._backlog.clear()
            self._run = None
        if held:
            self.backend.jobs.release(held)


def _queries(annotations: AnnotationSet) -> list[tuple[str, str]]:
    """(query feature file name, text): the qid for moment queries, the vid for highlight videos (official)."""
    if annotations.kind == "highlights":
        return [(h.vid, h.query) for h in annotations.highlights]
    return [(str(m.qid), m.query) for m in annotations.moments]


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (0 when it is gone)."""
    try:
        proc = psutil.Process(pid)
        return int(proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True)))
    except psutil.Error:
        return 0
