"""``r2tuning train``: train an R2-Tuning side network on your annotations with the official objective.

Heavy imports happen inside the command so ``r2tuning --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _progress(enabled: bool) -> Any:
    """A tqdm bar over iterations (on a terminal), and one line per validated epoch either way."""
    bar: Any = None
    last_epoch = [-1]

    def update(p: Any) -> None:
        nonlocal bar
        if enabled and bar is None:
            from tqdm import tqdm

            bar = tqdm(total=p.total_iterations, initial=p.iteration, desc="training", unit="it", leave=False)
        if bar is not None:
            bar.update(p.iteration - bar.n)
            if p.losses:
                bar.set_postfix(epoch=f"{p.epoch}/{p.epochs}", loss=f"{p.losses.get('loss', 0):.4f}",
                                lr=f"{p.lr:.2e}", refresh=False)
        if p.epoch != last_epoch[0] and (p.metrics is not None or p.epoch > 0):
            last_epoch[0] = p.epoch
            shown = ", ".join(f"{k} {v:g}" for k, v in (p.metrics or {}).items()
                              if k in ("MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP", "HL-min-VeryGood-mAP", "mAP"))
            line = f"epoch {p.epoch}/{p.epochs}: iteration {p.iteration}, {p.seconds:.1f} s" + (
                f", loss {p.losses['loss']:.4f}" if p.losses else "") + (f"; {shown}" if shown else "")
            (bar.write if bar is not None else print)(line)

    return update


def cmd_train(args: argparse.Namespace) -> int:
    from models.training.run import TrainJob, merge_registry_entry, run_training

    work_dir = Path(args.work_dir or Path("runs") / args.name)
    job = TrainJob(
        name=args.name, annotations=args.annotations, work_dir=str(work_dir), base_model=args.base_model,
        registry=args.registry, format=args.format, val_annotations=args.val, splits=args.splits, domain=args.domain,
        videos=args.videos, video_features=args.video_features, query_features=args.query_features,
        cache_dir=args.cache_dir, preset=args.preset, init=args.init, fps=args.fps, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, warmup_iters=args.warmup_iters, seed=args.seed,
        save_every=args.save_every, val_interval=args.val_interval, max_seconds=args.max_seconds,
        device=args.device, threads=args.threads, resume=not args.no_resume, download=not args.offline)
    outcome = run_training(job, on_progress=_progress(sys.stderr.isatty()))
    result = outcome.result
    print(f"trained {args.name!r}: {result.epochs} epochs, {result.iterations} iterations, {result.seconds:.1f} s, "
          f"{outcome.train_examples} training / {outcome.val_examples} validation examples"
          + (f" (stopped: {result.stopped})" if result.stopped else ""))
    if result.best_metrics is not None:
        key = "mAP" if "mAP" in result.best_metrics else "MR-full-R1@0.5"
        before = (result.initial_metrics or {}).get(key)
        print(f"validation {key}: {before if before is not None else '-'} before training, "
              f"{result.best_metrics[key]} at epoch {result.best_epoch} (kept)")
    print(f"model: {result.model_path}\nresume state: {result.checkpoint_path}\n"
          f"registry entry: {outcome.registry_file}")
    registry = outcome.registry_file
    if args.register:
        registry = merge_registry_entry(outcome.spec, Path(args.register))
        print(f"added to {registry}")
    print(f"serve it: R2_REGISTRY_FILE={registry} R2_MODELS={args.name} r2tuning serve   "
          f"(or: r2tuning ground VIDEO QUERY --registry {registry} --model {args.name})")
    return 0


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train", help="train a model on your annotations (official R2-Tuning objective), then serve it",
        description="Train an R2-Tuning side network with the official objective, optimiser and schedule on "
                    "an annotation file in an official format, from videos (encoded by the serving pipeline of "
                    "the base model and cached) or pre-extracted features. Validates each epoch, writes nncore "
                    "checkpoints, resumes after a kill (run the same command again), and registers the result. "
                    "See docs/training.md.")
    p.add_argument("annotations", help="annotation file: QVHighlights / Charades jsonl, Charades-STA txt, "
                                       "YouTube Highlights or TVSum json")
    p.add_argument("--name", required=True, help="registry name of the trained model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of {vid}.mp4 (or .mkv, .webm, ...) files")
    src.add_argument("--video-features", help="folder of pre-extracted {vid}.npy features (official layout)")
    p.add_argument("--query-features", help="folder of pre-extracted {qid}.npy query features (default: encode "
                                            "the query texts with the base model's CLIP)")
    p.add_argument("--val", help="validation annotations (same format); validated after every epoch")
    p.add_argument("--splits", help="YouTube / TVSum: JSON with train and val video ids (optionally per domain)")
    p.add_argument("--domain", help="key of the split file (e.g. dog, BK); also the served model's domain")
    p.add_argument("--format", default="auto", choices=["auto", "qvhighlights", "charades-sta", "youtube", "tvsum"])
    p.add_argument("--base-model", default="qvhighlights",
                   help="registered model whose CLIP, frame pipeline and architecture are used (default qvhighlights)")
    p.add_argument("--registry", default=os.environ.get("R2_REGISTRY_FILE"),
                   help="JSON file of your own models to register first (default $R2_REGISTRY_FILE)")
    p.add_argument("--preset", choices=["qvhighlights", "charades", "youtube", "tvsum"],
                   help="official training config (default: from the annotation format)")
    p.add_argument("--init", choices=["fresh", "base"], default="fresh",
                   help="fresh: official initialisation; base: fine-tune the base model's weights")
    p.add_argument("--fps", type=float, help="feature clips per second of --video-features (default: the preset's)")
    p.add_argument("--epochs", type=int, help="default: the preset's")
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default: the preset's)")
    p.add_argument("--warmup-iters", type=int, help="linear warm-up iterations (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same weights (default 0)")
    p.add_argument("--work-dir", help="checkpoints and the trained model (default runs/NAME)")
    p.add_argument("--cache-dir", help="encoded video features (default WORK_DIR/features)")
    p.add_argument("--save-every", type=int, default=0, help="also checkpoint every N iterations (default: epochs)")
    p.add_argument("--val-interval", type=int, default=1, help="validate every N epochs (0: never)")
    p.add_argument("--max-seconds", type=float, help="stop after this much training time (a checkpoint is kept)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if WORK_DIR has a checkpoint")
    p.add_argument("--register", help="also add the trained model to this registry file")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.set_defaults(func=cmd_train)
