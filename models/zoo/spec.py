"""What a model is: :class:`ModelSpec` (its weights and its dataset's inference settings) and the zoo's errors.

Pure data: importing this (or anything in :mod:`models.zoo`) loads neither torch nor open_clip.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, get_args

Outputs = Literal["moments+saliency", "saliency"]
NmsType = Literal["normal", "linear"]
QueryPath = Literal["features", "e2e"]
Preprocess = Literal["script", "extract"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_RE = re.compile(r"[0-9a-f]{6,64}")


class UnknownModelError(KeyError):
    """No model of that name is registered; the message lists the known names."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = list(known)

    def __str__(self) -> str:  # KeyError would print only repr(name)
        return f"unknown model {self.name!r}; known models: {', '.join(self.known)}"


class DuplicateModelError(ValueError):
    """A model of that name is already registered (pass ``overwrite=True`` to replace it)."""


class RegistryError(ValueError):
    """A user registry file is malformed; the message names the file and the entry."""


class ChecksumError(RuntimeError):
    """A weights file does not match the SHA-256 prefix it must have; it was not (and will not be) used."""

    def __init__(self, path: Path, expected: str, actual: str, moved_to: Path | None, deleted: bool) -> None:
        if moved_to is not None:
            fate = f"it was moved aside to {moved_to}"
        elif deleted:
            fate = "the downloaded copy was deleted"
        else:
            fate = "it was left in place but will not be used"
        super().__init__(
            f"checksum mismatch for {path}: sha256 {actual} does not start with {expected}; {fate}. "
            "The file is corrupt, truncated or a different version of the weights."
        )
        self.path = path
        self.expected = expected
        self.actual = actual
        self.moved_to = moved_to


class WeightsUnavailableError(RuntimeError):
    """Weights are not on disk and could not be fetched.

    The message says which file(s) to get, from which URL and where to put them, or how to point to a local file.
    ``missing`` lists the file names; ``urls`` the matching download URLs (``None`` where there is none);
    ``target_dir`` the directory they belong in.
    """

    def __init__(self, message: str, *, missing: list[str], urls: list[str | None], target_dir: Path) -> None:
        super().__init__(message)
        self.missing = missing
        self.urls = urls
        self.target_dir = target_dir


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything needed to fetch a checkpoint and run it the way its dataset config does.

    Values are checked on construction (``ValueError``); files are checked when the spec is registered.
    """

    name: str
    """Registry key used by the API, e.g. ``"qvhighlights"``, ``"youtube-dog"``, ``"tvsum-bk"``."""
    dataset: str
    domain: str | None
    filename: str
    """File name of the checkpoint, e.g. ``"r2_tuning_qvhighlights-ed516355.pth"``."""
    url: str | None
    """Official download URL (``None`` for user-registered local models)."""
    hash_prefix: str | None
    """Hex prefix of the file's SHA-256 (embedded in official file names); ``None`` skips verification."""
    clip: str = "ViT-B-32"
    """open_clip architecture name."""
    clip_pretrained: str | None = "openai"
    """open_clip pretrained tag, downloaded by open_clip (ignored when ``clip_path`` is set)."""
    clip_path: str | None = None
    """Local OpenAI-format CLIP file to use instead of a named download."""
    path: str | None = None
    """Local checkpoint file (user-registered models)."""
    fps: float
    """Frames per second the checkpoint's features were extracted at (the rate to sample videos at)."""
    unit: float | None
    """Rounding unit in seconds for moment boundaries (``None``: no rounding)."""
    nms_type: NmsType
    nms_thres: float
    """IoU threshold of ``normal`` NMS; ``linear`` NMS has no threshold and ignores it."""
    outputs: Outputs
    query_path: QueryPath = "features"
    """How queries reach the R2 block: ``features`` (valid tokens, the path the checkpoints were evaluated on) or
    ``e2e`` (all 77 positions, as the official single-video script does); see fixture README section 7."""
    preprocess: Preprocess = "script"
    """How frames are sampled and prepared: ``script`` (the official single-video script ``tools/inference.py``)
    or ``extract`` (the official feature extraction the checkpoints were trained on)."""
    notes: str = ""

    def __post_init__(self) -> None:
        problems = _spec_problems(self)
        if problems:
            raise ValueError(f"invalid model spec {self.name!r}: " + "; ".join(problems))

    @property
    def has_moments(self) -> bool:
        """Whether the model predicts moment boundaries (highlight-only models output saliency alone)."""
        return self.outputs == "moments+saliency"

    @property
    def is_local(self) -> bool:
        return self.path is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the field names are those :func:`load_registry_file` accepts)."""
        return asdict(self)


def _spec_problems(spec: ModelSpec) -> list[str]:
    out: list[str] = []
    if not isinstance(spec.name, str) or not _NAME_RE.fullmatch(spec.name):
        out.append("name must be 1-64 characters of letters, digits, '.', '_' or '-', starting alphanumeric")
    if not isinstance(spec.dataset, str) or not spec.dataset:
        out.append("dataset must be a non-empty string")
    if not isinstance(spec.filename, str) or not spec.filename or "/" in spec.filename or "\\" in spec.filename:
        out.append("filename must be a plain file name")
    if spec.url is not None and not (isinstance(spec.url, str) and re.match(r"https?://", spec.url)):
        out.append("url must be an http(s) URL")
    if spec.url is None and spec.path is None:
        out.append("a model needs a download url or a local checkpoint path")
    if spec.hash_prefix is not None and not (isinstance(spec.hash_prefix, str) and _HEX_RE.fullmatch(spec.hash_prefix)):
        out.append("hash_prefix must be 6-64 lowercase hex digits")
    if not isinstance(spec.clip, str) or not spec.clip:
        out.append("clip must be an open_clip architecture name")
    if spec.clip_path is None and not spec.clip_pretrained:
        out.append("either clip_pretrained or clip_path is required")
    if not _is_number(spec.fps) or spec.fps <= 0:
        out.append(f"fps must be a positive number, got {spec.fps!r}")
    if spec.unit is not None and (not _is_number(spec.unit) or spec.unit <= 0):
        out.append(f"unit must be a positive number of seconds or null, got {spec.unit!r}")
    if spec.nms_type not in get_args(NmsType):
        out.append(f"nms_type must be one of {get_args(NmsType)}, got {spec.nms_type!r}")
    if not _is_number(spec.nms_thres) or not 0.0 <= spec.nms_thres <= 1.0:
        out.append(f"nms_thres must be in [0, 1], got {spec.nms_thres!r}")
    if spec.outputs not in get_args(Outputs):
        out.append(f"outputs must be one of {get_args(Outputs)}, got {spec.outputs!r}")
    if spec.query_path not in get_args(QueryPath):
        out.append(f"query_path must be one of {get_args(QueryPath)}, got {spec.query_path!r}")
    if spec.preprocess not in get_args(Preprocess):
        out.append(f"preprocess must be one of {get_args(Preprocess)}, got {spec.preprocess!r}")
    return out
