"""Transformer pieces of the R2 block's temporal refinement, numerically as nncore defines them.

Parameter names (``q``, ``k``, ``v``, ``m``, ``mapping.0`` ...) follow the official checkpoints so that
their state dicts load without renaming.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sine_positional_encoding(length: int, dims: int, device: torch.device | None = None) -> Tensor:
    """Normalised sine/cosine encoding of positions 1..length, shape (length, dims).

    Positions are divided by ``length + 1e-6`` and scaled by 2*pi, so the encoding depends on the relative
    position in the clip; channel pairs (2j, 2j+1) share the frequency 10000^(2j/dims).
    """
    pos = torch.arange(1, length + 1, device=device) + 0.0  # float32 like the reference
    pos = pos / (pos[-1:] + 1e-6) * (2 * math.pi)
    freq = 10000 ** (torch.arange(dims, device=device) // 2 * 2 / dims)
    angles = pos[:, None] / freq  # (length, dims)
    return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with biased q/k/v/out projections and a key-padding mask (1 = keep)."""

    def __init__(self, dims: int, heads: int) -> None:
        super().__init__()
        if dims % heads:
            raise ValueError(f"dims {dims} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dims, dims)
        self.k = nn.Linear(dims, dims)
        self.v = nn.Linear(dims, dims)
        self.m = nn.Linear(dims, dims)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None = None) -> Tensor:
        b, lq, d = q.shape
        h = self.heads
        q = self.q(q).view(b, lq, h, d // h).transpose(1, 2)  # (B, h, Lq, d/h)
        k = self.k(k).view(b, -1, h, d // h).transpose(1, 2)  # (B, h, Lk, d/h)
        v = self.v(v).view(b, -1, h, d // h).transpose(1, 2)
        att = q @ k.transpose(-1, -2) / (d // h) ** 0.5  # (B, h, Lq, Lk)
        if key_mask is not None:
            att = att + torch.where(key_mask > 0, 0.0, float("-inf"))[:, None, None, :]
        out = att.softmax(-1) @ v  # (B, h, Lq, d/h)
        return self.m(out.transpose(1, 2).reshape(b, lq, d))


class FeedForward(nn.Module):
    def __init__(self, dims: int, hidden: int) -> None:
        super().__init__()
        self.mapping = nn.Sequential(nn.Linear(dims, hidden), nn.ReLU(), nn.Linear(hidden, dims))

    def forward(self, x: Tensor) -> Tensor:
        return self.mapping(x)


class TemporalDecoderLayer(nn.Module):
    """Post-norm decoder layer, order cross-attention -> self-attention -> FFN.

    The positional encoding is added to the queries (and the self-attention keys) but never to the memory
    or to any values, as in the official temporal layer.
    """

    def __init__(self, dims: int, heads: int = 8, ffn_hidden: int | None = None) -> None:
        super().__init__()
        self.cross_att = MultiHeadAttention(dims, heads)
        self.cross_att_norm = nn.LayerNorm(dims)
        self.self_att = MultiHeadAttention(dims, heads)
        self.self_att_norm = nn.LayerNorm(dims)
        self.ffn = FeedForward(dims, ffn_hidden or 4 * dims)
        self.ffn_norm = nn.LayerNorm(dims)

    def forward(self, x: Tensor, memory: Tensor, pe: Tensor, video_mask: Tensor | None,
                memory_mask: Tensor | None) -> Tensor:
        # x (B, T, D), memory (B, L, D), pe (T, D)
        x = self.cross_att_norm(x + self.cross_att(x + pe, memory, memory, memory_mask))
        qk = x + pe
        x = self.self_att_norm(x + self.self_att(qk, qk, x, video_mask))
        return self.ffn_norm(x + self.ffn(x))
