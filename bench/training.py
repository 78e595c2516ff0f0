"""Training measurements for ``r2tuning bench`` (section ``training``).

1. **Throughput**: official training steps (QVHighlights preset: dropout, drop-path, every loss term, AdamW,
   clipping) of the real side network (ViT-B/32 widths, dims 256, k 4, 50 tokens) on random float16 features
   of 150 s videos (75 clips at 0.5 fps) with 12-token queries. Reported as seconds per epoch per hour of video,
   one query per video (QVHighlights has about 1.4): an hour is 24 videos. The features are pre-computed, as in
   training (the CLIP encoding of the videos is the cold path, measured elsewhere).
2. **Gain**: ``run_training`` on the generated marked-moment dataset (bench/marked_dataset.py) with the tiny CLIP
   of the fixtures, R1@0.5 on its validation split before and after training (full run only; the test suite
   checks the same with a margin).

Target rows (stable ids): ``train_seconds_per_epoch_per_video_hour_cpu`` (or ``_gpu``) and ``train_r1_gain_marked``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

VIDEO_SECONDS = 150.0
CLIPS = 75
QUERY_TOKENS = 12
VIDEOS_PER_HOUR = 3600 / VIDEO_SECONDS


def throughput(device: str, batch: int, iterations: int, warmup: bool = True) -> dict[str, Any]:
    from models.r2 import R2Config
    from models.training import OptimConfig, collate, train_step
    from models.training.batch import GroundingSample
    from models.training.init import fresh_model
    from models.training.labels import bind_boundary
    from models.training.optim import build_optimizer
    from models.training.presets import get_preset
    from models.training.regularization import SampledRegularization

    preset = get_preset("qvhighlights")
    cfg = R2Config(video_width=768, query_width=512)
    model = fresh_model(cfg, 0).to(device).train()
    optimizer = build_optimizer(model, OptimConfig())
    gen = torch.Generator().manual_seed(0)
    samples = []
    for b in range(batch):
        saliency = torch.zeros(CLIPS)
        start = 5 + 7 * b % 50
        saliency[start: start + 10] = 1
        samples.append(GroundingSample(
            video=torch.randn(CLIPS, cfg.k, 50, cfg.video_width, generator=gen).half(),
            query=torch.randn(QUERY_TOKENS, cfg.k, cfg.query_width, generator=gen).half(),
            boundary=bind_boundary([[2.0 * start, 2.0 * start + 20]], CLIPS, 0.5), saliency=saliency,
            pos_clip=start + 3, fps=0.5))
    data = collate(samples).to(device)
    reg = SampledRegularization(preset.reg)
    if warmup:  # the first step allocates: not timed
        train_step(model, data, optimizer, None, reg, preset.loss, preset.optim)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(iterations):
        train_step(model, data, optimizer, None, reg, preset.loss, preset.optim)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    per_iteration = (time.perf_counter() - started) / iterations
    per_sample = per_iteration / batch
    return dict(device=device, batch=batch, iterations=iterations, clips_per_video=CLIPS,
                query_tokens=QUERY_TOKENS, seconds_per_iteration=per_iteration, seconds_per_sample=per_sample,
                seconds_per_epoch_per_video_hour=per_sample * VIDEOS_PER_HOUR, threads=torch.get_num_threads())


def gain(folder: Path, epochs: int, log: Callable[[str], None]) -> dict[str, Any]:
    from bench.marked_dataset import make_marked_dataset
    from models.training.run import TrainJob, run_training

    root = Path(os.environ.get("R2_FIXTURES_DIR", Path(__file__).resolve().parents[2] / "shared" / "fixtures"
                               / "reference"))
    listing = json.loads((root / "e2e_tiny" / "cases.json").read_text())
    r2 = root / "e2e_tiny" / listing["checkpoint"]
    registry = folder / "tiny.json"
    registry.write_text(json.dumps({"models": [dict(name="bench-tiny", checkpoint_path=str(r2), clip="tiny",
                                                    clip_path=str((r2.parent / listing["clip"]).resolve()),
                                                    fps=0.5, unit=2.0)]}))
    data = make_marked_dataset(folder / "marked", num_videos=40, val_videos=12)
    log(f"training on {data.num_videos} marked videos ({epochs} epochs, tiny CLIP)")
    started = time.perf_counter()
    outcome = run_training(TrainJob(
        name="bench-marked", annotations=str(data.train), val_annotations=str(data.val), work_dir=str(folder / "run"),
        base_model="bench-tiny", registry=str(registry), videos=str(data.videos), epochs=epochs, batch_size=8,
        lr=3e-3, warmup_iters=20, seed=0, resume=False, download=False))
    result = outcome.result
    before = (result.initial_metrics or {}).get("MR-full-R1@0.5")
    after = (result.best_metrics or {}).get("MR-full-R1@0.5")
    return dict(videos=data.num_videos, val_queries=outcome.val_examples, epochs=result.epochs,
                r1_at_05_before=before, r1_at_05_after=after, best_epoch=result.best_epoch,
                seconds=time.perf_counter() - started, training_seconds=result.seconds)


def run(device: str, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    batch, iterations = (1, 1) if quick else (32, 5)
    log(f"training throughput: batch {batch}, {iterations} timed iterations on {device}")
    out["throughput"] = throughput(device, batch, iterations, warmup=not quick)
    if quick:
        out["gain"] = {"skipped": "--quick (tests/engine/test_train_gain.py checks the gain)"}
    else:
        with tempfile.TemporaryDirectory(prefix="r2bench-train-") as tmp:
            out["gain"] = gain(Path(tmp), 30, log)
    return out


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    section = report.get("training") or {}
    rows = []
    tp = section.get("throughput") or {}
    device = str(tp.get("device", "cpu"))
    value = tp.get("seconds_per_epoch_per_video_hour")
    kind = "gpu" if device.startswith("cuda") else "cpu"
    rows.append(dict(id=f"train_seconds_per_epoch_per_video_hour_{kind}",
                     name=f"training seconds per epoch per hour of video ({kind})", target="report",
                     measured=value, unit="s", met=None,
                     note=f"batch {tp.get('batch')}, ViT-B/32-sized side network, QVHighlights preset, one query "
                          f"per 150 s video, {tp.get('threads')} threads" + (" (--quick: batch 1, 1 cold iteration)"
                                                                              if report.get("quick") else "")))
    g = section.get("gain") or {}
    before, after = g.get("r1_at_05_before"), g.get("r1_at_05_after")
    delta = after - before if isinstance(before, int | float) and isinstance(after, int | float) else None
    rows.append(dict(id="train_r1_gain_marked", name="R1@0.5 gain of training on marked moments (tiny CLIP)",
                     target=">= 25 points", measured=delta, unit="points",
                     met=None if delta is None or (isinstance(delta, float) and math.isnan(delta)) else delta >= 25,
                     note=g.get("skipped") or f"{before} -> {after} on {g.get('val_queries')} validation queries, "
                                              f"{g.get('epochs')} epochs, {round(g.get('seconds', 0), 1)} s"))
    return rows
