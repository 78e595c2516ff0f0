"""CLIP towers against the official R2-Tuning towers (fixture folder ``clip_tiny/``).

Everything is taken from the listing ``clip_tiny/clip_tiny.json`` (weights ``file``, ``texts``, sizes) and
``towers.npz`` (frames, tokens, ``video_stack``, ``query_stack``), so the same tests run on any fixture set
with that layout, whichever of the two weight formats (TorchScript archive or plain state dict) it ships.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from models.clip import ClipTowers, load_clip

from fixture_sets import fixture_path, read_listing

pytestmark = pytest.mark.reference

LISTING = read_listing("clip_tiny", "clip_tiny.json")
TEXTS: list[str] = LISTING["texts"]
ATOL = 5e-5  # README: observed float32-vs-float64 noise 1e-5 with magnitudes up to 7


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The fixture file's tensors, read independently of models.clip (TorchScript or plain state dict)."""
    is_script = zipfile.is_zipfile(path) and any(n.endswith("/constants.pkl") for n in zipfile.ZipFile(path).namelist())
    if is_script:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is flagged as deprecated
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    return dict(torch.load(path, map_location="cpu", weights_only=True))


@pytest.fixture(scope="module")
def weights_path() -> Path:
    return fixture_path("clip_tiny", LISTING["file"])


@pytest.fixture(scope="module")
def towers(weights_path: Path) -> ClipTowers:
    return load_clip(weights_path)


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    with np.load(fixture_path("clip_tiny", "towers.npz")) as npz:
        return {k: torch.from_numpy(npz[k]) for k in npz.files}


def test_sizes_read_from_weights(towers: ClipTowers) -> None:
    assert towers.image_size == LISTING["image"]
    assert towers.num_patches_tokens == LISTING["tokens"] == LISTING["grid"] ** 2 + 1
    assert towers.vision_width == LISTING["vision_width"]
    assert towers.vision_layers == LISTING["vision_layers"]
    assert towers.text_width == LISTING["text_width"]
    assert towers.text_layers == LISTING["text_layers"]
    assert towers.context_length == LISTING["context"]
    assert towers.quick_gelu


def test_video_stack(towers: ClipTowers, data: dict[str, torch.Tensor]) -> None:
    expected = data["video_stack"]  # (layers+1, N, P, C)
    got = towers.encode_frames(data["frames"])
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("last_k", [1, 2, LISTING["vision_layers"] + 1])
def test_video_last_k_and_batching(towers: ClipTowers, data: dict[str, torch.Tensor], last_k: int) -> None:
    got = towers.encode_frames(data["frames"], last_k=last_k, batch_size=2)
    torch.testing.assert_close(got, data["video_stack"][-last_k:], atol=ATOL, rtol=0)


def test_query_stack(towers: ClipTowers, data: dict[str, torch.Tensor]) -> None:
    expected = data["query_stack"]  # (layers+1, B, 77, C)
    got = towers.encode_text(data["tokens"])
    assert got.dtype == torch.float32 and got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(towers.encode_text(data["tokens"], last_k=2), expected[-2:], atol=ATOL, rtol=0)


def test_tokenize_all(towers: ClipTowers, data: dict[str, torch.Tensor]) -> None:
    tokens = towers.tokenize(TEXTS)
    assert tokens.dtype == torch.int64
    assert torch.equal(tokens, data["tokens"].long())


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_tokenize_each(towers: ClipTowers, data: dict[str, torch.Tensor], index: int) -> None:
    tokens = towers.tokenize(TEXTS[index])
    assert torch.equal(tokens[0], data["tokens"][index].long())
    if "token_lengths" in LISTING:
        assert int(towers.valid_lengths(tokens)[0]) == LISTING["token_lengths"][index]


def test_plain_state_dict_file(
    towers: ClipTowers, weights_path: Path, data: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    state = _read_weights(weights_path)
    plain = tmp_path / "plain_state_dict.pth"
    torch.save(state, plain)
    other = load_clip(plain)
    assert other.fingerprint == towers.fingerprint
    assert torch.equal(other.encode_frames(data["frames"]), towers.encode_frames(data["frames"]))
    assert torch.equal(other.encode_text(data["tokens"]), towers.encode_text(data["tokens"]))


def test_wrapped_state_dict_file(towers: ClipTowers, weights_path: Path, tmp_path: Path) -> None:
    # Training-style checkpoint: {"state_dict": {"module.<key>": tensor}} with the OpenAI metadata dropped.
    state = {f"module.{k}": v for k, v in _read_weights(weights_path).items() if v.ndim or v.is_floating_point()}
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 1}}, wrapped)
    assert load_clip(wrapped).fingerprint == towers.fingerprint


@pytest.mark.parametrize("index", range(len(TEXTS)))
def test_valid_tokens_equal_full_run(towers: ClipTowers, data: dict[str, torch.Tensor], index: int) -> None:
    """Causality: running only the valid tokens gives the full 77-token run's valid positions."""
    tokens = data["tokens"][index : index + 1].long()
    length = int(towers.valid_lengths(tokens)[0])
    short = towers.encode_text(tokens[:, :length])  # (layers+1, 1, length, C)
    full = towers.encode_text(tokens)
    torch.testing.assert_close(short, full[:, :, :length], atol=1e-5, rtol=0)
    torch.testing.assert_close(short, data["query_stack"][:, index : index + 1, :length], atol=ATOL, rtol=0)
