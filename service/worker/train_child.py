"""The training process a worker starts for one training job (see :mod:`service.worker.training`).

It runs :func:`models.training.run.run_training` on the data the worker prepared and reports over a queue:
``("progress", {...})`` at most every ``_REPORT_EVERY_S`` and after each validation, then ``("done", {...})`` or
``("error", {...})``. It stops by itself (with a checkpoint, and the model so far) when the worker asks (an event)
or when the worker process is gone, so a killed worker never leaves a training running behind its back.
"""

from __future__ import annotations

import os
import time
from typing import Any

_REPORT_EVERY_S = 0.5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(job: dict[str, Any], queue: Any, stop: Any, parent_pid: int) -> None:
    from models.training.run import TrainJob, run_training
    from service.contract.errors import classify

    last = [0.0, -1]

    def should_stop() -> bool:
        return bool(stop.is_set()) or not _alive(parent_pid)

    def on_progress(p: Any) -> None:
        now = time.monotonic()
        validated = p.epoch != last[1] and p.metrics is not None
        if now - last[0] < _REPORT_EVERY_S and not validated:
            return
        last[0], last[1] = now, p.epoch
        queue.put(("progress", dict(stage="training", epoch=p.epoch, epochs=p.epochs, iteration=p.iteration,
                                    iterations=p.total_iterations, loss=p.losses.get("loss"), lr=p.lr,
                                    metrics=p.metrics, fraction=p.fraction)))

    def on_stage(stage: str, fraction: float) -> None:
        queue.put(("progress", dict(stage=stage, fraction=0.0, stage_fraction=fraction)))

    try:
        outcome = run_training(TrainJob(**job), on_progress=on_progress, should_stop=should_stop, on_stage=on_stage)
    except BaseException as err:  # every failure goes back to the worker, which fails the job with it
        status, code, message = classify(err)
        if status == 500 and type(err).__name__ in ("AnnotationError", "TrainingLabelError", "RegistryError"):
            status, code = 422, "bad_annotations"
        queue.put(("error", dict(status=status, code=code, message=message[:2000])))
        return
    result = outcome.result
    queue.put(("done", dict(
        spec=outcome.spec.to_dict(), epochs=result.epochs, iterations=result.iterations,
        best_epoch=result.best_epoch, metrics=result.best_metrics, initial_metrics=result.initial_metrics,
        stopped=result.stopped, seconds=result.seconds, train_examples=outcome.train_examples,
        val_examples=outcome.val_examples)))
