"""Where the reference fixtures live and how to read their listings.

Every reference test takes its cases from the listing files of the fixture directory named by
``R2_FIXTURES_DIR`` (default ``../shared/fixtures/reference``), never from hard-coded names, so the same
tests run on any fixture set of the same layout. A missing directory or listing is an error at collection
time, never a skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "reference"


def fixtures_root() -> Path:
    root = Path(os.environ.get("R2_FIXTURES_DIR", DEFAULT_FIXTURES)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"reference fixture directory {root} does not exist; set R2_FIXTURES_DIR to a fixture set"
        )
    return root


def fixture_path(*parts: str) -> Path:
    path = fixtures_root().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"fixture file {path} is missing")
    return path


def read_listing(*parts: str) -> dict:
    """Parse a JSON listing (the official dumps use bare NaN tokens, which Python's json accepts)."""
    return json.loads(fixture_path(*parts).read_text())
