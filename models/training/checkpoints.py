"""Checkpoints in the official nncore format, with what an exact resume needs on top.

nncore's ``save_checkpoint`` writes ``torch.save({"meta", "state_dict"[, "optimizer"]})``: ``meta`` holds plain
data (``epoch``, ``iter``, ``stages``, ``nncore_version``, ``create_time``), ``state_dict`` the model's tensors
(with the training loss buffer ``loss._loss_sal.scale``), ``optimizer`` the AdamW state over the parameters in
``parameters()`` order (ours has the official order, so the official ``Engine.resume`` reads it too). Our files
are exactly that; a training checkpoint adds one key, ``r2tuning``, that official loaders ignore: the iteration,
the torch RNG state, the settings the run was started with, the best validation so far and the history.
Everything is plain data and tensors, so ``torch.load(weights_only=True)`` reads it. Files are written to a
temporary name and renamed, so a kill never leaves half a checkpoint.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .optim import OptimConfig

NNCORE_VERSION = "0.4.4"  # the version the official repository pins; meta says so, as nncore writes it
SAL_SCALE_KEY = "loss._loss_sal.scale"  # the SampledNCELoss buffer every official checkpoint carries
RESUME_KEY = "r2tuning"
RESUME_FORMAT = 1


class TrainingCheckpointError(ValueError):
    """A training checkpoint that cannot be resumed (unreadable, another format, other settings)."""


def official_stages(optim: OptimConfig, epochs: int, val_interval: int = 1) -> list[dict[str, Any]]:
    """``meta.stages`` as nncore records it: the config's ``stages`` dict in a list."""
    return [dict(
        epochs=epochs,
        optimizer=dict(type="AdamW", lr=optim.lr, weight_decay=optim.weight_decay),
        lr_schedule=dict(type="epoch", policy="step", step=list(optim.lr_steps)) if optim.lr_steps else None,
        warmup=dict(type="iter", policy="linear", steps=optim.warmup_iters, ratio=optim.warmup_ratio),
        grad_clip=dict(max_norm=optim.max_grad_norm, norm_type=optim.grad_norm_type),
        validation=dict(interval=val_interval))]


def release_state_dict(model: nn.Module, sal_temperature: float = 0.07) -> dict[str, torch.Tensor]:
    """The model's tensors as an official checkpoint holds them (CPU, float32, plus the loss buffer)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    state[SAL_SCALE_KEY] = torch.tensor([math.log(1 / sal_temperature)])
    return state


def meta(epoch: int, iteration: int, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(epoch=epoch, iter=iteration, stages=stages, nncore_version=NNCORE_VERSION,
                create_time=time.strftime("%Y-%m-%d %H:%M:%S"))


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(path: Path, model: nn.Module, epoch: int, iteration: int, stages: list[dict[str, Any]],
               sal_temperature: float = 0.07) -> None:
    """A release checkpoint: ``{"meta", "state_dict"}``, what the official zoo ships and the server loads."""
    atomic_save(dict(meta=meta(epoch, iteration, stages), state_dict=release_state_dict(model, sal_temperature)),
                path)


def save_training(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, iteration: int,
                  stages: list[dict[str, Any]], state: dict[str, Any], sal_temperature: float = 0.07) -> None:
    """A resumable checkpoint: the release checkpoint plus ``optimizer`` and our ``r2tuning`` state."""
    resume = dict(format=RESUME_FORMAT, epoch=epoch, iteration=iteration, rng=torch.get_rng_state(), **state)
    atomic_save(dict(meta=meta(epoch, iteration, stages), state_dict=release_state_dict(model, sal_temperature),
                     optimizer=optimizer.state_dict(), **{RESUME_KEY: resume}), path)


def load_training(path: Path) -> dict[str, Any]:
    """Read a resumable checkpoint (safely: no pickled code)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files that are not checkpoints
        raise TrainingCheckpointError(f"{path} is not a readable training checkpoint: {err}") from err
    if not isinstance(obj, dict) or not {"meta", "state_dict", "optimizer", RESUME_KEY} <= set(obj):
        raise TrainingCheckpointError(f"{path} is not a resumable training checkpoint (it needs meta, state_dict, "
                                      f"optimizer and {RESUME_KEY})")
    if obj[RESUME_KEY].get("format") != RESUME_FORMAT:
        raise TrainingCheckpointError(f"{path} was written by another version (format "
                                      f"{obj[RESUME_KEY].get('format')!r}, expected {RESUME_FORMAT})")
    return obj


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own tensors of a checkpoint (the loss buffer removed)."""
    return {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("loss.")}
