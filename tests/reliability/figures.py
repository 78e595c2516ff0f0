"""Where the reliability checks leave their figures: one JSON file per check under ``reports/reliability/``
(``R2_RELIABILITY_REPORTS`` to move it). ``python -m tests.reliability.report`` renders them into
docs/reliability.md, so the document always shows what the last run measured, never numbers typed by hand."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def reports_dir() -> Path:
    return Path(os.environ.get("R2_RELIABILITY_REPORTS", REPO_ROOT / "reports" / "reliability"))


def record(check: str, **figures: Any) -> None:
    """Write ``check``'s figures of this run (called by the test once its assertions passed or failed alike,
    so a failing run's numbers are there to look at)."""
    folder = reports_dir()
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"check": check, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "figures": figures}
    (folder / f"{check}.json").write_text(json.dumps(entry, indent=1, sort_keys=True))


def load_all() -> dict[str, dict[str, Any]]:
    """Every check's last entry, by check name."""
    folder = reports_dir()
    if not folder.is_dir():
        return {}
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}
