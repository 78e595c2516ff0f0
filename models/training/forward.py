"""The official training forward (``model(data, mode='train')``) on a padded batch of different videos.

It reuses the modules and parameters of :class:`models.r2.R2Tuning`, so the weights it trains are the ones the
server runs, but it is a separate code path: the inference forward is split around a per-video cache and runs
under ``inference_mode``, while training needs B videos with masks, autograd, dropout and drop-path.

Differences from inference that the official training forward has, and this one keeps:

* the temporal channels (TEF) and the positional encoding use Tmax, the padded length, for every video;
* the max over query tokens in the R2 pooling includes padded query tokens (their features are zeroed, so they
  still produce a mapped vector), because the official block pools over the padded batch without a mask;
* the pyramid's stride-1 level is an in-place ReLU, so the saliency loss sees ReLU(video_emb).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import TemporalDecoderLayer, sine_positional_encoding
from ..r2 import R2Block, R2Tuning
from .batch import TrainBatch
from .regularization import NoRegularization, Regularizer


@dataclass
class TrainOutput:
    """Everything the official ``BundleLoss`` reads from the forward."""

    out_class: Tensor  # (B, Npts) class logits of every pyramid point, levels fine -> coarse
    out_coord: Tensor | None  # (B, Npts, 2) exp(coord) * coef, distances to start / end in strides; None: no head
    level_sizes: list[int]  # points per pyramid level
    strides: list[int]  # stride of each level that exists for Tmax
    pyramid_mask: Tensor  # (B, Npts) int64, 1 where the point covers at least one real clip
    video_emb: Tensor  # (B, Tmax, D) R2 output after the pyramid's ReLU
    query_emb: Tensor  # (B, D) attention-pooled query of the shallowest refined layer
    video_mask: Tensor  # (B, Tmax) int64
    coll_v: Tensor  # (K, B, Tmax, D) CLS row of video_map per refined layer, deepest first
    coll_q: Tensor  # (K, B, D) pooled query_map per refined layer, deepest first


def split_layers(batch: TrainBatch, model: R2Tuning) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flat padded rows -> per-layer float32 features with padding zeroed, and the masks.

    Returns video (K, B, T, P, C), query (K, B, L, Cq), video_mask (B, T), query_mask (B, L).
    """
    cfg = model.cfg
    b, t, row = batch.video.shape
    if row % (cfg.k * cfg.video_width):
        raise ValueError(f"a video row of {row} values is not {cfg.k} layers of {cfg.video_width}-channel tokens")
    if batch.query.shape[-1] != cfg.k * cfg.query_width:
        raise ValueError(f"a query row has {batch.query.shape[-1]} values, the checkpoint expects "
                         f"{cfg.k} layers x {cfg.query_width}")
    video_mask, query_mask = batch.video_mask, batch.query_mask
    # Padding is +inf; the official forward zeroes every non-finite value before the float cast.
    video = torch.where(batch.video.isfinite(), batch.video, 0).float()
    query = torch.where(batch.query.isfinite(), batch.query, 0).float()
    video = video.view(b, t, cfg.k, -1, cfg.video_width).permute(2, 0, 1, 3, 4)  # (K, B, T, P, C)
    query = query.view(b, batch.query.shape[1], cfg.k, cfg.query_width).permute(2, 0, 1, 3)  # (K, B, L, Cq)
    return video, query, video_mask, query_mask


def temporal_channels(t: int, device: torch.device) -> Tensor:
    """(T, 2) TEF [t/T, (t+1)/T], with the reference's float arange (which can have T+1 entries) cut to T."""
    start = torch.arange(0, 1, 1 / t, device=device)[:t]
    return torch.stack((start, start + 1.0 / t), dim=1)


def mapping_train(mapping: nn.Sequential, x: Tensor, reg: Regularizer, site: str, call: int) -> Tensor:
    """Run video_map / query_map with the official dropouts where the inference model keeps Identity."""
    for index, layer in enumerate(mapping):
        x = reg.dropout(x, f"{site}.{index}", call) if isinstance(layer, nn.Identity) else layer(x)
    return x


def temporal_layer_train(tem: TemporalDecoderLayer, x: Tensor, memory: Tensor, pe: Tensor, video_mask: Tensor,
                         query_mask: Tensor, reg: Regularizer, first_call: int) -> Tensor:
    """Post-norm decoder layer (cross-att -> self-att -> FFN) with drop-path on each residual branch."""
    # x (B, T, D), memory (B, L, D), pe (T, D)
    d = tem.cross_att(x + pe, memory, memory, query_mask)
    x = tem.cross_att_norm(x + reg.drop_path(d, first_call))
    qk = x + pe
    d = tem.self_att(qk, qk, x, video_mask)
    x = tem.self_att_norm(x + reg.drop_path(d, first_call + 1))
    d = tem.ffn(x)
    return tem.ffn_norm(x + reg.drop_path(d, first_call + 2))


def r2_block_train(block: R2Block, video: Tensor, query: Tensor, video_mask: Tensor, query_mask: Tensor,
                   reg: Regularizer) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """The official R2Block.forward on a batch: video (K, B, T, P, C), query (K, B, L, Cq).

    Returns the refined video (B, T, D), the shallowest layer's query tokens (B, L, D) and, per layer deepest
    first, the CLS rows of video_map (B, T, D) and the mapped query tokens (B, L, D).
    """
    cfg = block.cfg
    k, b, t, p, _ = video.shape
    tef = temporal_channels(t, video.device)[None, :, None, :].expand(b, t, p, 2) if cfg.use_tef else None
    pe = sine_positional_encoding(t, cfg.dims, video.device)  # (T, D)
    coll_v, coll_q, last, q_emb = [], [], None, None
    for call, i in enumerate(range(k - 1, -1, -1)):
        layer = torch.cat((video[i], tef), dim=-1) if tef is not None else video[i]  # (B, T, P, C+2)
        v_emb = mapping_train(block.video_map, layer, reg, "adapter.video_map", call)  # (B, T, P, D)
        q_emb = mapping_train(block.query_map, query[i], reg, "adapter.query_map", call)  # (B, L, D)
        coll_v.append(v_emb[:, :, 0])
        coll_q.append(q_emb)

        keys = block.v_map(v_emb)  # (B, T, P, D)
        att = block.q_map(q_emb)[:, None] @ keys.transpose(-1, -2) / cfg.dims**0.5  # (B, T, L, P)
        pooled = att.softmax(-1) @ v_emb + q_emb[:, None]  # (B, T, L, D)
        pooled = pooled.amax(dim=2)  # (B, T, D); padded query tokens take part, as in the official block
        v_emb = v_emb[:, :, 0] + pooled * block.scale[i].tanh()
        if i < k - 1:
            gate = block.gate[i].sigmoid()
            v_emb = gate * v_emb + (1 - gate) * last
        last = temporal_layer_train(block.tem, v_emb, q_emb, pe, video_mask, query_mask, reg, 3 * call)
    return last, q_emb, coll_v, coll_q


def level_masks(video_mask: Tensor, strides: list[int]) -> Tensor:
    """(B, Npts) 1 where a pyramid point's window holds at least one real clip (max-pool of the clip mask)."""
    masks = [video_mask if s == 1 else F.max_pool1d(video_mask.float(), s, stride=s).long() for s in strides]
    return torch.cat(masks, dim=1)


def forward_train(model: R2Tuning, batch: TrainBatch, reg: Regularizer | None = None) -> TrainOutput:
    """Everything ``model(data, mode='train')`` computes before its loss, with autograd.

    ``reg`` decides dropout / drop-path (default: none, i.e. the official model in ``eval()``). Highlight-only
    models (no coordinate head) give ``out_coord=None``.
    """
    reg = reg or NoRegularization()
    video, query, video_mask, query_mask = split_layers(batch, model)
    refined, q_last, coll_v, coll_q = r2_block_train(model.adapter, video, query, video_mask, query_mask, reg)
    levels, strides, refined = model.pyramid(refined)
    out_class = torch.cat([model.class_head(x) for x in levels], dim=1)[..., 0]  # (B, Npts)
    out_coord = None
    if model.coord_head is not None:
        out_coord = torch.cat([model.coord_head(x).exp() * model.coef[i] for i, x in enumerate(levels)], dim=1)
    return TrainOutput(
        out_class=out_class,
        out_coord=out_coord,
        level_sizes=[x.shape[1] for x in levels],
        strides=strides,
        pyramid_mask=level_masks(video_mask, strides),
        video_emb=refined,
        query_emb=model.pooling(q_last, query_mask),
        video_mask=video_mask,
        coll_v=torch.stack(coll_v),
        coll_q=torch.stack([model.pooling(q, query_mask) for q in coll_q]),
    )
