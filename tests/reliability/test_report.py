"""The document renderer: every check the suite records has a section, and figures come out as written."""

from __future__ import annotations

import pytest

from tests.reliability import report

pytestmark = [pytest.mark.reliability]


def test_the_report_lists_every_check_with_its_figures() -> None:
    entries = {"bodies": {"check": "bodies", "when": "2026-01-01 00:00 UTC",
                          "figures": {"healthz_p99_ms": 12.5, "statuses": {"json": [413]}}}}
    text = report.render(entries)
    for title, _ in report.CHECKS.values():
        assert f"## {title}" in text
    assert "| healthz_p99_ms | 12.5 |" in text and '`{"json": [413]}`' in text
    assert text.count("Not run yet.") == len(report.CHECKS) - 1


def test_the_committed_document_has_a_section_per_check() -> None:
    text = report.DOC.read_text()
    assert all(f"## {title}" in text for title, _ in report.CHECKS.values())
    assert "Not run yet." not in text, "run the reliability suite, then python -m tests.reliability.report"
