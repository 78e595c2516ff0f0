"""Frozen CLIP towers that return per-layer token stacks, as R2-Tuning consumes them.

R2-Tuning does not use CLIP's pooled embeddings. Its video tower keeps every token of every layer of the
vision transformer and stops before ``ln_post`` and the projection; its query tower keeps every position of
every layer of the (causal) text transformer and stops before ``ln_final`` and the projection. Both stacks
start with the embedding output (entry 0) followed by one entry per residual block, so a ViT-B/32 gives
13 video entries of (50, 768) tokens per frame and 13 query entries of (77, 512) tokens per text.

The modules themselves come from ``open_clip`` (its ``CLIP`` class keeps OpenAI's parameter names); this file
only loads weights, checks that the architecture is the plain OpenAI one and runs the towers layer by layer.

Weights can be

* an OpenAI-format file on disk: a TorchScript archive as OpenAI ships them (``ViT-B-32.pt`` ...) or a plain
  ``torch.save``d state dict with the same keys (optionally under ``state_dict`` and/or with a ``module.``
  prefix), or a ``.safetensors`` file. The architecture (widths, depths, patch, image and context sizes) is
  read from the tensors, like OpenAI's ``build_model``; OpenAI models always use QuickGELU and 64-channel heads.
* an open_clip model name with a pretrained tag (``load_clip("ViT-B-32", "openai")``), downloaded by
  open_clip's own downloader into ``cache_dir``;
* ``random_init=True``: the named architecture with random weights, for benchmarks.

All weights are converted to float32 (as ``clip.load(device="cpu")`` does) and frozen.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP
from open_clip.pretrained import download_pretrained, get_pretrained_cfg, list_pretrained_tags_by_model
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import Tensor, nn

from . import packed_text
from .packed_text import PackedTextTower

__all__ = ["ClipLoadError", "ClipTowers", "load_clip", "SOT_TOKEN", "EOT_TOKEN", "PAD_TOKEN"]

SOT_TOKEN = 49406  # <|startoftext|>
EOT_TOKEN = 49407  # <|endoftext|>
PAD_TOKEN = 0

# The three integer entries OpenAI's archives carry next to the weights (``build_model`` deletes them).
_OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")
_WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar"}
_OPENAI_HEAD_WIDTH = 64
_DEFAULT_CACHE = Path("~/.cache/clip")  # open_clip's default target for OpenAI URL downloads


class ClipLoadError(RuntimeError):
    """CLIP weights could not be found, read or matched to an architecture (the message says what to do)."""


# ----------------------------------------------------------------------------------------------------------
# Towers


class ClipTowers(nn.Module):
    """Frozen CLIP image/text towers returning per-layer token stacks (before ln_post / ln_final).

    Attributes (all read from the weights):
        image_size: input side in pixels (224 for ViT-B/32, 336 for ViT-L/14-336, 64 for the tiny fixture).
        num_patches_tokens: P = grid * grid + 1 tokens per frame (class token first, then the patch grid
            in row-major order).
        vision_width, text_width: channels of the video / query tokens.
        vision_layers, text_layers: residual blocks per tower; the stacks have ``layers + 1`` entries.
        context_length: text positions (77 for OpenAI models).
        name: ``"<model>/<tag>"``, ``"<model>/random"`` or the weight file's stem.
        fingerprint: sha256 hex digest of the float32 weights (see :meth:`fingerprint`).
    """

    def __init__(self, model: CLIP, name: str) -> None:
        super().__init__()
        _check_architecture(model, name)
        model.eval().float()
        for p in model.parameters():
            p.requires_grad_(False)
        self.clip = model
        self.name = name

        visual = model.visual
        self.vision_width = int(visual.conv1.weight.shape[0])
        self.patch_size = int(visual.conv1.weight.shape[-1])
        self.num_patches_tokens = int(visual.positional_embedding.shape[0])
        grid = round((self.num_patches_tokens - 1) ** 0.5)
        self.image_size = self.patch_size * grid
        self.vision_layers = len(visual.transformer.resblocks)
        self.text_width = int(model.token_embedding.weight.shape[1])
        self.text_layers = len(model.transformer.resblocks)
        self.context_length = int(model.positional_embedding.shape[0])
        # Causal mask for the longest context; shorter inputs use its top-left corner.
        causal = torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self._packed_text: PackedTextTower | None = None  # built on the first float32 text run on the CPU

    def train(self, mode: bool = True) -> ClipTowers:
        """The towers are frozen: they always stay in eval mode."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        """Device of the weights (and of the returned stacks)."""
        return self.clip.visual.conv1.weight.device

    @property
    def quick_gelu(self) -> bool:
        """True when every MLP uses QuickGELU, the activation OpenAI's CLIP weights were trained with."""
        blocks = [*self.clip.visual.transformer.resblocks, *self.clip.transformer.resblocks]
        return all(isinstance(b.mlp.gelu, QuickGELU) for b in blocks)

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over the sorted state-dict entries: name, shape, dtype and raw bytes of each tensor.

        The weights are hashed after the float32 conversion, so the same numbers stored as a TorchScript
        archive, a plain state dict, float16 or float32 all give the same fingerprint. Computed once, lazily
        (about a second for ViT-B/32).
        """
        digest = hashlib.sha256()
        state = self.clip.state_dict()
        for key in sorted(state):
            t = state[key].detach().to("cpu").contiguous()
            digest.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    # -- video -------------------------------------------------------------------------------------------

    def encode_frames(
        self,
        frames: Tensor,
        last_k: int | None = None,
        batch_size: int = 64,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Per-layer token stack of normalised frames.

        Args:
            frames: (n, 3, S, S) float, already CLIP-normalised, S = ``image_size``. Any device; batches are
                moved to the towers' device one at a time.
            last_k: keep only the last k stack entries (1 <= k <= vision_layers + 1); others are never stored.
            batch_size: frames per forward pass.
            dtype: None / torch.float32 for the exact float32 path. torch.bfloat16 (CPU or CUDA) or
                torch.float16 (CUDA) run the matrix products under ``torch.autocast`` in that precision;
                the result is float32 either way (stack values then differ from float32 by ~1e-2).
                CPUs without native bf16 units (no AVX512-BF16/AMX) run bf16 several times *slower*.

        Returns:
            (K, n, P, Cv) float32 on the towers' device, K = vision_layers + 1 or ``last_k``; entry 0 (when
            kept) is ``ln_pre`` of the patch + class + position embeddings, entry i the output of block i.
        """
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"frames must have shape (n, 3, {self.image_size}, {self.image_size}) for {self.name}, "
                f"got {tuple(frames.shape)}"
            )
        if not frames.is_floating_point():
            raise ValueError(f"frames must be a normalised float tensor, got {frames.dtype}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        depth = self.vision_layers + 1
        keep = self._check_last_k(last_k, depth)
        first = depth - keep  # stack index of the first kept entry
        n = frames.shape[0]
        out = torch.empty((keep, n, self.num_patches_tokens, self.vision_width), device=self.device)
        visual = self.clip.visual
        with torch.inference_mode(), self._precision(dtype):
            for start in range(0, n, batch_size):
                x = frames[start : start + batch_size].to(self.device, torch.float32)  # (b, 3, S, S)
                b = x.shape[0]
                x = visual.conv1(x).flatten(2).transpose(1, 2)  # (b, grid*grid, Cv), row-major patches
                cls = visual.class_embedding.to(x.dtype).expand(b, 1, -1)
                x = torch.cat((cls, x), dim=1) + visual.positional_embedding.to(x.dtype)  # (b, P, Cv)
                x = visual.ln_pre(x)
                for index, entry in enumerate(_run_blocks(visual.transformer.resblocks, x, None)):
                    if index >= first:
                        out[index - first, start : start + b] = entry  # casts to float32 in place
        return out

    # -- text --------------------------------------------------------------------------------------------

    def encode_text(self, tokens: Tensor, last_k: int | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Per-layer token stack of tokenised texts with CLIP's causal mask.

        Args:
            tokens: (B, L) integer token ids, L <= ``context_length`` (normally the 77 columns of
                :meth:`tokenize`; every position, padding included, is run: position i attends to j <= i).
                Because the mask is causal, a run on the first m tokens equals the first m positions of
                a longer run.
            last_k: keep only the last k stack entries (1 <= k <= text_layers + 1).
            dtype: reduced precision as in :meth:`encode_frames`.

        Returns:
            (K, B, L, Ct) float32; entry 0 (when kept) is token embedding + positional embedding.
        """
        if tokens.ndim != 2 or tokens.shape[1] > self.context_length or tokens.is_floating_point():
            raise ValueError(
                f"tokens must be an integer tensor (B, L) with L <= {self.context_length}, "
                f"got {tuple(tokens.shape)} {tokens.dtype}"
            )
        depth = self.text_layers + 1
        keep = self._check_last_k(last_k, depth)
        first = depth - keep
        batch, length = tokens.shape
        out = torch.empty((keep, batch, length, self.text_width), device=self.device)
        mask = self.causal_mask[:length, :length]  # (L, L) additive, -inf above the diagonal
        text = self.clip
        with torch.inference_mode(), self._precision(dtype):
            x = text.token_embedding(tokens.to(self.device, torch.long))  # (B, L, Ct)
            x = x + text.positional_embedding[:length]
            for index, entry in enumerate(self._text_blocks(x, mask, dtype)):
                if index >= first:
                    out[index - first] = entry
        return out

    def _text_blocks(self, x: Tensor, mask: Tensor, dtype: torch.dtype | None) -> Iterator[Tensor]:
        """The text transformer's stack: in float32 on the CPU through oneDNN's packed linears (2.4-2.9x faster
        than MKL's sgemm for a query's few tokens, see :mod:`models.packed_text`), else the blocks as they are."""
        blocks = self.clip.transformer.resblocks
        if dtype in (None, torch.float32) and packed_text.available(self.device, blocks):
            if self._packed_text is None:
                self._packed_text = PackedTextTower(blocks)
            return self._packed_text.run(x, mask)
        return _run_blocks(blocks, x, mask)

    # -- tokens ------------------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str] | str) -> torch.LongTensor:
        """(B, context_length) int64 tokens, identical to OpenAI's ``clip.tokenize(texts, truncate=True)``.

        Each row is start token 49406, the BPE tokens of the lower-cased, whitespace-cleaned text, end
        token 49407, then zeros; a text that does not fit is cut and its last token forced to 49407.
        """
        if isinstance(texts, str):
            texts = [texts]
        return _tokenizer(self.context_length)(list(texts))

    @staticmethod
    def valid_lengths(tokens: Tensor) -> torch.LongTensor:
        """Number of non-zero tokens per row of (B, L) tokens (start..end inclusive for CLIP tokens).

        This is the official R2-Tuning query mask (``token != 0``) summed per row; the official feature
        extractor keeps that many leading positions. (BPE id 0 is "!" inside a word, so a text like "a!b"
        contains a zero before its end token; the official mask has the same quirk.)
        """
        return (tokens != PAD_TOKEN).sum(dim=-1)

    # -- helpers -----------------------------------------------------------------------------------------

    @staticmethod
    def _check_last_k(last_k: int | None, depth: int) -> int:
        if last_k is None:
            return depth
        if not 1 <= last_k <= depth:
            raise ValueError(f"last_k must be between 1 and {depth} (layers + 1), got {last_k}")
        return last_k

    @contextlib.contextmanager
    def _precision(self, dtype: torch.dtype | None) -> Iterator[None]:
        """Run the body in float32, or under autocast to bfloat16 / float16 on the towers' device."""
        if dtype is None or dtype == torch.float32:
            yield
        elif dtype in (torch.bfloat16, torch.float16):
            # Autocast runs linear/conv/matmul in the low precision and keeps LayerNorm/softmax in float32;
            # no second copy of the weights is kept (on CPU this measured faster than a cast copy, too).
            with torch.autocast(self.device.type, dtype=dtype):
                yield
        else:
            raise ValueError(f"dtype must be None, float32, bfloat16 or float16, got {dtype}")


def _run_blocks(blocks: nn.ModuleList, x: Tensor, mask: Tensor | None) -> Iterator[Tensor]:
    """Yield the embedding input and then each residual block's output, all (B, L, C)."""
    yield x
    batch_first = blocks[0].attn.batch_first
    if not batch_first:  # older open_clip: sequence-first blocks
        x = x.transpose(0, 1)
    for block in blocks:
        x = block(x, attn_mask=mask)
        yield x if batch_first else x.transpose(0, 1)


def _check_architecture(model: nn.Module, name: str) -> None:
    """Refuse models whose towers are not the plain OpenAI ViT CLIP that R2-Tuning was built on."""
    problems = []
    if not isinstance(model, CLIP):
        problems.append(f"model class {type(model).__name__} (needs open_clip.CLIP)")
    elif not isinstance(model.visual, VisionTransformer):
        problems.append(f"vision tower {type(model.visual).__name__} (needs a ViT)")
    else:
        visual = model.visual
        if visual.attn_pool is not None or isinstance(visual.ln_pre, nn.Identity):
            problems.append("attention pooling or no ln_pre in the vision tower")
        if getattr(visual.patch_dropout, "prob", 0.0):
            problems.append("patch dropout")
        if getattr(model, "text_pool_type", "argmax") != "argmax" or model.attn_mask is None:
            problems.append("non-causal or non-argmax text tower")
        for tower in (visual.transformer, model.transformer):
            if not all(isinstance(b, ResidualAttentionBlock) for b in tower.resblocks):
                problems.append("custom residual blocks")
                break
            if any(not isinstance(b.ls_1, nn.Identity) for b in tower.resblocks):
                problems.append("layer scale")
                break
    if problems:
        raise ClipLoadError(
            f"{name}: unsupported CLIP architecture ({'; '.join(problems)}); R2-Tuning needs OpenAI-style ViT "
            "CLIP towers such as ViT-B-32, ViT-B-16, ViT-L-14 or ViT-L-14-336"
        )


@functools.cache
def _tokenizer(context_length: int) -> open_clip.SimpleTokenizer:
    # open_clip's SimpleTokenizer: same BPE vocabulary, cleaning (ftfy, whitespace, lower case) and
    # truncation rule (cut, last token := end-of-text) as OpenAI's clip.tokenize(truncate=True).
    return open_clip.SimpleTokenizer(context_length=context_length)


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_clip(
    spec: str | Path = "ViT-B-32",
    pretrained: str | None = "openai",
    *,
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    random_init: bool = False,
) -> ClipTowers:
    """Load frozen float32 CLIP towers.

    Args:
        spec: a path to a local OpenAI-format weights file (TorchScript archive, plain ``torch.save``d state
            dict or ``.safetensors``; any size, the architecture is read from the tensors, ``pretrained`` is
            ignored), or an open_clip model name such as ``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``,
            ``ViT-L-14-336`` (OpenAI spellings like ``ViT-B/32`` and ``ViT-L/14@336px`` are accepted).
        pretrained: open_clip pretrained tag for a named model (``"openai"`` for the weights R2-Tuning uses).
        cache_dir: download/cache directory for named models (default: open_clip's, ``~/.cache/clip`` for
            OpenAI files and the Hugging Face cache for hub files). An OpenAI file already placed there under
            its release name (e.g. ``ViT-B-32.pt``) is used without any network access.
        device: where the towers live.
        random_init: build the named architecture with random weights instead of loading any (benchmarks);
            uses QuickGELU like the OpenAI models unless ``pretrained`` names a tag trained without it.

    Raises:
        ClipLoadError: missing or unreadable file, unknown name or tag, incomplete state dict, unsupported
            architecture, or a failed download (with the file to fetch and where to put it).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        if random_init:
            raise ClipLoadError(f"random_init=True needs a model name such as ViT-B-32, not a file ({path})")
        model = _build_from_openai_state_dict(_read_state_dict(path), str(path))
        return ClipTowers(model, path.stem).to(device)

    model_name = _open_clip_name(str(spec))
    if model_name is None:
        if path.exists():
            raise ClipLoadError(f"CLIP weights path {path} is a directory, not a weights file")
        if path.suffix in _WEIGHT_SUFFIXES or "/" in str(spec) or "\\" in str(spec):
            raise ClipLoadError(
                f"CLIP weights file {path} does not exist; give the path of an OpenAI-format CLIP file "
                "(e.g. ViT-B-32.pt) or an open_clip model name such as ViT-B-32"
            )
        raise ClipLoadError(
            f"unknown CLIP model {spec!r}: not an existing file and not an open_clip model name "
            "(e.g. ViT-B-32, ViT-B-16, ViT-L-14, ViT-L-14-336)"
        )

    tag_cfg = get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    if pretrained and not tag_cfg:
        tags = ", ".join(list_pretrained_tags_by_model(model_name)) or "none"
        raise ClipLoadError(f"open_clip has no pretrained tag {pretrained!r} for {model_name} (known: {tags})")
    if not pretrained and not random_init:
        raise ClipLoadError(
            f"no weights for {model_name}: give a pretrained tag (e.g. 'openai'), a file path, or random_init=True"
        )
    # open_clip's configs default to nn.GELU; the tag says whether its weights were trained with QuickGELU
    # (True for 'openai'), so the activation is forced from the tag rather than left to the config.
    quick_gelu = bool(tag_cfg.get("quick_gelu", False)) if pretrained else True
    if random_init:
        return ClipTowers(_build_named(model_name, quick_gelu), f"{model_name}/random").to(device)

    weights = _download(model_name, pretrained, tag_cfg, cache_dir)  # before building: fail fast offline
    state = _read_state_dict(weights)
    model = _build_named(model_name, quick_gelu)
    for key in _OPENAI_META_KEYS:
        state.pop(key, None)
    _load_into(model, state, str(weights))
    return ClipTowers(model, f"{model_name}/{pretrained}").to(device)


def _open_clip_name(spec: str) -> str | None:
    """Map ``ViT-B/32``, ``ViT-L/14@336px``, ``ViT-L/14-336px`` ... to open_clip's names; None if unknown."""
    name = re.sub(r"[@-](\d+)px$", r"-\1", spec.strip()).replace("/", "-")
    return name if name in open_clip.list_models() else None


def _build_named(model_name: str, quick_gelu: bool) -> CLIP:
    """Randomly initialised open_clip ``CLIP`` from the built-in config of ``model_name``."""
    cfg = open_clip.get_model_config(model_name) or {}
    special = {"custom_text", "multimodal_cfg"} & set(cfg)
    special |= {k for k in ("timm_model_name",) if k in cfg.get("vision_cfg", {})}
    special |= {k for k in ("hf_model_name",) if k in cfg.get("text_cfg", {})}
    if not cfg or special:
        raise ClipLoadError(
            f"{model_name}: unsupported open_clip model ({', '.join(sorted(special)) or 'no config'}); "
            "R2-Tuning needs OpenAI-style ViT CLIP towers such as ViT-B-32, ViT-B-16, ViT-L-14 or ViT-L-14-336"
        )
    cfg = {**cfg, "quick_gelu": quick_gelu}
    return CLIP(**cfg)


def _download(model_name: str, tag: str, tag_cfg: dict, cache_dir: str | Path | None) -> Path:
    """Fetch the tag's weights with open_clip's downloader; a failure becomes a ClipLoadError."""
    url = tag_cfg.get("url", "")
    local_dir = Path(cache_dir).expanduser() if cache_dir else _DEFAULT_CACHE.expanduser()
    release_file = local_dir / Path(url).name if url else None
    try:
        if release_file is not None and release_file.is_file():
            # An OpenAI release file placed in the cache by hand (offline installs): no network needed.
            return release_file
        target = download_pretrained(tag_cfg, cache_dir=str(cache_dir) if cache_dir else None)
        if not target:
            raise FileNotFoundError("open_clip has no download location for this tag")
        return Path(target)
    except Exception as err:  # network, hub or checksum errors all mean "get the file yourself"
        hub = tag_cfg.get("hf_hub", "")
        where = url or f"https://huggingface.co/{hub}"
        if url and hub:
            where += f" (mirror: https://huggingface.co/{hub.rstrip('/')})"
        hint = (
            f"download {where} and put it at {release_file}, or pass the file's path as the model spec "
            f"(load_clip('/path/to/{Path(url).name}'))"
            if release_file is not None
            else f"download the weights from {where} and pass the file's path as the model spec"
        )
        raise ClipLoadError(
            f"could not download CLIP weights {model_name}/{tag} ({type(err).__name__}: {err}); offline? "
            f"{hint}. Any local OpenAI-format CLIP file (TorchScript archive or state dict) can be given "
            "as the spec instead."
        ) from err


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read the tensors of a TorchScript archive, a torch.save'd state dict or a safetensors file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path), device="cpu")
        elif _is_torchscript(path):
            # OpenAI's release format; tensors come out in their stored dtypes (mostly float16). torch 2.9+
            # flags torch.jit.load as deprecated, but it is the only reader of these archives.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", r".*torch\.jit\.load.* is deprecated", FutureWarning)
                raw = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ClipLoadError(
            f"{path} is not a readable CLIP checkpoint ({type(err).__name__}: {err}); expected an OpenAI "
            "TorchScript archive (e.g. ViT-B-32.pt), a torch.save'd state dict or a .safetensors file"
        ) from err
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not raw or not all(isinstance(v, Tensor) for v in raw.values()):
        raise ClipLoadError(f"{path} does not hold a state dict of tensors (got {type(raw).__name__})")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in raw.items()}


def _is_torchscript(path: Path) -> bool:
    # TorchScript archives are zip files with a constants.pkl record; torch.save zips only have data.pkl.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


_REQUIRED_KEYS = (
    "visual.conv1.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.ln_pre.weight",
    "visual.ln_pre.bias",
    "visual.ln_post.weight",
    "visual.proj",
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "text_projection",
)


def _build_from_openai_state_dict(state: dict[str, Tensor], source: str) -> CLIP:
    """Infer an OpenAI ViT CLIP's sizes from its tensors, build it with QuickGELU and load the weights."""
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        hint = (
            " (this looks like a ResNet CLIP, which R2-Tuning does not use)"
            if "visual.layer1.0.conv1.weight" in state
            else ""
        )
        raise ClipLoadError(
            f"{source}: state dict is missing {len(missing)} required CLIP key(s) {missing[:6]}{hint}; "
            "expected OpenAI ViT CLIP weights (keys like visual.conv1.weight, transformer.resblocks.0.*)"
        )
    conv = state["visual.conv1.weight"]  # (Cv, 3, patch, patch)
    tokens = state["visual.positional_embedding"].shape[0]
    grid = round((tokens - 1) ** 0.5)
    if grid * grid + 1 != tokens:
        raise ClipLoadError(f"{source}: visual.positional_embedding has {tokens} rows, not grid*grid + 1")
    vision_layers = _count_blocks(state, "visual.transformer.resblocks.")
    text_layers = _count_blocks(state, "transformer.resblocks.")
    vision_width, text_width = conv.shape[0], state["ln_final.weight"].shape[0]
    if min(vision_layers, text_layers) < 1 or vision_width < _OPENAI_HEAD_WIDTH or text_width < _OPENAI_HEAD_WIDTH:
        raise ClipLoadError(f"{source}: state dict has no transformer blocks or widths below 64")
    vision_cfg = open_clip.CLIPVisionCfg(
        layers=vision_layers,
        width=vision_width,
        patch_size=conv.shape[-1],
        image_size=conv.shape[-1] * grid,
        head_width=_OPENAI_HEAD_WIDTH,
    )
    text_cfg = open_clip.CLIPTextCfg(
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
        width=text_width,
        heads=text_width // _OPENAI_HEAD_WIDTH,
        layers=text_layers,
    )
    model = CLIP(state["text_projection"].shape[1], vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=True)
    state = {k: v for k, v in state.items() if k not in _OPENAI_META_KEYS}
    _load_into(model, state, source)
    return model


def _count_blocks(state: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def _load_into(model: CLIP, state: Mapping[str, Tensor], source: str) -> None:
    """Strict load (float16 tensors are cast into the float32 parameters); mismatches become ClipLoadError."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) {unexpected[:6]}")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es) {wrong[:4]}")
        raise ClipLoadError(f"{source}: state dict does not match the CLIP architecture: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)
