"""The ``r2tuning`` command: ground, models, download, missing, eval, train, serve, worker, healthcheck, bench."""

from __future__ import annotations

import argparse
import sys

from . import engine_commands, service_commands, train_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r2tuning", description="R2-Tuning video temporal grounding.")
    sub = parser.add_subparsers(dest="command", required=True)
    engine_commands.add_subcommands(sub)
    train_commands.add_subcommands(sub)
    service_commands.add_subcommands(sub)
    p = sub.add_parser("bench", help="run the benchmark harness (`r2tuning bench --help` for its options)",
                       add_help=False)
    p.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # every later argument belongs to the harness
        from bench.run import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        try:
            from models.errors import user_error_types
        except ImportError:  # the API image has no engine: every error there is a bug worth a traceback
            raise exc from None
        if not isinstance(exc, user_error_types()):
            raise
        print(f"r2tuning: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
