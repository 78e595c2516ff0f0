"""The loss terms of the official ``BundleLoss``, one function each, numerically as nncore / R2-Tuning compute
them. Each returns the unweighted term; :mod:`models.training.objective` applies the config's weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss


def _logit_scale(temperature: float, max_scale: float, like: Tensor) -> Tensor:
    # The official scale is a float32 tensor log(1/T), exponentiated and clamped; rebuilt the same way.
    return like.new_tensor([math.log(1 / temperature)]).exp().clamp(max=max_scale)


def focal_loss(logits: Tensor, target: Tensor, weight: Tensor, alpha: float, gamma: float) -> Tensor:
    """nncore FocalLoss with a per-point weight, averaged over ``weight.sum()`` (the real pyramid points)."""
    loss = sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="none")  # same formula as nncore
    return (loss * weight).sum() / weight.sum()


def bce_loss(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """nncore DynamicBCELoss with ``avg_factor``: binary cross-entropy with logits weighted per element, summed,
    divided by ``weight.sum()`` (the real clips). Soft targets in [0, 1] are allowed (TVSum's saliency)."""
    weight = weight.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), weight=weight, reduction="sum")
    return loss / weight.sum()


def l1_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """nncore L1Loss with a 0/1 weight, averaged over the weight's sum (positives x 2 coordinates).

    With no positive point at all the official average is 0/0 = NaN; here the divisor is at least 1, so such a
    batch contributes 0 (identical wherever the official value is finite).
    """
    weight = weight.to(pred.dtype)
    return ((pred - target).abs() * weight).sum() / weight.sum().clamp(min=1)


def sampled_nce_loss(video_emb: Tensor, query_emb: Tensor, video_mask: Tensor, saliency: Tensor, pos_clip: Tensor,
                     temperature: float, max_scale: float, directions: tuple[str, ...]) -> Tensor:
    """The official SampledNCELoss: the positive clip against the clips of its own video that are not more
    salient ('row') and against the same clip index in the other videos of the batch ('col').

    video_emb (B, T, D), query_emb (B, D), video_mask (B, T), saliency (B, T), pos_clip (B,).

    Official NaN defect, guarded here: the official 'col' term takes ``log_softmax`` over every clip index t of
    the transposed (T, B) similarity and then gathers the rows ``pos_clip``. If some t is excluded in *every*
    video (padding, or a saliency above that video's positive), its row is all -inf, its softmax is NaN, and
    the backward of log_softmax spreads that NaN into every gradient while the loss value stays finite. Only
    the gathered rows enter the loss and log_softmax is row-wise, so this version selects those rows first: the
    value and the gradients equal the official ones whenever those are finite, and stay finite when they are not.
    """
    batch = torch.arange(video_emb.shape[0], device=video_emb.device)
    pos_scores = saliency[batch, pos_clip][:, None]  # (B, 1)
    allowed = (saliency <= pos_scores) * video_mask  # (B, T)
    sim = F.cosine_similarity(video_emb, query_emb[:, None], dim=-1) * _logit_scale(temperature, max_scale,
                                                                                     video_emb)  # (B, T)
    sim = sim + torch.where(allowed > 0, 0.0, float("-inf"))
    loss = sim.new_zeros(())
    if "row" in directions:
        row = F.log_softmax(sim, dim=1)[batch, pos_clip]  # (B,); each row holds its own positive, never all -inf
        loss = loss - row.sum() / row.shape[0]
    if "col" in directions:
        # (B, B): for each sample b, clip pos_clip[b] across the videos; finite at [b, b] by construction.
        col = F.log_softmax(sim.t()[pos_clip], dim=1)[batch, batch]
        loss = loss - col.sum() / col.shape[0]
    return loss


def info_nce_loss(a: Tensor, b: Tensor, temperature: float, max_scale: float) -> Tensor:
    """nncore InfoNCELoss: symmetric cross-entropy of cosine similarities, matching pairs on the diagonal of
    each (..., n, n) block of a (..., n, D) against b (..., n, D)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    n = a.shape[-2]
    a_sim = a @ b.transpose(-1, -2) * _logit_scale(temperature, max_scale, a)  # (..., n, n)
    b_sim = a_sim.transpose(-1, -2)
    target = torch.arange(n, device=a.device).repeat(a_sim.numel() // (n * n))
    a_loss = F.cross_entropy(a_sim.reshape(-1, n), target)
    b_loss = F.cross_entropy(b_sim.reshape(-1, n), target)
    return (a_loss + b_loss) / 2
