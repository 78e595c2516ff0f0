"""Training of the R2-Tuning side network with the official objective, optimiser and schedule.

Modules, in data-flow order: :mod:`.labels` (annotation -> targets), :mod:`.batch` (samples -> padded batch),
:mod:`.regularization` (dropout / drop-path, sampled or replayed), :mod:`.forward` (training forward of
:class:`models.r2.R2Tuning`), :mod:`.targets` (pyramid point targets), :mod:`.losses` (loss terms),
:mod:`.objective` (weighted sum), :mod:`.optim` (AdamW, warm-up, clipping) and :mod:`.step` (one iteration).
"""

from .batch import GroundingSample, TrainBatch, collate, make_sample
from .forward import TrainOutput, forward_train
from .labels import LabelConfig, TrainingLabelError, is_trainable
from .objective import LossConfig, compute_losses, objective
from .optim import OptimConfig, build_optimizer, build_scheduler, lr_factor
from .regularization import (
    NoRegularization,
    RegularizationConfig,
    Regularizer,
    ReplayedRegularization,
    SampledRegularization,
)
from .step import StepResult, train_step

__all__ = [
    "GroundingSample", "LabelConfig", "LossConfig", "NoRegularization", "OptimConfig", "RegularizationConfig",
    "Regularizer", "ReplayedRegularization", "SampledRegularization", "StepResult", "TrainBatch", "TrainOutput",
    "TrainingLabelError", "build_optimizer", "build_scheduler", "collate", "compute_losses", "forward_train",
    "is_trainable", "lr_factor", "make_sample", "objective", "train_step",
]
