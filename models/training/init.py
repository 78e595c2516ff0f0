"""A fresh side network initialised as the official constructor initialises it (``init=False`` configs).

Every module keeps PyTorch's default initialisation except the temporal layer, which nncore builds with
``att_init_cfg=xavier(uniform)`` (the q / k / v / out projections of both attentions: Xavier-uniform weights, zero
bias) and ``ffn_init_cfg=kaiming`` (both FFN linears: Kaiming-normal weights, fan_out, leaky_relu with a=0, zero
bias). ``gate`` and ``scale`` start at 0 and ``coef`` at 1, as in the official parameters. The draws come from
torch's global generator after ``torch.manual_seed(seed)`` (not the official draw order: a fresh model is a
fresh model, but the same seed gives the same one here).
"""

from __future__ import annotations

import torch
from torch import nn

from ..r2 import R2Config, R2Tuning


def official_init_(model: R2Tuning) -> R2Tuning:
    """Re-initialise the temporal layer's attention and FFN as nncore does (in place)."""
    tem = model.adapter.tem
    for att in (tem.cross_att, tem.self_att):
        for linear in (att.q, att.k, att.v, att.m):
            nn.init.xavier_uniform_(linear.weight, gain=1)
            nn.init.zeros_(linear.bias)
    for layer in tem.ffn.mapping:
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_normal_(layer.weight, a=0, mode="fan_out", nonlinearity="leaky_relu")
            nn.init.zeros_(layer.bias)
    return model


def fresh_model(cfg: R2Config, seed: int) -> R2Tuning:
    """A new side network for ``cfg``, seeded and initialised as the official constructor does."""
    torch.manual_seed(seed)
    return official_init_(R2Tuning(cfg))
