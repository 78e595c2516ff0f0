"""The worker's malloc settings (models/allocator.py)."""

from __future__ import annotations

import platform

import pytest

from models import allocator


def test_thresholds_are_set_with_glibc() -> None:
    # CI and the images run Linux with glibc: the setting must take, not fail quietly.
    assert platform.libc_ver()[0] == "glibc"
    assert allocator.keep_freed_blocks() is True


def test_other_platforms_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_blocks() is False
