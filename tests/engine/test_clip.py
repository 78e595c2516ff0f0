"""CLIP tower loading and shapes without reference fixtures (random weights, no network)."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch

import models.clip as clip_module
from models.clip import EOT_TOKEN, SOT_TOKEN, ClipLoadError, ClipTowers, load_clip

# A small OpenAI-format ViT CLIP with non-default sizes: patch 16, image 48 (3x3 grid -> 10 tokens),
# vision width 128 (2 heads) x 2 layers, text width 64 (1 head) x 2 layers, embed dim 16.
TINY = dict(patch=16, image=48, vision_width=128, vision_layers=2, text_width=64, text_layers=2, embed=16)


def _tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with OpenAI's key names, storage dtypes and the three integer metadata entries."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(
        TINY["embed"],
        vision_cfg=open_clip.CLIPVisionCfg(
            layers=TINY["vision_layers"], width=TINY["vision_width"], patch_size=TINY["patch"], image_size=TINY["image"]
        ),
        text_cfg=open_clip.CLIPTextCfg(
            context_length=77, vocab_size=49408, width=TINY["text_width"], heads=1, layers=2
        ),
        quick_gelu=True,
    )
    state = {}
    for key, value in model.state_dict().items():
        value = value + 0.05 * torch.randn_like(value)  # LayerNorm weights/biases away from 1/0
        half = key.endswith(("in_proj_weight", "in_proj_bias", "proj", "conv1.weight")) or ".mlp." in key
        state[key] = value.half() if half else value
    state.update(input_resolution=torch.tensor(TINY["image"]), context_length=torch.tensor(77))
    state["vocab_size"] = torch.tensor(49408)
    return state


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(_tiny_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_file: Path) -> ClipTowers:
    return load_clip(tiny_file)


@pytest.fixture(scope="module")
def vit_b32() -> ClipTowers:
    return load_clip("ViT-B-32", "openai", random_init=True)


# -- shapes -------------------------------------------------------------------------------------------------


def test_random_init_vit_b32_sizes(vit_b32: ClipTowers) -> None:
    assert vit_b32.name == "ViT-B-32/random"
    assert (vit_b32.image_size, vit_b32.num_patches_tokens, vit_b32.vision_width) == (224, 50, 768)
    assert (vit_b32.text_width, vit_b32.vision_layers, vit_b32.text_layers) == (512, 12, 12)
    assert vit_b32.context_length == 77
    assert vit_b32.quick_gelu  # 'openai' weights were trained with QuickGELU
    assert not any(p.requires_grad for p in vit_b32.parameters())


def test_random_init_vit_b32_stacks(vit_b32: ClipTowers) -> None:
    frames = torch.randn(3, 3, 224, 224)
    full = vit_b32.encode_frames(frames, batch_size=2)
    assert full.shape == (13, 3, 50, 768) and full.dtype == torch.float32
    last = vit_b32.encode_frames(frames, last_k=4, batch_size=3)
    assert last.shape == (4, 3, 50, 768)
    torch.testing.assert_close(last, full[-4:], atol=1e-5, rtol=1e-5)

    tokens = vit_b32.tokenize(["a dog runs on the beach", ""])
    text = vit_b32.encode_text(tokens, last_k=4)
    assert text.shape == (4, 2, 77, 512) and text.dtype == torch.float32


def test_quick_gelu_follows_pretrained_tag() -> None:
    # open_clip's ViT-B-32 config alone would use nn.GELU; a tag trained without QuickGELU keeps it.
    towers = load_clip("ViT-B-32", "laion2b_s34b_b79k", random_init=True)
    assert not towers.quick_gelu


def test_tiny_file_sizes_read_from_tensors(tiny: ClipTowers) -> None:
    assert tiny.name == "tiny_clip"
    assert (tiny.image_size, tiny.num_patches_tokens, tiny.vision_width, tiny.vision_layers) == (48, 10, 128, 2)
    assert (tiny.text_width, tiny.text_layers, tiny.context_length) == (64, 2, 77)
    assert tiny.quick_gelu
    assert tiny.encode_frames(torch.randn(5, 3, 48, 48), batch_size=2).shape == (3, 5, 10, 128)


def test_video_tower_matches_manual_computation(tiny: ClipTowers) -> None:
    """Entry 0 and block 1 by hand: patch conv, class token, positions, ln_pre, pre-LN block with QuickGELU."""
    visual = tiny.clip.visual
    frames = torch.randn(2, 3, 48, 48)
    stack = tiny.encode_frames(frames)
    with torch.no_grad():
        x = torch.nn.functional.conv2d(frames, visual.conv1.weight, stride=16).flatten(2).transpose(1, 2)
        x = torch.cat((visual.class_embedding.expand(2, 1, -1), x), 1) + visual.positional_embedding
        x = torch.nn.functional.layer_norm(x, (128,), visual.ln_pre.weight, visual.ln_pre.bias)
        torch.testing.assert_close(stack[0], x, atol=1e-5, rtol=1e-5)
        block = visual.transformer.resblocks[0]
        h = block.ln_1(x)
        q, k, v = torch.nn.functional.linear(h, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, -1)
        heads = lambda t: t.unflatten(-1, (2, 64)).transpose(1, 2)  # noqa: E731  (2, heads, P, 64)
        att = (heads(q) @ heads(k).transpose(-1, -2) / 8).softmax(-1) @ heads(v)
        x = x + block.attn.out_proj(att.transpose(1, 2).flatten(2))
        h = block.mlp.c_fc(block.ln_2(x))
        x = x + block.mlp.c_proj(h * torch.sigmoid(1.702 * h))
    torch.testing.assert_close(stack[1], x, atol=1e-5, rtol=1e-5)


def test_text_tower_is_causal(tiny: ClipTowers) -> None:
    tokens = tiny.tokenize(["a man is cooking pasta", "dog"])
    full = tiny.encode_text(tokens)
    assert full.shape == (3, 2, 77, 64)
    torch.testing.assert_close(tiny.encode_text(tokens[:, :4]), full[:, :, :4], atol=1e-5, rtol=1e-5)
    # Changing a later token must not change earlier positions.
    changed = tokens.clone()
    changed[:, 10] = 1000
    torch.testing.assert_close(tiny.encode_text(changed)[:, :, :10], full[:, :, :10], atol=1e-6, rtol=0)


def test_reduced_precision(tiny: ClipTowers) -> None:
    frames = torch.randn(2, 3, 48, 48)
    exact = tiny.encode_frames(frames, last_k=2)
    low = tiny.encode_frames(frames, last_k=2, dtype=torch.bfloat16)
    assert low.dtype == torch.float32 and low.shape == exact.shape
    assert (low - exact).abs().max() < 0.1 * exact.abs().max()
    text = tiny.encode_text(tiny.tokenize(["dog"]), dtype=torch.bfloat16)
    assert text.dtype == torch.float32 and torch.isfinite(text).all()
    with pytest.raises(ValueError, match="dtype"):
        tiny.encode_frames(frames, dtype=torch.int8)


def test_input_validation(tiny: ClipTowers) -> None:
    with pytest.raises(ValueError, match=r"\(n, 3, 48, 48\)"):
        tiny.encode_frames(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="last_k"):
        tiny.encode_frames(torch.randn(1, 3, 48, 48), last_k=4)
    with pytest.raises(ValueError, match="last_k"):
        tiny.encode_text(tiny.tokenize(["dog"]), last_k=0)
    with pytest.raises(ValueError, match="tokens"):
        tiny.encode_text(torch.zeros(1, 78, dtype=torch.long))


# -- tokens -------------------------------------------------------------------------------------------------


def test_tokenize_conventions(tiny: ClipTowers) -> None:
    tokens = tiny.tokenize(["dog", "", "word " * 200])
    assert tokens.shape == (3, 77) and tokens.dtype == torch.int64
    assert tokens[:, 0].tolist() == [SOT_TOKEN] * 3
    assert tokens[0, :3].tolist() == [SOT_TOKEN, 1929, EOT_TOKEN] and not tokens[0, 3:].any()
    assert tokens[1, :2].tolist() == [SOT_TOKEN, EOT_TOKEN]
    assert tokens[2, -1] == EOT_TOKEN and (tokens[2] != 0).all()  # truncated, end token forced
    assert ClipTowers.valid_lengths(tokens).tolist() == [3, 2, 77]
    assert torch.equal(tiny.tokenize("dog"), tokens[:1])
    assert torch.equal(tiny.tokenize(["DOG  "]), tokens[:1])  # lower case, whitespace cleaned


# -- loading errors -----------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClipLoadError, match="does not exist") as err:
        load_clip(tmp_path / "ViT-B-32.pt")
    assert str(tmp_path / "ViT-B-32.pt") in str(err.value)


def test_unknown_name_and_tag() -> None:
    with pytest.raises(ClipLoadError, match="unknown CLIP model 'ViT-Q-99'"):
        load_clip("ViT-Q-99")
    with pytest.raises(ClipLoadError, match="no pretrained tag 'nope'.*openai"):
        load_clip("ViT-B-32", "nope")
    with pytest.raises(ClipLoadError, match="random_init=True"):
        load_clip("ViT-B-32", None)


def test_directory_and_random_init_with_file(tmp_path: Path, tiny_file: Path) -> None:
    with pytest.raises(ClipLoadError, match="directory"):
        load_clip(tmp_path)
    with pytest.raises(ClipLoadError, match="random_init"):
        load_clip(tiny_file, random_init=True)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(ClipLoadError, match="not a readable CLIP checkpoint") as err:
        load_clip(path)
    assert str(path) in str(err.value)
    other = tmp_path / "numbers.pth"
    torch.save({"epoch": 3}, other)
    with pytest.raises(ClipLoadError, match="state dict of tensors"):
        load_clip(other)


def test_state_dict_missing_keys(tmp_path: Path) -> None:
    state = _tiny_state_dict()
    del state["visual.proj"]
    path = tmp_path / "no_proj.pt"
    torch.save(state, path)
    with pytest.raises(ClipLoadError, match=r"missing 1 required CLIP key\(s\) \['visual.proj'\]"):
        load_clip(path)

    state = _tiny_state_dict()
    del state["transformer.resblocks.1.mlp.c_fc.bias"]
    path = tmp_path / "no_bias.pt"
    torch.save(state, path)
    with pytest.raises(ClipLoadError, match=r"missing 1 key\(s\) \['transformer.resblocks.1.mlp.c_fc.bias'\]"):
        load_clip(path)


def test_offline_download_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(cfg: dict, cache_dir: str | None = None, **kwargs: object) -> str:
        calls.append(cache_dir)
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(clip_module, "download_pretrained", offline)
    with pytest.raises(ClipLoadError) as err:
        load_clip("ViT-B/32", "openai", cache_dir=tmp_path)
    message = str(err.value)
    assert calls == [str(tmp_path)]
    assert "Network is unreachable" in message
    assert "https://openaipublic.azureedge.net/clip/models/" in message and "ViT-B-32.pt" in message
    assert str(tmp_path / "ViT-B-32.pt") in message  # where to put it
    assert "local OpenAI-format CLIP file" in message


def test_release_file_in_cache_is_used_offline(
    tmp_path: Path, tiny_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise AssertionError("no download expected")

    monkeypatch.setattr(clip_module, "download_pretrained", offline)
    (tmp_path / "ViT-B-32.pt").write_bytes(tiny_file.read_bytes())  # right name, wrong (tiny) weights
    with pytest.raises(ClipLoadError, match="does not match the CLIP architecture.*shape mismatch"):
        load_clip("ViT-B-32", "openai", cache_dir=tmp_path)


# -- fingerprint --------------------------------------------------------------------------------------------


def test_fingerprint(tmp_path: Path, tiny: ClipTowers, tiny_file: Path) -> None:
    assert len(tiny.fingerprint) == 64 and int(tiny.fingerprint, 16) >= 0
    assert load_clip(tiny_file).fingerprint == tiny.fingerprint  # stable across loads

    # Same numbers stored as float32 under another name: same weights, same fingerprint.
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in _tiny_state_dict().items()}
    torch.save(state, tmp_path / "as_fp32.pth")
    assert load_clip(tmp_path / "as_fp32.pth").fingerprint == tiny.fingerprint

    state["ln_final.bias"] = state["ln_final.bias"] + 1e-3
    torch.save(state, tmp_path / "changed.pth")
    assert load_clip(tmp_path / "changed.pth").fingerprint != tiny.fingerprint
    torch.save(_tiny_state_dict(seed=1), tmp_path / "other.pth")
    assert load_clip(tmp_path / "other.pth").fingerprint != tiny.fingerprint


def test_openai_name_spellings() -> None:
    assert clip_module._open_clip_name("ViT-B/32") == "ViT-B-32"
    assert clip_module._open_clip_name("ViT-L/14@336px") == "ViT-L-14-336"
    assert clip_module._open_clip_name("ViT-L/14-336px") == "ViT-L-14-336"
    assert clip_module._open_clip_name("ViT-Z/99") is None
