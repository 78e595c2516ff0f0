"""Dropout and drop-path of the official training forward, drawn at random or replayed from stored masks.

The official R2 block has ``Dropout(0.5)`` at positions 1 and 5 of ``video_map`` / ``query_map`` (where
:func:`models.r2._mapping` keeps ``nn.Identity`` placeholders) and its temporal layer applies ``DropPath(0.1)``
to the output of each of its three sub-layers before the residual sum. The training forward asks a
:class:`Regularizer` at each of those sites, naming it by its module path and its call index:

* dropout sites ``adapter.video_map.1``, ``adapter.video_map.5``, ``adapter.query_map.1``,
  ``adapter.query_map.5``; call ``j`` = 0..K-1 is the j-th pass of the R2 loop (deepest CLIP layer first);
* drop-path call ``3*j + s`` with s = 0 (cross-attention), 1 (self-attention), 2 (FFN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class RegularizationConfig:
    """Drop probabilities of the official QVHighlights model config."""

    dropout: float = 0.5  # adapter_cfg.dropout: the four dropouts of video_map / query_map
    drop_path: float = 0.1  # tem_cfg.droppath: per-sample drop of each temporal sub-layer's residual branch


class Regularizer(Protocol):
    def dropout(self, x: Tensor, site: str, call: int) -> Tensor: ...

    def drop_path(self, x: Tensor, call: int) -> Tensor: ...


class NoRegularization:
    """Everything kept: the official model in ``eval()`` mode."""

    def dropout(self, x: Tensor, site: str, call: int) -> Tensor:
        return x

    def drop_path(self, x: Tensor, call: int) -> Tensor:
        return x


class SampledRegularization:
    """Fresh masks from torch's global RNG, drawn with the same calls, shapes and order as the official
    forward, so ``torch.manual_seed(s)`` before the forward gives the masks the official code gets after the
    same seed (on the same torch build: the CPU Bernoulli stream is build-specific)."""

    def __init__(self, cfg: RegularizationConfig = RegularizationConfig()) -> None:
        self.cfg = cfg

    def dropout(self, x: Tensor, site: str, call: int) -> Tensor:
        return F.dropout(x, self.cfg.dropout, training=True)

    def drop_path(self, x: Tensor, call: int) -> Tensor:
        keep_prob = 1 - self.cfg.drop_path
        if keep_prob == 1:
            return x
        # nncore's drop_path: floor(keep_prob + U[0, 1)) is 1 with probability keep_prob, one draw per sample.
        keep = (keep_prob + torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)).floor()
        return x / keep_prob * keep


class ReplayedRegularization:
    """Stored keep-masks (1 = kept) instead of random draws, scaled as the official modules scale them.

    ``dropout_masks[site][call]`` has the shape of that site's input, e.g. (B, T, P, 770) for
    ``adapter.video_map.1``; ``path_keep`` is (calls, B).
    """

    def __init__(self, dropout_masks: Mapping[str, Sequence[Tensor]], path_keep: Tensor,
                 cfg: RegularizationConfig = RegularizationConfig()) -> None:
        self.dropout_masks = dropout_masks
        self.path_keep = path_keep
        self.cfg = cfg

    def dropout(self, x: Tensor, site: str, call: int) -> Tensor:
        mask = self.dropout_masks[site][call]
        if mask.shape != x.shape:
            raise ValueError(f"stored dropout mask {site} call {call} is {tuple(mask.shape)} but the input is "
                             f"{tuple(x.shape)}; the masks belong to another batch")
        # torch's CPU dropout multiplies by mask / (1 - p); the same product keeps the values bit-identical.
        return x * (mask.to(x.dtype) / (1 - self.cfg.dropout))

    def drop_path(self, x: Tensor, call: int) -> Tensor:
        keep = self.path_keep[call].to(x.dtype).reshape((x.shape[0],) + (1,) * (x.dim() - 1))  # (B, 1, 1)
        return x / (1 - self.cfg.drop_path) * keep
