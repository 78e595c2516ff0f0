"""The CLIP text transformer on the CPU with its linear layers prepacked for oneDNN.

A warm query's largest cost is the text tower: 48 products of (tokens x 512) activations with weight matrices
of up to 2048 x 512, 151 MB of float32 weights for a dozen tokens. PyTorch sends float32 linears to MKL's sgemm,
which runs these skinny products at about 40 GFLOP/s on the AMD EPYC machines measured here; oneDNN's matmul on
weights reordered once into its blocked layout runs them 2.4-2.9x faster at every batch size measured (13 to
416 rows). The maths is the same, float32 throughout; only the summation order differs (about 1e-6 relative,
well inside the CLIP-stack tolerance of the reference fixtures).

The blocks are open_clip's ``ResidualAttentionBlock`` (``ClipTowers`` accepts only the plain OpenAI ViT CLIP):
x + ls_1(attn(ln_1(x))), then x + ls_2(mlp(ln_2(x))). The norms, layer scales and activation are the block's
own modules; only the four linears (attention in/out projections, MLP in/out) run through the packed weights.
The packed copies are built once, on first use, and cost as much memory as the text tower's linears (151 MB
for ViT-B/32).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The rows oneDNN picks its blocking for; measured no slower than an exact hint from 13 to 416 rows.
_ROWS_HINT = 64


def available(device: torch.device, blocks: nn.ModuleList | None = None) -> bool:
    """Whether ``blocks`` (when given) can run here: oneDNN's packed linear is a CPU op of PyTorch builds with
    mkldnn (every x86-64 and aarch64 wheel), and the blocks need batch-first attention with one input projection
    (open_clip's since 2.x)."""
    if not (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    return blocks is None or all(b.attn.batch_first and b.attn.in_proj_weight is not None and b.attn.bias_k is None
                                 for b in blocks)


class _PackedLinear:
    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().float(), _ROWS_HINT)
        self.bias = None if bias is None else bias.detach().float()

    def __call__(self, x: Tensor) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


class _PackedBlock:
    def __init__(self, block: nn.Module) -> None:
        attn: nn.MultiheadAttention = block.attn  # of the layout available() checks
        self.block, self.heads = block, attn.num_heads
        self.qkv = _PackedLinear(attn.in_proj_weight, attn.in_proj_bias)
        self.out = _PackedLinear(attn.out_proj.weight, attn.out_proj.bias)
        self.fc = _PackedLinear(block.mlp.c_fc.weight, block.mlp.c_fc.bias)
        self.proj = _PackedLinear(block.mlp.c_proj.weight, block.mlp.c_proj.bias)

    def __call__(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, width = x.shape
        q, k, v = (t.view(b, length, self.heads, -1).transpose(1, 2)
                   for t in self.qkv(self.block.ln_1(x)).chunk(3, dim=-1))  # (B, H, L, Dh) each
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.block.ls_1(self.out(attended.transpose(1, 2).reshape(b, length, width)))
        return x + self.block.ls_2(self.proj(self.block.mlp.gelu(self.fc(self.block.ln_2(x)))))


class PackedTextTower:
    """Runs the residual blocks of a text transformer like :func:`models.clip._run_blocks` does."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        self.blocks = [_PackedBlock(block) for block in blocks]

    def run(self, x: Tensor, mask: Tensor) -> Iterator[Tensor]:
        """Yield the embedding input (B, L, C) and then each block's output; ``mask`` is the additive (L, L)."""
        yield x
        mask = mask.to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
            yield x
