"""Benchmark models: the real ViT-B/32 and R2 architectures with random weights (nothing is downloaded).

Timings do not depend on the weight values, but the outputs compared across precisions do, so the R2 side
network gets non-trivial weights: its zero-initialised ``adapter.scale`` and ``adapter.gate`` (which would make
the query-guided pooling a no-op) are set to random values, and every weight is seeded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.clip import ClipTowers, load_clip
from models.engine import Grounder, Precision
from models.r2 import R2Config, R2Tuning
from models.zoo import ModelSpec

CLIP_ARCH = "ViT-B-32"
SEED = 0


def random_clip(device: str = "cpu", seed: int = SEED) -> ClipTowers:
    torch.manual_seed(seed)
    return load_clip(CLIP_ARCH, pretrained=None, random_init=True, device=device)


def random_r2(clip: ClipTowers, seed: int = SEED) -> R2Tuning:
    torch.manual_seed(seed + 1)
    model = R2Tuning(R2Config(video_width=clip.vision_width, query_width=clip.text_width))
    with torch.no_grad():
        model.adapter.scale.uniform_(0.5, 1.5)  # tanh(scale): the pooled query signal enters the video tokens
        model.adapter.gate.uniform_(-1.0, 1.0)  # sigmoid(gate): mix of this layer and the deeper one
    return model.to(clip.device).eval()


def qvhighlights_spec(name: str = "bench", checkpoint: str = "bench-random.pth",
                      clip_path: str | None = None) -> ModelSpec:
    """QVHighlights settings (0.5 fps, 2 s rounding unit, normal NMS at 0.7) on a local random checkpoint."""
    return ModelSpec(name=name, dataset="benchmark", domain=None, filename=Path(checkpoint).name, url=None,
                     hash_prefix=None, clip=CLIP_ARCH, clip_pretrained=None if clip_path else "openai",
                     clip_path=clip_path, path=checkpoint, fps=0.5, unit=2.0, nms_type="normal", nms_thres=0.7,
                     outputs="moments+saliency", query_path="features")


def build_grounder(device: str = "cpu", precision: Precision = "fp32", clip: ClipTowers | None = None,
                   model: R2Tuning | None = None, **kwargs: object) -> Grounder:
    clip = clip or random_clip(device)
    model = model or random_r2(clip)
    return Grounder(clip, model, qvhighlights_spec(), precision=precision, **kwargs)  # type: ignore[arg-type]


def write_model_files(folder: Path, clip: ClipTowers, model: R2Tuning, name: str = "bench") -> Path:
    """Save the random weights as a user model (OpenAI-format CLIP state dict + nncore-style R2 checkpoint)
    and a registry file naming them, as the service loads user models; returns the registry path."""
    folder.mkdir(parents=True, exist_ok=True)
    clip_file, r2_file = folder / "clip-vit-b-32-random.pt", folder / "r2-random.pth"
    if not clip_file.is_file():
        torch.save({k: v.cpu() for k, v in clip.clip.state_dict().items()}, clip_file)
    if not r2_file.is_file():
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, r2_file)
    registry = folder / "models.json"
    entry = dict(name=name, checkpoint_path=str(r2_file), clip_path=str(clip_file), clip=CLIP_ARCH, fps=0.5,
                 unit=2.0, nms_type="normal", nms_thres=0.7)
    registry.write_text(json.dumps({"models": [entry]}, indent=2))
    return registry
