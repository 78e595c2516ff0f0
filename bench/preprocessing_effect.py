"""How much the two preprocessing pipelines change the answers: the numbers in docs/preprocessing.md.

Generates a video with PyAV, encodes it with the fixtures' tiny R2 + CLIP model in both pipelines ("script" and
"extract", each through ``Grounder.encode_file``), answers the same queries and compares saliency and moments. A
third run (the script's frames with extract_feat.py's constants) shows how much the constants alone change.

    PYTHONPATH=$PWD python bench/preprocessing_effect.py [--seconds 60] [--fps 30]

The fixture directory comes from R2_FIXTURES_DIR (default ../shared/fixtures/reference).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import torch

from models.checkpoint import load_r2_checkpoint
from models.clip import load_clip
from models.engine import Grounder
from models.video import CLIP_MEAN, CLIP_STD, load_frames
from models.zoo import ModelSpec

REPO = Path(__file__).resolve().parents[1]
QUERIES = ["a moving disc", "a rectangle", "a red square appears", "someone is cooking in the kitchen"]


def tiny_grounders() -> dict[str, Grounder]:
    root = Path(os.environ.get("R2_FIXTURES_DIR", REPO.parent / "shared" / "fixtures" / "reference"))
    listing = json.loads((root / "e2e_tiny" / "cases.json").read_text())
    r2 = root / "e2e_tiny" / listing["checkpoint"]
    clip_path = (r2.parent / listing["clip"]).resolve()
    clip, model = load_clip(str(clip_path)), load_r2_checkpoint(str(r2))
    base = ModelSpec(name="tiny", dataset="fixture", domain=None, filename=r2.name, url=None, hash_prefix=None,
                     clip="tiny", clip_pretrained=None, clip_path=str(clip_path), path=str(r2), fps=0.5, unit=2.0,
                     nms_type="normal", nms_thres=0.7, outputs="moments+saliency")
    return {p: Grounder(clip, model, replace(base, preprocess=p)) for p in ("script", "extract")}


def write_video(path: Path, seconds: float, fps: int, size: tuple[int, int] = (640, 360)) -> Path:
    """A textured background, a disc moving all along, a red square shown from 40 % to 65 % of the video."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    background = (rng.integers(0, 60, (height // 8, width // 8, 3)).repeat(8, 0).repeat(8, 1) + 80).astype(np.uint8)
    frames = int(seconds * fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = background.copy()
            cx = int(width * (0.1 + 0.8 * (i / frames)))
            cy = int(height * (0.5 + 0.3 * np.sin(i / fps)))
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < (height // 8) ** 2] = (240, 240, 60)
            if 0.40 <= i / frames < 0.65:
                img[height // 4: height // 4 + height // 3, width // 2: width // 2 + height // 3] = (220, 30, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 1.0


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (no tie correction): do the two saliency curves order the clips alike?"""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def compare(title: str, ref: list, other: list, clips: int) -> None:
    """One table: saliency differences and moment agreement between two answer lists (same queries)."""
    print(f"\n{title}\n")
    print("| query | saliency range | max abs diff | mean abs diff | rank corr. | top-1 (ref) | top-1 (other) "
          "| top-1 IoU | top-5 IoU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    top1, max_diff = [], []
    for a, b in zip(ref, other, strict=True):
        sa, sb = np.array(a.saliency[:clips]), np.array(b.saliency[:clips])
        diff = np.abs(sa - sb)
        top1.append(iou(a.moments[0], b.moments[0]))
        top5 = np.mean([max(iou(m, o) for o in b.moments[:5]) for m in a.moments[:5]])
        max_diff.append(diff.max())
        print(f"| {a.query} | {sa.min():.3f} .. {sa.max():.3f} | {diff.max():.4f} | {diff.mean():.4f} | "
              f"{rank_correlation(sa, sb):.2f} | {a.moments[0][0]:.1f}-{a.moments[0][1]:.1f} s | "
              f"{b.moments[0][0]:.1f}-{b.moments[0][1]:.1f} s | {top1[-1]:.2f} | {top5:.2f} |")
    print(f"\nall queries: max saliency difference {max(max_diff):.4f}, mean top-1 IoU {np.mean(top1):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    grounders = tiny_grounders()
    script = grounders["script"]
    with tempfile.TemporaryDirectory() as folder:
        video = write_video(Path(folder) / "generated.mp4", args.seconds, args.fps)
        encoded = {p: g.encode_file(video, timeout_s=600) for p, g in grounders.items()}
        # The script's frames with extract_feat.py's constants: how much of the difference the constants make.
        clip_constants = replace(script.frame_spec, mean=CLIP_MEAN, std=CLIP_STD)
        constants_only = script.encode_video(load_frames(video, clip_constants))
    answers = {p: grounders[p].ground(feats, QUERIES, duration=info.duration, top_k=5)
               for p, (info, feats) in encoded.items()}
    duration = encoded["script"][0].duration
    answers["constants"] = script.ground(constants_only, QUERIES, duration=duration, top_k=5)
    (s_info, s_feats), (e_info, e_feats) = encoded["script"], encoded["extract"]
    print(f"video: {args.seconds:g} s, {args.fps} fps, 640x360; model: e2e_tiny + clip_tiny at 0.5 fps")
    print(f"clips: script {s_feats.shape[1]} (first at {s_info.clip_times[:3]}), "
          f"extract {e_feats.shape[1]} (first at {e_info.clip_times[:3]})")
    n = min(s_feats.shape[1], e_feats.shape[1])
    for name, feats in (("extract", e_feats), ("script frames, CLIP constants", constants_only)):
        cos = torch.nn.functional.cosine_similarity(s_feats[-1, :n, 0].float(), feats[-1, :n, 0].float(), dim=-1)
        print(f"script vs {name}: last-layer class token, clip by clip, cosine mean {cos.mean():.4f}, "
              f"min {cos.min():.4f}")
    compare("script (ref) vs extract (other)", answers["script"], answers["extract"], n)
    compare("script (ref) vs script frames with CLIP constants (other)", answers["script"], answers["constants"], n)


if __name__ == "__main__":
    main()
