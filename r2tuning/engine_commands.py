"""Engine subcommands: ground, models, download, missing, eval.

Heavy imports (torch) happen inside each command so ``r2tuning models`` and ``--help`` stay instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which model to run: a registered one, or a one-off local checkpoint with its settings."""
    p.add_argument("--model", default="qvhighlights", help="model name (see `r2tuning models`)")
    p.add_argument("--registry", default=os.environ.get("R2_REGISTRY_FILE"),
                   help="JSON file of your own models to register first (default $R2_REGISTRY_FILE)")
    p.add_argument("--checkpoint", help="local R2 checkpoint instead of a registered model")
    p.add_argument("--clip-path", help="local OpenAI-format CLIP file (TorchScript or state dict)")
    p.add_argument("--clip", default="ViT-B-32", help="CLIP architecture when --clip-path is not given")
    p.add_argument("--fps", type=float, help="--checkpoint: sampling rate (default 0.5)")
    p.add_argument("--unit", type=float, help="--checkpoint: boundary rounding unit in seconds (default 2)")
    p.add_argument("--nms", choices=["normal", "linear"], help="--checkpoint: NMS type (default normal)")
    p.add_argument("--nms-thres", type=float, help="--checkpoint: normal NMS IoU threshold (default 0.7)")
    p.add_argument("--highlight-only", action="store_true", help="--checkpoint has no moment head")
    p.add_argument("--preprocess", metavar="PIPELINE",
                   help="frame pipeline: extract (the official feature extraction the checkpoints were trained "
                        "on) or script (the official single-video script); default: the model's")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])


def model_spec(args: argparse.Namespace) -> Any:
    """The spec the arguments name (registering the --registry file first)."""
    from models import zoo

    if args.registry:
        zoo.load_registry_file(args.registry, overwrite=True)
    if not args.checkpoint:
        return zoo.get_model(args.model)
    return zoo.ModelSpec(
        name="local", dataset="local", domain=None, filename=Path(args.checkpoint).name, url=None,
        hash_prefix=None, path=str(Path(args.checkpoint).resolve()), clip=args.clip,
        clip_pretrained=None if args.clip_path else "openai",
        clip_path=str(Path(args.clip_path).resolve()) if args.clip_path else None,
        fps=args.fps or 0.5, unit=2.0 if args.unit is None else args.unit, nms_type=args.nms or "normal",
        nms_thres=0.7 if args.nms_thres is None else args.nms_thres,
        outputs="saliency" if args.highlight_only else "moments+saliency")


def grounder(args: argparse.Namespace) -> Any:
    from models.engine import Grounder

    spec = model_spec(args)
    if args.preprocess is not None:  # checked before any weights are fetched
        from models.engine import PREPROCESS_VERSIONS, UnknownPreprocessError

        if args.preprocess not in PREPROCESS_VERSIONS:
            raise UnknownPreprocessError(args.preprocess)
    g = Grounder.from_spec(spec, device=args.device, precision=args.precision)
    return g.variant(preprocess=args.preprocess)


def progress_bar(enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=100, desc="encoding", unit="%", leave=False)

    def update(fraction: float) -> None:
        bar.update(round(fraction * 100) - bar.n)

    return update


def cmd_ground(args: argparse.Namespace) -> int:
    g = grounder(args)
    info, features = g.encode_file(args.video, timeout_s=args.timeout, progress=progress_bar(not args.json))
    results = g.ground(features, args.query, duration=info.duration, top_k=args.top_k, query_path=args.query_path,
                       clip_times=info.player_clip_times())
    payload = [dict(query=r.query, moments=[dict(start=s, end=e, score=c) for s, e, c in r.moments],
                    saliency=r.saliency, clip_seconds=r.clip_seconds, duration=r.duration, clip_times=r.clip_times)
               for r in results]
    for item in payload:
        item["preprocess"] = g.spec.preprocess
    if args.json:
        print(json.dumps(payload if len(payload) > 1 else payload[0], indent=2))
        return 0
    print(f"{args.video}: {info.duration:.1f} s, {features.shape[1]} clips of {results[0].clip_seconds:g} s "
          f"({g.spec.preprocess} frames)")
    for r in results:
        print(f"\nquery: {r.query}")
        if r.moments:
            print(f"{'rank':>4}  {'start':>8}  {'end':>8}  {'score':>7}")
            for i, (s, e, c) in enumerate(r.moments, 1):
                print(f"{i:>4}  {s:>8.2f}  {e:>8.2f}  {c:>7.4f}")
        if r.clip_times:  # each value with the time of its frame
            print("saliency: " + "  ".join(f"{t:.2f}s {v:.3f}" for t, v in zip(r.clip_times, r.saliency, strict=True)))
        else:
            print("saliency: " + " ".join(f"{v:.3f}" for v in r.saliency))
    return 0


def _names(args: argparse.Namespace) -> list[str]:
    from models import zoo

    if args.registry:
        zoo.load_registry_file(args.registry, overwrite=True)
    return [s.name for s in zoo.list_models()] if args.all else (args.names or ["qvhighlights"])


def cmd_download(args: argparse.Namespace) -> int:
    from models import zoo

    for name in _names(args):
        checkpoint, clip = zoo.ensure_weights(name, download=True, progress=True)
        print(f"{name}: checkpoint {checkpoint}\n{name}: CLIP {clip}")
    return 0


def cmd_missing(args: argparse.Namespace) -> int:
    from models import zoo

    incomplete = 0
    for name in _names(args):
        missing = zoo.missing_files(name)
        incomplete += bool(missing)
        print(f"{name}: " + (", ".join(missing) or "complete"))
    return 1 if incomplete else 0


def cmd_models(args: argparse.Namespace) -> int:
    from models import zoo

    if args.registry:
        zoo.load_registry_file(args.registry, overwrite=True)
    rows = [(s.name, s.dataset, s.domain or "-", s.clip, f"{s.fps:g}", "-" if s.unit is None else f"{s.unit:g}",
             s.nms_type if s.has_moments else "-", s.outputs, s.preprocess,
             "yes" if not zoo.missing_files(s) else "no") for s in zoo.list_models()]
    head = ("name", "dataset", "domain", "clip", "fps", "unit", "nms", "outputs", "frames", "downloaded")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """The official metrics table on stdout; notes and per-video failures on stderr (exit 1 if any failed)."""
    from models.eval_runner import evaluate_annotations

    report = evaluate_annotations(
        grounder(args), args.annotations, videos=args.videos, video_features=args.video_features,
        query_features=args.query_features, out=args.out, progress=sys.stderr.isatty(), format=args.format,
        splits=args.splits, split=args.split, domain=args.domain, per_video_fps=not args.model_fps,
        timeout_s=args.timeout)
    print(report.table)
    for note in report.notes:
        print(f"r2tuning: note: {note}", file=sys.stderr)
    for failure in report.failures:
        print(f"r2tuning: video {failure.vid} left out: {failure.reason}", file=sys.stderr)
    print(f"r2tuning: evaluated {report.evaluated} of {report.total} videos"
          + (f"; {len(report.failures)} failed (listed above)" if report.failures else ""), file=sys.stderr)
    return 1 if report.failures else 0


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ground", help="find the moments of a video that match text queries")
    p.add_argument("video")
    p.add_argument("query", nargs="+", help="one or more queries")
    add_model_arguments(p)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--query-path", choices=["features", "e2e"], help="default: the model's")
    p.add_argument("--timeout", type=float, default=600.0, help="decode time limit in seconds")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_ground)

    p = sub.add_parser("models", help="list the registered models (the official zoo and your own)")
    p.add_argument("--registry", default=os.environ.get("R2_REGISTRY_FILE"),
                   help="JSON file of your own models (default $R2_REGISTRY_FILE)")
    p.set_defaults(func=cmd_models)

    for name, func, text in (("download", cmd_download, "download and verify checkpoints and CLIP weights"),
                             ("missing", cmd_missing, "list the weight files models still need (exit 1 if any)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("names", nargs="*", help="model names (default qvhighlights)")
        p.add_argument("--all", action="store_true", help="every registered model")
        p.add_argument("--registry", default=os.environ.get("R2_REGISTRY_FILE"),
                       help="JSON file of your own models (default $R2_REGISTRY_FILE)")
        p.set_defaults(func=func)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a benchmark's annotation file (official metrics)")
    add_model_arguments(p)
    p.add_argument("annotations", help="annotation file in its official format: QVHighlights / Charades-STA / "
                                       "Ego4D-NLQ / TACoS jsonl, youtube_anno.json, tvsum_anno.json")
    p.add_argument("--format", default="auto",
                   help="auto (default: from the content), qvhighlights, charades, ego4d, tacos, youtube, tvsum")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of <vid>.mp4 / .mkv / .webm / .avi / ... video files")
    src.add_argument("--video-features", help="folder of pre-extracted <vid>.npy video features")
    p.add_argument("--query-features",
                   help="folder of pre-extracted query features: <qid>.npy (grounding) or <vid>.npy (YouTube "
                        "Highlights, TVSum); default: encode the annotation's query texts")
    p.add_argument("--splits", help="YouTube Highlights / TVSum: the official datasets/constants.py or a JSON "
                                    "{domain: {split: [vids]}} file; evaluates one domain's split only")
    p.add_argument("--split", default="val", help="split to evaluate with --splits (default val, as the official)")
    p.add_argument("--domain", help="domain to take from --splits (default: the model's)")
    p.add_argument("--model-fps", action="store_true",
                   help="YouTube Highlights from videos: sample at the model's fps, not each video's annotated rate")
    p.add_argument("--timeout", type=float, default=600.0, help="decode time limit per video in seconds")
    p.add_argument("--out", help="also write the predictions (jsonl: the submission, or per-video saliency) here")
    p.set_defaults(func=cmd_eval)
