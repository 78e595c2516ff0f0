"""``python -m service [serve|worker]``: the same as ``r2tuning serve`` / ``r2tuning worker``."""

from __future__ import annotations

import argparse
import sys

from .cli import add_subcommands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="R2-Tuning grounding service")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
