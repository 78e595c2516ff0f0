"""Load official (nncore-format) R2-Tuning checkpoints, reading the architecture from the tensors."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import torch

from .r2 import R2Config, R2Tuning

# Training-loss buffers that official checkpoints carry and inference never uses.
_IGNORED_PREFIXES = ("loss.",)


class CheckpointError(ValueError):
    """A checkpoint file that is unreadable or does not fit the R2-Tuning architecture."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read ``{"meta", "state_dict"}`` (nncore) or a bare state dict, safely (no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors (top-level keys: {_keys(obj)})")
    # Checkpoints saved from a DataParallel wrapper prefix every key with "module.".
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def _keys(obj: object) -> list[str]:
    return sorted(map(str, obj))[:10] if isinstance(obj, dict) else [type(obj).__name__]


def infer_config(state: dict[str, torch.Tensor], **overrides: object) -> R2Config:
    """Recover the architecture from tensor names and shapes.

    Heads of the temporal layer and ``max_num_moment`` cannot be read from tensors; every official config
    uses 8 and 50. ``merge_cls_sal`` follows the coordinate head, as in all official configs
    (highlight-only checkpoints have neither).
    """
    required = ["adapter.video_map.0.weight", "adapter.query_map.0.weight", "adapter.video_map.2.weight",
                "adapter.scale", "coef", "adapter.tem.ffn.mapping.0.weight", "class_head.module.1.weight"]
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"not an R2-Tuning checkpoint: missing keys {missing}")
    video_in = state["adapter.video_map.0.weight"].shape[0]
    # Temporal channels add 2 to the CLIP width, which is always a multiple of 64.
    use_tef = video_in % 64 == 2
    strides = []
    for level in range(state["coef"].shape[0]):
        convs = [k for k in state if re.fullmatch(rf"pyramid\.blocks\.{level}\.\d+\.weight", k)
                 and state[k].dim() == 3]
        strides.append(2 ** len(convs))
    coord_head = any(k.startswith("coord_head.") for k in state)
    cfg = R2Config(
        video_width=video_in - 2 if use_tef else video_in,
        query_width=state["adapter.query_map.0.weight"].shape[0],
        dims=state["adapter.video_map.2.weight"].shape[0],
        k=state["adapter.scale"].shape[0],
        strides=tuple(strides),
        use_tef=use_tef,
        coord_head=coord_head,
        merge_cls_sal=coord_head,
        ffn_hidden=state["adapter.tem.ffn.mapping.0.weight"].shape[0],
        head_kernel=state["class_head.module.1.weight"].shape[-1],
    )
    return replace(cfg, **overrides) if overrides else cfg


def load_r2_checkpoint(path: str | Path, device: str | torch.device = "cpu", **overrides: object) -> R2Tuning:
    """Build the model a checkpoint describes and load it with strict key and shape checking."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(_IGNORED_PREFIXES)}
    # Official R2 checkpoints hold no CLIP weights; if one embeds them, our own CLIP towers still own CLIP.
    state = {k: v for k, v in state.items() if not k.startswith("clip.")}
    cfg = infer_config(state, **overrides)
    model = R2Tuning(cfg)
    expected = model.state_dict()
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in state]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in state.items() if k not in expected]
    problems += [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        raise CheckpointError(f"{path} does not fit the inferred architecture {cfg}: " + "; ".join(problems))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.to(device).eval()
