"""Parity of the R2 side network with the official implementation on pre-extracted features.

Cases come from the listings (`cases.json`) of the `r2_head` and `r2_highlight` fixture folders.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.checkpoint import load_r2_checkpoint
from models.postprocess import NmsConfig, postprocess_boundaries

from fixture_sets import fixture_path
from r2_cases import case_ids, features_layout, listing, load_case, video_rows
from row_compare import assert_rows_match

pytestmark = pytest.mark.reference

BOUNDARY_ATOL, BOUNDARY_RTOL, SCORE_ATOL, SALIENCY_ATOL = 2e-4, 1e-5, 1e-5, 2e-6


def _model(folder: str):
    return load_r2_checkpoint(fixture_path(folder, listing(folder)["checkpoint"]))


def _run(model, arrays, fps):
    cfg = model.cfg
    video = features_layout(video_rows(arrays), cfg.k, cfg.video_width)  # (K, T, P, C)
    query = torch.from_numpy(arrays["query"][0].astype(np.float32))  # (L, K*Cq)
    query = features_layout(query, cfg.k, cfg.query_width)[:, :, 0]  # (K, L, Cq)
    state = model.prepare_video(video)
    return model(state, query[None], torch.ones(1, query.shape[1]), fps=fps)


def assert_boundary_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual[:, :2], expected[:, :2], atol=BOUNDARY_ATOL, rtol=BOUNDARY_RTOL)
    np.testing.assert_allclose(actual[:, 2], expected[:, 2], atol=SCORE_ATOL, rtol=0)


def _postprocess(boundary: np.ndarray, duration: float, unit, nms: dict) -> np.ndarray:
    cfg = NmsConfig(type=nms["type"], thres=nms.get("thres", 0.7))
    return postprocess_boundaries(torch.from_numpy(boundary), duration, unit, cfg).numpy()


@pytest.mark.parametrize("name", case_ids("r2_head"))
def test_r2_head(name: str) -> None:
    case, arrays = load_case("r2_head", name)
    model = _model("r2_head")
    out = _run(model, arrays, case["fps"])
    boundary = out.boundary[0].numpy()
    assert_boundary_close(boundary, arrays["boundary"])
    np.testing.assert_allclose(out.saliency[0].numpy(), arrays["saliency"], atol=SALIENCY_ATOL, rtol=0)
    post = _postprocess(boundary, case["duration"], case["unit"], case["nms"])
    assert_rows_match(post, arrays["postprocessed"], atol=1e-4)

    variant = case.get("extra_variant")
    if variant:
        tag = f"fps{variant['fps']:g}"
        out = _run(model, arrays, variant["fps"])
        boundary = out.boundary[0].numpy()
        assert_boundary_close(boundary, arrays[f"boundary_{tag}"])
        np.testing.assert_allclose(out.saliency[0].numpy(), arrays[f"saliency_{tag}"], atol=SALIENCY_ATOL, rtol=0)
        post = _postprocess(boundary, variant["duration"], variant["unit"], variant["nms"])
        key = f"postprocessed_{tag}_unit{variant['unit']:g}_{variant['nms']['type']}"
        assert_rows_match(post, arrays[key], atol=1e-4)


@pytest.mark.parametrize("name", case_ids("r2_highlight"))
def test_r2_highlight(name: str) -> None:
    case, arrays = load_case("r2_highlight", name)
    model = _model("r2_highlight")
    settings = listing("r2_highlight").get("model_settings", {})
    # The architecture read from the tensors must agree with the settings the fixture was made with.
    for key in ("k", "dims", "use_tef", "merge_cls_sal"):
        if key in settings:
            assert getattr(model.cfg, key) == settings[key], key
    if "strides" in settings:
        assert list(model.cfg.strides) == list(settings["strides"])
    out = _run(model, arrays, case["fps"])
    assert out.boundary is None
    np.testing.assert_allclose(out.saliency[0].numpy(), arrays["saliency"], atol=SALIENCY_ATOL, rtol=0)
