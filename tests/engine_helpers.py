"""Build Grounders on the fixtures' tiny CLIP and R2 weights (no downloads)."""

from __future__ import annotations

from models.checkpoint import load_r2_checkpoint
from models.clip import load_clip
from models.engine import Grounder
from models.zoo import ModelSpec

from fixture_sets import fixture_path, read_listing


def tiny_paths() -> tuple[str, str]:
    """(R2 checkpoint, CLIP file) of the fixtures' end-to-end tiny model, from the e2e_tiny listing."""
    listing = read_listing("e2e_tiny", "cases.json")
    r2 = fixture_path("e2e_tiny", listing["checkpoint"])
    clip = (r2.parent / listing["clip"]).resolve()
    return str(r2), str(clip)


def tiny_spec(query_path: str = "features") -> ModelSpec:
    r2, clip = tiny_paths()
    return ModelSpec(name="tiny", dataset="fixture", domain=None, filename="e2e_tiny_r2.pth", url=None,
                     hash_prefix=None, clip="tiny", clip_pretrained=None, clip_path=clip, path=r2, fps=0.5,
                     unit=2.0, nms_type="normal", nms_thres=0.7, outputs="moments+saliency",
                     query_path=query_path)


def tiny_grounder(query_path: str = "features", **kwargs) -> Grounder:
    r2, clip = tiny_paths()
    return Grounder(load_clip(clip), load_r2_checkpoint(r2), tiny_spec(query_path), **kwargs)
