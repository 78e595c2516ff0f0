"""The baseline: what the official single-video script (``tools/inference.py``) does for every request,
built from this project's own modules.

Per request it decodes every sampled frame of the video in one ``get_batch`` call, converts the whole
full-resolution batch to float, crops, resizes and normalises it, runs the CLIP image tower on all frames in
one batch, runs the text tower on the 77-token query, and runs the R2 side network (video and query side) and
the post-processing. Nothing is cached between requests.

Deliberately generous to the baseline: the models are already loaded (the script loads CLIP and the
checkpoint on every run; ``model_load_s`` in the report says how long that takes), and the CLIP stack keeps
only the last k layers instead of all of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import decord
import torch
import torch.nn.functional as F
import torch.utils.dlpack

from models.engine import Grounder
from models.postprocess import NmsConfig, postprocess_boundaries, select_moments
from models.video import sample_indices


@dataclass
class NaiveResult:
    seconds: dict[str, float] = field(default_factory=dict)  # decode, encode_video, text, adapter, total
    frames: int = 0
    saliency: list[float] = field(default_factory=list)
    moments: list[tuple[float, float, float]] = field(default_factory=list)


def load_video(path: str | Path, fps: float, size: int, mean: tuple[float, ...],
               std: tuple[float, ...]) -> torch.Tensor:
    """The official ``load_video``: one decord call for all sampled frames, then whole-batch float ops."""
    reader = decord.VideoReader(str(path))
    indices = sample_indices(len(reader), float(reader.get_avg_fps()), fps)
    batch = reader.get_batch(indices)
    frames = torch.utils.dlpack.from_dlpack(batch.to_dlpack()).permute(0, 3, 1, 2).float() / 255  # (n, 3, H, W)
    del batch, reader
    h, w = frames.shape[-2:]
    s = min(h, w)
    x, y = round((h - s) / 2), round((w - s) / 2)
    frames = frames[..., x:x + s, y:y + s]
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (frames - mean_t) / std_t


def run_naive(grounder: Grounder, path: str | Path, query: str, top_k: int = 10) -> NaiveResult:
    """One request of the official flow on the grounder's CLIP towers and R2 model (its caches are unused)."""
    clip, model, spec, fs = grounder.clip, grounder.model, grounder.spec, grounder.frame_spec
    out = NaiveResult()
    t0 = time.perf_counter()
    frames = load_video(path, fs.fps, fs.size, fs.mean, fs.std)
    t1 = time.perf_counter()
    # The whole video in one forward pass, float32, as the script does.
    video = clip.encode_frames(frames, last_k=model.cfg.k, batch_size=max(1, frames.shape[0]))  # (K, T, P, C)
    out.frames = frames.shape[0]
    del frames
    t2 = time.perf_counter()
    tokens = clip.tokenize([query])  # (1, 77)
    text = clip.encode_text(tokens, last_k=model.cfg.k)  # (K, 1, 77, Cq): all 77 positions
    query_feats = text.permute(1, 0, 2, 3)  # (1, K, 77, Cq)
    mask = (tokens != 0).float()  # attention sees the real tokens ...
    pool_mask = torch.ones_like(mask)  # ... but padding enters the max, as in the script
    t3 = time.perf_counter()
    state = model.prepare_video(video)
    raw = model(state, query_feats, mask, spec.fps, pool_mask)
    duration = state.num_frames / spec.fps
    rows = postprocess_boundaries(raw.boundary[0].float(), duration, spec.unit,
                                  NmsConfig(type=spec.nms_type, thres=spec.nms_thres))
    out.moments = select_moments(rows, top_k, None)
    out.saliency = raw.saliency[0].tolist()
    t4 = time.perf_counter()
    out.seconds = dict(decode=t1 - t0, encode_video=t2 - t1, text=t3 - t2, adapter=t4 - t3, total=t4 - t0)
    return out
