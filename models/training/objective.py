"""The official training objective (``BundleLoss``) on one training forward.

Two variants, as the official configs define them:

* moment models (QVHighlights, Charades-STA, ...): focal classification of the pyramid points, L1 regression of
  their distances to the window bounds, sampled NCE saliency ('row' + 'col'), video- and layer-wise calibration;
* highlight-only models (YouTube Highlights / TVSum configs: strides (1,), no TEF, no coordinate head):
  ``loss_reg=None``, so ``BundleLoss`` uses the per-clip saliency itself as the classification target of a
  ``DynamicBCELoss`` (binary cross-entropy with logits, weighted by the clip mask, summed and divided by the
  number of real clips); the saliency NCE runs in the 'row' direction only; both calibration terms stay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..r2 import R2Tuning
from .batch import TrainBatch
from .forward import TrainOutput, forward_train
from .losses import bce_loss, focal_loss, info_nce_loss, l1_loss, sampled_nce_loss
from .regularization import Regularizer
from .targets import moment_targets, point_grid


@dataclass(frozen=True)
class LossConfig:
    """loss_cfg of configs/_base_/models/model.py (weights multiply each term); :meth:`highlight` gives the
    YouTube Highlights / TVSum variant."""

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
    cls_loss: str = "focal"  # "focal" (point targets of the windows) or "bce" (the saliency as target)
    use_reg: bool = True  # False: no regression term and no point targets (highlight-only configs)

    @classmethod
    def highlight(cls, **overrides: object) -> LossConfig:
        """The loss_cfg of configs/youtube/*.py and configs/tvsum/*.py: DynamicBCELoss, no loss_reg, 'row' NCE."""
        return cls(**{"cls_loss": "bce", "use_reg": False, "sal_directions": ("row",), **overrides})  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.cls_loss not in ("focal", "bce"):
            raise ValueError(f"cls_loss must be 'focal' or 'bce', got {self.cls_loss!r}")
        if self.use_reg and self.cls_loss != "focal":
            raise ValueError("the regression term needs the focal point targets (cls_loss='focal')")
        if not self.sal_directions or set(self.sal_directions) - {"row", "col"}:
            raise ValueError(f"sal_directions must be a non-empty subset of ('row', 'col'), got {self.sal_directions}")


def compute_losses(out: TrainOutput, batch: TrainBatch, all_strides: tuple[int, ...],
                   cfg: LossConfig = LossConfig()) -> dict[str, Tensor]:
    """Every weighted term, keyed and ordered as the official output dict, plus their sum under ``loss``."""
    pos_clip = batch.pos_clip[:, 0]  # (B,)
    losses: dict[str, Tensor] = {}
    if cfg.use_reg:
        if out.out_coord is None:
            raise ValueError("the regression term needs a coordinate head; highlight-only models train with "
                             "LossConfig.highlight()")
        points = point_grid(out.level_sizes, out.strides, all_strides).to(out.out_coord.device)  # (Npts, 4)
        cls_tgt, reg_tgt = moment_targets(points, batch.boundary, batch.fps, cfg.sample_radius)  # (B, Npts), (.., 2)
        losses["loss_reg"] = l1_loss(out.out_coord, reg_tgt, cls_tgt[..., None].expand(-1, -1, 2)) * cfg.reg_weight
    else:
        if out.out_class.shape != batch.saliency.shape:
            raise ValueError(f"saliency as the class target needs one pyramid point per clip (strides (1,)): "
                             f"{tuple(out.out_class.shape)} points vs saliency {tuple(batch.saliency.shape)}")
        cls_tgt = batch.saliency  # (B, T): the official BundleLoss without loss_reg
    if cfg.cls_loss == "focal":
        losses["loss_cls"] = focal_loss(out.out_class, cls_tgt, out.pyramid_mask, cfg.focal_alpha,
                                        cfg.focal_gamma) * cfg.cls_weight
    else:
        losses["loss_cls"] = bce_loss(out.out_class, cls_tgt, out.pyramid_mask) * cfg.cls_weight
    losses["loss_sal"] = sampled_nce_loss(out.video_emb, out.query_emb, out.video_mask, batch.saliency, pos_clip,
                                          cfg.sal_temperature, cfg.sal_max_scale, cfg.sal_directions) * cfg.sal_weight
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
