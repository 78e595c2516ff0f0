"""Post-processing parity with the official ``Grounding.evaluate`` (fixture sections 1 and 3).

Cases come from the fixture listings: ``postprocess/postprocess_cases.json`` (hand-made corner cases) and the
stored model ``boundary`` arrays of ``r2_head/`` and ``e2e_tiny/`` with their ``postprocessed`` targets.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.postprocess import NmsConfig, postprocess_boundaries

from fixture_sets import fixture_path, read_listing
from row_compare import assert_rows_match

pytestmark = pytest.mark.reference

# Rounded values are exact multiples of the unit; the rest are copied float32 values, so this is generous.
ATOL = 1e-4

CORNER_CASES = read_listing("postprocess", "postprocess_cases.json")["cases"]


def _model_cases() -> list[tuple[str, str, dict]]:
    """(folder, npz name, settings) for every stored model output and its post-processed target."""
    found = []
    for folder in ("r2_head", "e2e_tiny"):
        for case in read_listing(folder, "cases.json")["cases"]:
            found.append((folder, case["name"], case))
            if case.get("extra_variant"):
                found.append((folder, case["name"], {"name": f"{case['name']}_variant", **case["extra_variant"]}))
    return found


MODEL_CASES = _model_cases()


def _nms(settings: dict | None) -> NmsConfig | None:
    return None if settings is None else NmsConfig.from_mapping(settings)


@pytest.mark.parametrize("case", CORNER_CASES, ids=[case["name"] for case in CORNER_CASES])
def test_corner_case_matches_official(case: dict) -> None:
    boundary = torch.tensor(case["input"], dtype=torch.float32).reshape(-1, 3)
    before = boundary.clone()

    out = postprocess_boundaries(boundary, case["duration"], case["unit"], _nms(case["nms"]))

    assert out.dtype == torch.float32
    assert torch.equal(boundary, before), "the input must not be modified"
    assert_rows_match(out, np.array(case["output"], dtype=np.float32).reshape(-1, 3), atol=ATOL)


def _variant_arrays(data: np.lib.npyio.NpzFile) -> tuple[np.ndarray, np.ndarray]:
    # The variant's arrays are named boundary_fps<...> and postprocessed_fps<...>; there is one of each.
    boundary = [key for key in data.files if key.startswith("boundary_fps")]
    target = [key for key in data.files if key.startswith("postprocessed_fps")]
    assert len(boundary) == 1 and len(target) == 1, f"ambiguous variant arrays in {data.files}"
    return data[boundary[0]], data[target[0]]


@pytest.mark.parametrize(
    ("folder", "file", "settings"), MODEL_CASES, ids=[f"{folder}/{s['name']}" for folder, _, s in MODEL_CASES]
)
def test_stored_model_output_matches_official(folder: str, file: str, settings: dict) -> None:
    with np.load(fixture_path(folder, f"{file}.npz")) as data:
        if settings["name"] == file:
            boundary, target = data["boundary"], data["postprocessed"]
        else:
            boundary, target = _variant_arrays(data)

    out = postprocess_boundaries(
        torch.from_numpy(boundary), settings["duration"], settings["unit"], _nms(settings["nms"])
    )

    assert_rows_match(out, target, atol=ATOL)
