"""The official training objective (``BundleLoss`` of the QVHighlights config) on one training forward."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..r2 import R2Tuning
from .batch import TrainBatch
from .forward import TrainOutput, forward_train
from .losses import focal_loss, info_nce_loss, l1_loss, sampled_nce_loss
from .regularization import Regularizer
from .targets import moment_targets, point_grid


@dataclass(frozen=True)
class LossConfig:
    """loss_cfg of configs/_base_/models/model.py (weights multiply each term)."""

    sample_radius: float = 1.5  # a point is positive within this many strides of a window's centre
    focal_alpha: float = -1.0  # -1: no positive/negative balancing
    focal_gamma: float = 2.0
    cls_weight: float = 1.0
    reg_weight: float = 0.2
    sal_weight: float = 0.1
    sal_temperature: float = 0.07
    sal_max_scale: float = 100.0
    sal_directions: tuple[str, ...] = ("row", "col")
    cal_temperature: float = 0.07  # nncore InfoNCELoss default
    cal_max_scale: float = 100.0
    video_cal_weight: float = 0.1
    layer_cal_weight: float = 0.1


def compute_losses(out: TrainOutput, batch: TrainBatch, all_strides: tuple[int, ...],
                   cfg: LossConfig = LossConfig()) -> dict[str, Tensor]:
    """Every weighted term, keyed and ordered as the official output dict, plus their sum under ``loss``."""
    points = point_grid(out.level_sizes, out.strides, all_strides).to(out.out_coord.device)  # (Npts, 4)
    cls_tgt, reg_tgt = moment_targets(points, batch.boundary, batch.fps, cfg.sample_radius)  # (B, Npts), (.., 2)
    pos_clip = batch.pos_clip[:, 0]  # (B,)
    losses = {
        "loss_reg": l1_loss(out.out_coord, reg_tgt, cls_tgt[..., None].expand(-1, -1, 2)) * cfg.reg_weight,
        "loss_cls": focal_loss(out.out_class, cls_tgt, out.pyramid_mask, cfg.focal_alpha, cfg.focal_gamma)
        * cfg.cls_weight,
        "loss_sal": sampled_nce_loss(out.video_emb, out.query_emb, out.video_mask, batch.saliency, pos_clip,
                                     cfg.sal_temperature, cfg.sal_max_scale, cfg.sal_directions) * cfg.sal_weight,
    }
    batch_index = torch.arange(pos_clip.shape[0], device=pos_clip.device)
    coll_v = out.coll_v[:, batch_index, pos_clip]  # (K, B, D): each video's positive clip, per layer
    # Video calibration: per layer, the batch's videos against their queries; layer calibration: per video,
    # the layers against each other.
    losses["loss_video_cal"] = info_nce_loss(coll_v, out.coll_q, cfg.cal_temperature,
                                             cfg.cal_max_scale) * cfg.video_cal_weight
    losses["loss_layer_cal"] = info_nce_loss(coll_v.transpose(0, 1), out.coll_q.transpose(0, 1),
                                             cfg.cal_temperature, cfg.cal_max_scale) * cfg.layer_cal_weight
    # nncore's Engine sums the terms in this order (0 + reg + cls + ...); the order fixes the float rounding.
    losses["loss"] = sum(losses.values(), torch.zeros((), device=pos_clip.device))
    return losses


def objective(model: R2Tuning, batch: TrainBatch, reg: Regularizer | None = None,
              cfg: LossConfig = LossConfig()) -> dict[str, Tensor]:
    """Training forward + loss: the dict ``model(data, mode='train')`` returns, with autograd."""
    return compute_losses(forward_train(model, batch, reg), batch, model.cfg.strides, cfg)
