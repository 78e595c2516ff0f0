"""The ``r2tuning`` command: ground, download, models, eval, serve, worker, bench.

Heavy imports (torch, the service) happen inside each command so ``r2tuning models`` and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _model_spec(args: argparse.Namespace):
    from models import zoo

    if args.checkpoint:
        return zoo.ModelSpec(**{**_spec_defaults(args), "path": str(Path(args.checkpoint).resolve())})
    return zoo.get_model(args.model)


def _spec_defaults(args: argparse.Namespace) -> dict:
    """A one-off local model from --checkpoint/--clip-path, with the QVHighlights settings unless overridden."""
    return dict(name="local", dataset="local", domain=None, filename=Path(args.checkpoint).name, url=None,
                hash_prefix=None, clip=args.clip, clip_pretrained=None if args.clip_path else "openai",
                clip_path=str(Path(args.clip_path).resolve()) if args.clip_path else None,
                fps=args.fps or 0.5, unit=2.0, nms_type="normal", nms_thres=0.7,
                outputs="moments+saliency" if not args.highlight_only else "saliency")


def cmd_ground(args: argparse.Namespace) -> int:
    from models.engine import Grounder

    spec = _model_spec(args)
    grounder = Grounder.from_spec(spec, device=args.device, precision=args.precision)
    info, features = grounder.encode_file(args.video, timeout_s=args.timeout, progress=_progress_bar(args))
    results = grounder.ground(features, args.query, duration=info.duration, top_k=args.top_k,
                              query_path=args.query_path)
    payload = [dict(query=r.query, moments=[dict(start=s, end=e, score=c) for s, e, c in r.moments],
                    saliency=r.saliency, clip_seconds=r.clip_seconds, duration=r.duration) for r in results]
    if args.json:
        print(json.dumps(payload if len(payload) > 1 else payload[0], indent=2))
        return 0
    print(f"{args.video}: {info.duration:.1f} s, {features.shape[1]} clips of {results[0].clip_seconds:g} s")
    for r in results:
        print(f"\nquery: {r.query}")
        if r.moments:
            print(f"{'rank':>4}  {'start':>8}  {'end':>8}  {'score':>7}")
            for i, (s, e, c) in enumerate(r.moments, 1):
                print(f"{i:>4}  {s:>8.2f}  {e:>8.2f}  {c:>7.4f}")
        print("saliency: " + " ".join(f"{v:.3f}" for v in r.saliency))
    return 0


def _progress_bar(args: argparse.Namespace):
    if args.json or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=100, desc="encoding", unit="%", leave=False)

    def update(fraction: float) -> None:
        bar.update(round(fraction * 100) - bar.n)

    return update


def cmd_download(args: argparse.Namespace) -> int:
    from models import zoo

    names = [s.name for s in zoo.list_models()] if args.all else (args.names or ["qvhighlights"])
    for name in names:
        spec = zoo.get_model(name)
        path = zoo.ensure_checkpoint(spec, download=True, progress=True)
        print(f"{name}: {path}")
        if not args.skip_clip:
            print(f"{name} CLIP: {zoo.ensure_clip_weights(spec)}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from models import zoo

    rows = [(s.name, s.dataset, s.domain or "-", s.clip, f"{s.fps:g}", s.outputs,
             "yes" if not zoo.missing_files(s) else "no") for s in zoo.list_models()]
    head = ("name", "dataset", "domain", "clip", "fps", "outputs", "downloaded")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for row in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from models.eval_runner import run_eval

    return run_eval(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r2tuning", description="R2-Tuning video temporal grounding.")
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", default="qvhighlights", help="zoo model name (see `r2tuning models`)")
        p.add_argument("--checkpoint", help="local R2 checkpoint instead of a zoo model")
        p.add_argument("--clip-path", help="local OpenAI-format CLIP file (TorchScript or state dict)")
        p.add_argument("--clip", default="ViT-B-32", help="open_clip architecture when --clip-path is not given")
        p.add_argument("--fps", type=float, help="sampling rate for --checkpoint (default 0.5)")
        p.add_argument("--highlight-only", action="store_true", help="--checkpoint has no moment head")
        p.add_argument("--device", default="cpu")
        p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])

    p = sub.add_parser("ground", help="find the moments of a video that match text queries")
    p.add_argument("video")
    p.add_argument("query", nargs="+", help="one or more queries")
    model_args(p)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--query-path", choices=["features", "e2e"], help="default: the model's")
    p.add_argument("--timeout", type=float, default=600.0, help="decode time limit in seconds")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_ground)

    p = sub.add_parser("download", help="download and verify zoo checkpoints (and their CLIP weights)")
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true")
    p.add_argument("--skip-clip", action="store_true")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("eval", help="evaluate a checkpoint on an annotation file")
    model_args(p)
    p.add_argument("annotations", help="jsonl annotations (QVHighlights / Charades-STA format)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--videos", help="folder of {vid}.mp4 files")
    src.add_argument("--video-features", help="folder of pre-extracted {vid}.npy features")
    p.add_argument("--query-features", help="folder of pre-extracted {qid}.npy query features")
    p.add_argument("--out", help="also write the submission jsonl here")
    p.set_defaults(func=cmd_eval)

    try:
        from service.cli import add_subcommands
    except ImportError:  # the service extras are optional for engine-only installs
        pass
    else:
        add_subcommands(sub)

    p = sub.add_parser("bench", help="run the benchmark harness")
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: __import__("bench.run", fromlist=["main"]).main(a.bench_args))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # argparse's REMAINDER drops leading options like --quick
        from bench.run import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        from models.errors import user_error_types

        if not isinstance(exc, user_error_types()):
            raise
        print(f"r2tuning: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
