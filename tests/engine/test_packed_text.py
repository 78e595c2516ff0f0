"""The text tower's oneDNN path (models/packed_text.py) against open_clip's own blocks, on random ViT-B/32 weights."""

from __future__ import annotations

import pytest
import torch

from models import clip as clip_module
from models import packed_text
from models.clip import ClipTowers, load_clip

CLIP_STACK_TOLERANCE = 5e-5  # the reference fixtures' tolerance for CLIP tower stacks


@pytest.fixture(scope="module")
def towers() -> ClipTowers:
    torch.manual_seed(3)
    return load_clip("ViT-B-32", pretrained=None, random_init=True)


def _open_clip_stack(towers: ClipTowers, tokens: torch.Tensor) -> torch.Tensor:
    """Every stack entry as open_clip's residual blocks compute it (no packed weights)."""
    length = tokens.shape[1]
    text = towers.clip
    with torch.inference_mode():
        x = text.token_embedding(tokens) + text.positional_embedding[:length]
        entries = clip_module._run_blocks(text.transformer.resblocks, x, towers.causal_mask[:length, :length])
        return torch.stack(list(entries))


def test_the_cpu_build_has_the_packed_linear() -> None:
    # CI runs on x86-64 CPUs, where every PyTorch wheel has oneDNN: the fast path must not silently go missing.
    assert packed_text.available(torch.device("cpu"))
    assert not packed_text.available(torch.device("cuda"))


@pytest.mark.parametrize("width", ["valid tokens", "all 77 positions"])
def test_packed_stack_matches_open_clips_blocks(towers: ClipTowers, width: str) -> None:
    tokens = towers.tokenize(["a man walks a dog along the beach at sunset", "two kids", "the crowd cheers"])
    if width == "valid tokens":
        tokens = tokens[:, : int(towers.valid_lengths(tokens).max())]
    got = towers.encode_text(tokens)
    assert towers._packed_text is not None  # the packed path ran
    want = _open_clip_stack(towers, tokens)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= CLIP_STACK_TOLERANCE


def test_one_query_alone_equals_its_row_in_a_batch(towers: ClipTowers) -> None:
    tokens = towers.tokenize(["a chef opens the fridge", "a cyclist in the rain"])
    batch = towers.encode_text(tokens, last_k=4)
    alone = towers.encode_text(tokens[1:], last_k=4)
    assert (batch[:, 1:] - alone).abs().max().item() <= CLIP_STACK_TOLERANCE


def test_reduced_precision_keeps_the_plain_blocks() -> None:
    torch.manual_seed(4)
    towers = load_clip("ViT-B-32", pretrained=None, random_init=True)
    tokens = towers.tokenize(["a dog"])
    towers.encode_text(tokens, last_k=2, dtype=torch.bfloat16)
    assert towers._packed_text is None  # autocast runs open_clip's blocks in bfloat16, no packed copy is made
