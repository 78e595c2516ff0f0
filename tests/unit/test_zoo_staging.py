"""`r2tuning download` leaves no lock files (nor other 0-byte files) in checkpoints/.download, whether the network
is unreachable, the server answers without the file, or the download worked (then no scratch file of that
download either). Downloads go through the real code path to test_zoo's Hub server (or a port nobody listens on).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_zoo import FakeHub, _isolated, clip_file, dead_endpoint, hub, hub_file_path, hub_spec  # noqa: F401

from models import zoo
from models.zoo import WeightsUnavailableError, checkpoint_dir, ensure_checkpoint, register_model
from r2tuning.cli import main

SCRATCH = (".lock", ".metadata", ".incomplete", ".part")  # huggingface_hub's and ours


def _left_behind(*, scratch: bool = False) -> list[str]:
    """Lock and empty files in the staging folder (with ``scratch``: any download scratch file too)."""
    staging = checkpoint_dir() / ".download"
    files = [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []
    return sorted(str(p.relative_to(staging)) for p in files
                  if p.name.endswith(SCRATCH if scratch else ".lock") or p.stat().st_size == 0)


def test_unreachable_network_leaves_no_lock_files(dead_endpoint: str, capsys) -> None:  # noqa: F811
    assert main(["download", "qvhighlights"]) == 2
    assert capsys.readouterr().err.startswith("r2tuning: error:")
    assert _left_behind() == []


def test_a_server_without_the_file_leaves_no_lock_files(hub: FakeHub, clip_file: Path) -> None:  # noqa: F811
    """Reachable but answering 404 (a proxy or a mirror without the file): the download starts and fails."""
    spec = hub_spec(b"never uploaded", clip_file)
    with pytest.raises(WeightsUnavailableError):
        ensure_checkpoint(spec, progress=False)
    assert _left_behind() == []


def test_a_finished_download_leaves_only_the_file(hub: FakeHub, clip_file: Path, capsys) -> None:  # noqa: F811
    data = b"checkpoint bytes " * 100
    spec = hub_spec(data, clip_file, name="qvh-staging")
    hub.files[hub_file_path(spec)] = data
    register_model(spec)
    assert main(["download", spec.name]) == 0
    assert (checkpoint_dir() / spec.filename).read_bytes() == data
    assert _left_behind(scratch=True) == []
    assert zoo.missing_files(spec) == []
