"""One official training iteration: forward, loss, backward, gradient clipping, AdamW step, lr schedule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils import clip_grad_norm_

from ..r2 import R2Tuning
from .batch import TrainBatch
from .objective import LossConfig, objective
from .optim import OptimConfig
from .regularization import RegularizationConfig, Regularizer, SampledRegularization


@dataclass(frozen=True)
class StepResult:
    losses: dict[str, float]  # every weighted term and their sum 'loss'
    grad_norm: float  # total L2 norm of the gradients before clipping
    lr: float  # learning rate this step used


def train_step(model: R2Tuning, batch: TrainBatch, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, reg: Regularizer | None = None,
               loss_cfg: LossConfig = LossConfig(), optim_cfg: OptimConfig = OptimConfig()) -> StepResult:
    """Run one iteration and leave this step's (clipped) gradients on the parameters for inspection.

    Without ``reg``, dropout and drop-path follow the module mode as in the official model: drawn at random
    under ``model.train()``, off under ``model.eval()``.
    """
    if reg is None and model.training:
        reg = SampledRegularization(RegularizationConfig())
    optimizer.zero_grad()
    losses = objective(model, batch, reg, loss_cfg)
    losses["loss"].backward()
    params = [p for p in model.parameters() if p.requires_grad and p.grad is not None]
    grad_norm = clip_grad_norm_(params, max_norm=optim_cfg.max_grad_norm, norm_type=optim_cfg.grad_norm_type)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return StepResult(losses={k: v.item() for k, v in losses.items()}, grad_norm=grad_norm.item(), lr=lr)
