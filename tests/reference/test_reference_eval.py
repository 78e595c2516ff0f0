"""Evaluation parity with the official ``vtg_eval`` (fixture section 5).

Every ``<prefix>_gt.jsonl`` in ``eval/`` is paired with ``<prefix>_submission.jsonl`` and
``<prefix>_metrics.json``; the whole metrics dict (values and key order) must be identical.
"""

from __future__ import annotations

import json

import pytest

from models.evaluation import evaluate_grounding, load_jsonl

from fixture_sets import fixture_path

pytestmark = pytest.mark.reference

GT_SUFFIX = "_gt.jsonl"


def _prefixes() -> list[str]:
    prefixes = sorted(p.name[: -len(GT_SUFFIX)] for p in fixture_path("eval").glob(f"*{GT_SUFFIX}"))
    if not prefixes:
        raise FileNotFoundError(f"no *{GT_SUFFIX} files in {fixture_path('eval')}")
    return prefixes


PREFIXES = _prefixes()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_metrics_equal_official(prefix: str) -> None:
    ground_truth = load_jsonl(fixture_path("eval", f"{prefix}{GT_SUFFIX}"))
    submission = load_jsonl(fixture_path("eval", f"{prefix}_submission.jsonl"))
    expected = json.loads(fixture_path("eval", f"{prefix}_metrics.json").read_text())

    metrics = evaluate_grounding(submission, ground_truth)

    assert metrics == expected
    # Same nesting order too, so a dump of our result reads like the official one.
    assert json.dumps(metrics) == json.dumps(expected)
