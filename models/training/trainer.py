"""The training loop: epochs of official training steps, validation after each epoch, checkpoints, exact resume.

Reproducible by construction: every random choice is a function of the seed and of where the run is, never of
what ran before in the process:

* the order of epoch ``e`` is ``randperm`` from a generator seeded with (seed, e);
* the positive clip of example ``i`` in epoch ``e`` is drawn by ``random.Random("seed:e:i")``;
* dropout and drop-path of iteration ``n`` come from torch's global generator reseeded with (seed, n).

So a run killed at any point and resumed from its last checkpoint (weights, AdamW state, the iteration count;
the schedule is a function of the iteration) does exactly the remaining work of the uninterrupted run and ends
with the same weights, on the same machine and thread count.

Files in ``work_dir``: ``checkpoint.pth`` (resumable, rewritten at every epoch end and every ``save_every``
iterations), ``model.pth`` (the release checkpoint: the best epoch by the preset's metric, or the last epoch
without validation), ``history.jsonl`` (one line per epoch: losses, lr, validation, seconds).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..postprocess import NmsConfig
from ..r2 import R2Tuning
from . import checkpoints
from .batch import collate
from .data import Example, FeatureSource, example_sample
from .optim import build_optimizer, build_scheduler
from .presets import TrainPreset
from .regularization import SampledRegularization
from .step import train_step
from .validation import validate

_SEED_MIX = 1_000_003  # keeps (seed, epoch) / (seed, iteration) pairs apart


@dataclass(frozen=True)
class TrainConfig:
    """What one training run does; the preset's official values unless overridden."""

    preset: TrainPreset
    epochs: int | None = None  # default: the preset's (official) epochs
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    save_every: int = 0  # also write checkpoint.pth every this many iterations (0: at epoch ends only)
    val_interval: int = 1  # validate every this many epochs (0: never)
    max_seconds: float | None = None  # stop (with a checkpoint) once training has run this long

    @property
    def optim(self) -> Any:
        cfg = self.preset.optim
        return dataclasses.replace(cfg, epochs=self.epochs or cfg.epochs, lr=self.lr or cfg.lr)

    @property
    def batch(self) -> int:
        return self.batch_size or self.preset.batch_size

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues (epochs and limits may change)."""
        optim = {k: v for k, v in dataclasses.asdict(self.optim).items() if k != "epochs"}
        return dict(preset=self.preset.name, batch=self.batch, optim=optim, seed=self.seed,
                    repeat=self.preset.repeat, loss=dataclasses.asdict(self.preset.loss),
                    reg=dataclasses.asdict(self.preset.reg), label=dataclasses.asdict(self.preset.label))


@dataclass
class Progress:
    """Where a run stands, given to ``on_progress`` after each iteration and each validation."""

    epoch: int  # epochs completed
    epochs: int
    iteration: int  # iterations completed
    total_iterations: int
    losses: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    metrics: dict[str, float] | None = None  # the last validation
    seconds: float = 0.0

    @property
    def fraction(self) -> float:
        return min(1.0, self.iteration / max(1, self.total_iterations))


@dataclass
class TrainResult:
    model_path: Path
    checkpoint_path: Path
    epochs: int  # epochs completed
    iterations: int
    best_epoch: int | None
    best_metrics: dict[str, float] | None
    initial_metrics: dict[str, float] | None  # validation of the weights before the first step
    history: list[dict[str, Any]]
    stopped: str | None  # None: all epochs ran; "time limit" or "stopped"
    seconds: float


class Trainer:
    """Train ``model`` on ``train`` examples, validating on ``val`` ones, writing into ``work_dir``."""

    def __init__(self, model: R2Tuning, config: TrainConfig, train: Sequence[Example], source: FeatureSource,
                 work_dir: str | Path, *, val: Sequence[Example] = (), fps: float, unit: float | None,
                 nms: NmsConfig, on_progress: Callable[[Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        if not train:
            raise ValueError("no training examples")
        if config.batch < 1:
            raise ValueError(f"batch size must be >= 1, got {config.batch}")
        if not model.cfg.coord_head and config.preset.loss.use_reg:
            raise ValueError("a highlight-only model (no coordinate head) needs a highlight preset (youtube, tvsum)")
        self.model, self.config, self.train, self.val, self.source = model, config, list(train), list(val), source
        self.work_dir = Path(work_dir)
        self.fps, self.unit, self.nms = fps, unit, nms
        self.on_progress, self.should_stop = on_progress, should_stop
        self.stages = checkpoints.official_stages(config.optim, config.optim.epochs, config.val_interval)
        self.size = len(self.train) * config.preset.repeat
        self.iters_per_epoch = math.ceil(self.size / config.batch)

    @property
    def checkpoint_path(self) -> Path:
        return self.work_dir / "checkpoint.pth"

    @property
    def model_path(self) -> Path:
        return self.work_dir / "model.pth"

    # ------------------------------------------------------------------------------------------------ pieces

    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.config.seed * _SEED_MIX + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def batch_at(self, epoch: int, position: int, order: list[int]) -> Any:
        cfg = self.config
        picks = order[position * cfg.batch: (position + 1) * cfg.batch]
        samples = [example_sample(self.train[i % len(self.train)], self.source,
                                  random.Random(f"{cfg.seed}:{epoch}:{i}"), cfg.preset.label) for i in picks]
        return collate(samples)

    def _validate(self) -> dict[str, float] | None:
        if not self.val or self.config.val_interval <= 0:
            return None
        return validate(self.model, self.val, self.source, self.fps, self.unit, self.nms)

    def _better(self, metrics: dict[str, float] | None, best: dict[str, float] | None) -> bool:
        key = self.config.preset.select_metric
        if metrics is None or key not in metrics:
            return False
        return best is None or metrics[key] > best.get(key, -math.inf)

    # ------------------------------------------------------------------------------------------------ the loop

    def fit(self, resume: bool = True) -> TrainResult:
        cfg, optim_cfg = self.config, self.config.optim
        device = self.model.coef.device
        optimizer = build_optimizer(self.model, optim_cfg)
        state: dict[str, Any] = dict(config=cfg.fingerprint(), best=None, best_epoch=None, initial=None, history=[])
        epoch = iteration = 0
        if resume and self.checkpoint_path.is_file():
            saved = checkpoints.load_training(self.checkpoint_path)
            extra = saved[checkpoints.RESUME_KEY]
            if extra["config"] != state["config"]:
                raise checkpoints.TrainingCheckpointError(
                    f"{self.checkpoint_path} was written by a run with other settings ({extra['config']} vs "
                    f"{state['config']}); use another work directory or start afresh")
            self.model.load_state_dict(checkpoints.model_state(saved), strict=True)
            optimizer.load_state_dict(saved["optimizer"])
            epoch, iteration = int(extra["epoch"]), int(extra["iteration"])
            state.update({k: extra[k] for k in ("best", "best_epoch", "initial", "history", "epoch_losses")})
            torch.set_rng_state(extra["rng"])
        scheduler = build_scheduler(optimizer, self.iters_per_epoch, optim_cfg, start_iteration=iteration)
        total = self.iters_per_epoch * optim_cfg.epochs
        started = time.monotonic()
        progress = Progress(epoch=epoch, epochs=optim_cfg.epochs, iteration=iteration, total_iterations=total,
                            metrics=state["best"])
        if iteration == 0 and state["initial"] is None:
            state["initial"] = self._validate()
            progress.metrics = state["initial"]
            self._notify(progress, started)

        def save() -> None:
            state["epoch_losses"] = epoch_losses
            checkpoints.save_training(self.checkpoint_path, self.model, optimizer, epoch, iteration, self.stages,
                                      state, cfg.preset.loss.sal_temperature)

        stopped: str | None = None
        epoch_losses: dict[str, float] = dict(state.get("epoch_losses") or {})  # sums over this epoch so far
        while epoch < optim_cfg.epochs and stopped is None:
            order = self.epoch_order(epoch)
            epoch_started = time.monotonic()
            self.model.train()
            for position in range(iteration - epoch * self.iters_per_epoch, self.iters_per_epoch):
                batch = self.batch_at(epoch, position, order).to(device)
                torch.manual_seed(cfg.seed * _SEED_MIX + iteration)
                result = train_step(self.model, batch, optimizer, scheduler, SampledRegularization(cfg.preset.reg),
                                    cfg.preset.loss, optim_cfg)
                iteration += 1
                for key, value in result.losses.items():
                    epoch_losses[key] = epoch_losses.get(key, 0.0) + value
                progress.iteration, progress.losses, progress.lr = iteration, result.losses, result.lr
                self._notify(progress, started)
                if cfg.save_every and iteration % cfg.save_every == 0 and iteration % self.iters_per_epoch:
                    save()
                if self._stop_reason(started) is not None and iteration % self.iters_per_epoch:
                    stopped = self._stop_reason(started)
                    save()
                    break
            if stopped is not None:
                break
            epoch += 1
            metrics = self._validate() if cfg.val_interval > 0 and epoch % cfg.val_interval == 0 else None
            done = self.iters_per_epoch
            state["history"].append(dict(epoch=epoch, iteration=iteration, lr=progress.lr, metrics=metrics,
                                         losses={k: v / done for k, v in epoch_losses.items()},
                                         seconds=round(time.monotonic() - epoch_started, 3)))
            epoch_losses = {}
            if self._better(metrics, state["best"]) or (not self.val and epoch == optim_cfg.epochs):
                state["best"], state["best_epoch"] = metrics, epoch
                checkpoints.save_model(self.model_path, self.model, epoch, iteration, self.stages,
                                       cfg.preset.loss.sal_temperature)
            save()
            self._write_history(state["history"])
            progress.epoch, progress.metrics = epoch, metrics or progress.metrics
            self._notify(progress, started)
            if stopped is None and epoch < optim_cfg.epochs:
                stopped = self._stop_reason(started)
        if not self.model_path.is_file():  # stopped before any epoch ended, or no epoch beat nothing
            checkpoints.save_model(self.model_path, self.model, epoch, iteration, self.stages,
                                   cfg.preset.loss.sal_temperature)
        return TrainResult(model_path=self.model_path, checkpoint_path=self.checkpoint_path, epochs=epoch,
                           iterations=iteration, best_epoch=state["best_epoch"], best_metrics=state["best"],
                           initial_metrics=state["initial"], history=state["history"], stopped=stopped,
                           seconds=round(time.monotonic() - started, 3))

    def _stop_reason(self, started: float) -> str | None:
        if self.should_stop is not None and self.should_stop():
            return "stopped"
        if self.config.max_seconds is not None and time.monotonic() - started >= self.config.max_seconds:
            return "time limit"
        return None

    def _notify(self, progress: Progress, started: float) -> None:
        if self.on_progress is not None:
            progress.seconds = time.monotonic() - started
            self.on_progress(progress)

    def _write_history(self, rows: list[dict[str, Any]]) -> None:
        path = self.work_dir / "history.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        tmp.replace(path)
