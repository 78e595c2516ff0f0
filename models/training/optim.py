"""The official optimiser, learning-rate schedule and gradient clipping (configs/_base_/schedules/default.py,
run by nncore's OptimizerHook and LrUpdaterHook)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


@dataclass(frozen=True)
class OptimConfig:
    """``stages`` of the official schedule."""

    lr: float = 5e-4  # AdamW base learning rate (torch default betas and eps)
    weight_decay: float = 1e-4
    epochs: int = 30
    lr_steps: tuple[int, ...] = (20,)  # epochs at which the lr is multiplied by lr_gamma (policy 'step')
    lr_gamma: float = 0.1
    warmup_iters: int = 500  # linear warm-up over the first iterations (type 'iter')
    warmup_ratio: float = 0.001  # lr factor at iteration 0
    max_grad_norm: float = 35.0  # clip_grad_norm_ over all parameters with a gradient
    grad_norm_type: float = 2.0


def build_optimizer(model: nn.Module, cfg: OptimConfig = OptimConfig()) -> torch.optim.AdamW:
    """AdamW over the trainable parameters in ``parameters()`` order, as nncore's Engine builds it."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _step_factor(epoch: int, cfg: OptimConfig) -> float:
    # Policy 'step' with a list: gamma ** (number of milestones already reached).
    reached = next((i for i, s in enumerate(cfg.lr_steps) if epoch < s), len(cfg.lr_steps))
    return cfg.lr_gamma**reached


def lr_factor(iteration: int, iters_per_epoch: int, cfg: OptimConfig = OptimConfig()) -> float:
    """lr / base lr at a 0-based training iteration, as nncore's LrUpdaterHook sets it before that iteration.

    The hook is stateful; unrolled, its rules are: before each epoch the lr becomes the epoch's step value;
    before iteration i < warmup it becomes base * ((ratio - 1) * (1 - i / warmup) + 1) (the epoch decay is
    ignored during warm-up); at i == warmup it is reset to the *undecayed* base lr, which then lasts until the
    next epoch starts. (The reset only matters for epochs shorter than warmup / lr_steps[0] iterations.)
    """
    if iteration < 0 or iters_per_epoch <= 0:
        raise ValueError(f"iteration {iteration} must be >= 0 and iters_per_epoch {iters_per_epoch} > 0")
    if iteration < cfg.warmup_iters:
        progress = 1 - iteration / cfg.warmup_iters
        return (cfg.warmup_ratio - 1) * progress + 1
    epoch = iteration // iters_per_epoch
    if epoch * iters_per_epoch <= cfg.warmup_iters:  # this epoch contains the reset at iteration == warmup
        return 1.0
    return _step_factor(epoch, cfg)


def build_scheduler(optimizer: torch.optim.Optimizer, iters_per_epoch: int, cfg: OptimConfig = OptimConfig(),
                    start_iteration: int = 0) -> LambdaLR:
    """Per-iteration schedule: call ``scheduler.step()`` after each ``optimizer.step()``.

    ``start_iteration`` resumes the schedule (the lr of the first step is the lr of that iteration).
    """
    return LambdaLR(optimizer, lambda step: lr_factor(start_iteration + step, iters_per_epoch, cfg))
