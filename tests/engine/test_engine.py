"""The two-phase engine: caching, batching and input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import tiny_grounder

QUERIES = ["a man is cooking", "dog", "someone opens the door and walks out of the kitchen", "dog"]


@pytest.fixture()
def video() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(9, 3, 64, 64, generator=gen)


def test_encode_video_layout(video) -> None:
    g = tiny_grounder()
    feats = g.encode_video(video)
    assert feats.dtype == torch.float16
    assert tuple(feats.shape) == (g.k, 9, g.clip.num_patches_tokens, g.clip.vision_width)
    # Chunked input gives the same features as one tensor.
    assert torch.equal(g.encode_video([video[:4], video[4:]]), feats)


def test_batched_queries_equal_one_at_a_time(video) -> None:
    g = tiny_grounder()
    feats = g.encode_video(video)
    batched = g.ground(feats, QUERIES, video_key="v")
    for query, together in zip(QUERIES, batched, strict=True):
        (alone,) = g.ground(feats, [query], video_key="v")
        np.testing.assert_allclose(together.saliency, alone.saliency, atol=1e-6)
        np.testing.assert_allclose(np.array(together.moments), np.array(alone.moments), atol=1e-4)
    assert batched[1].moments == batched[3].moments


def test_e2e_path_batches_too(video) -> None:
    g = tiny_grounder(query_path="e2e")
    feats = g.encode_video(video)
    batched = g.ground(feats, QUERIES[:3])
    for query, together in zip(QUERIES[:3], batched, strict=True):
        (alone,) = g.ground(feats, [query])
        np.testing.assert_allclose(together.saliency, alone.saliency, atol=1e-6)


def test_query_on_encoded_video_repeats_no_video_work(video) -> None:
    """After the first query, a query costs only the text tower and the query-dependent adapter."""
    g = tiny_grounder()
    image_calls, video_map_calls = [], []
    g.clip.clip.visual.register_forward_hook(lambda *a: image_calls.append(1))
    g.model.adapter.video_map.register_forward_hook(lambda *a: video_map_calls.append(1))
    feats = g.encode_video(video)
    n_image = len(image_calls) + g.stats["clip_frames"]
    g.ground(feats, ["first query"], video_key="vid")
    assert len(video_map_calls) == g.k  # one video mapping per refined layer
    g.ground(feats, ["second query", "third query"], video_key="vid")
    g.ground(feats, ["first query"], video_key="vid")
    assert len(video_map_calls) == g.k, "video-side adapter work was repeated"
    assert len(image_calls) + g.stats["clip_frames"] == n_image, "CLIP image work was repeated"
    assert g.stats["video_states_built"] == 1 and g.stats["video_state_hits"] == 2
    assert g.stats["text_encodes"] == 3 and g.stats["text_cache_hits"] == 1


def test_state_cache_is_bounded(video) -> None:
    g = tiny_grounder(state_cache_bytes=1)
    feats = g.encode_video(video)
    g.ground(feats, ["x"], video_key="a")
    g.ground(feats, ["x"], video_key="b")
    g.ground(feats, ["x"], video_key="a")
    assert g.stats["video_states_built"] == 3  # only the newest state is kept


def test_bad_features_rejected(video) -> None:
    g = tiny_grounder()
    with pytest.raises(ValueError, match="features must be"):
        g.ground(torch.zeros(2, 3, 4), ["x"])
    with pytest.raises(ValueError, match="no frames"):
        g.encode_video([])


def test_summary_uses_saliency(video) -> None:
    g = tiny_grounder()
    (result,) = g.ground(g.encode_video(video), ["a dog"])
    segments = g.summarize(result, budget=0.25)
    total = sum(e - s for s, e, _ in segments)
    assert 0 < total <= 0.25 * result.duration + 1e-6
    assert all(0 <= s < e <= result.duration for s, e, _ in segments)
