"""End-to-end parity (tiny CLIP + R2, the official single-video script's 77-token path).

Cases come from the `e2e_tiny/cases.json` listing; texts from the `clip_tiny` listing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reference_r2 import SALIENCY_ATOL, assert_boundary_close

from engine_helpers import tiny_grounder
from fixture_sets import read_listing
from r2_cases import case_ids, load_case
from row_compare import assert_rows_match

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def grounder():
    return tiny_grounder(query_path="e2e")


@pytest.mark.parametrize("name", case_ids("e2e_tiny"))
def test_e2e_tiny(name: str, grounder) -> None:
    case, arrays = load_case("e2e_tiny", name)
    text = case.get("text") or read_listing("clip_tiny", "clip_tiny.json")["texts"][case["text_index"]]
    size = grounder.clip.image_size
    frames = torch.from_numpy(arrays["video"][0]).reshape(-1, 3, size, size)  # rows are (C, H, W) flattened
    tokens = torch.from_numpy(arrays["query"][0].astype(np.int64))
    # Our tokenizer must produce the official tokens for the case's text.
    assert torch.equal(grounder.clip.tokenize([text])[0], tokens)

    features = grounder.encode_video(frames, dtype=torch.float32)  # (K, T, P, C)
    state = grounder.video_state(features)
    raw = grounder.predict_raw(state, [text], fps=case["fps"])
    assert_boundary_close(raw.boundary[0].numpy(), arrays["boundary"])
    np.testing.assert_allclose(raw.saliency[0].numpy(), arrays["saliency"], atol=SALIENCY_ATOL, rtol=0)

    # The public API gives the official post-processed rows (all of them with top_k=None).
    (result,) = grounder.ground(state, [text], duration=case["duration"], top_k=None)
    assert_rows_match(np.array(result.moments, dtype=np.float32), arrays["postprocessed"], atol=1e-4)
    np.testing.assert_allclose(result.saliency, arrays["saliency"], atol=SALIENCY_ATOL, rtol=0)
