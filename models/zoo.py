"""Model zoo: the official R2-Tuning checkpoints as one table of data, user models, and verified downloads.

Every model is a :class:`ModelSpec`: where its weights come from (official Hugging Face URL, or a local file the
user registered), the SHA-256 prefix that the official file names carry, which CLIP tower it runs on, and the
inference settings of the dataset config it was trained with (feature fps, rounding unit, NMS, outputs).

Weights are fetched with ``huggingface_hub``:

* Hub URLs (``https://<endpoint>/<owner>/<repo>/resolve/<revision>/<path>``, which is where the official
  checkpoints live) go through :func:`huggingface_hub.hf_hub_download` into a staging folder, which honours
  ``HF_ENDPOINT`` mirrors, tokens, redirects to the CDN, the progress bar and in-transfer resume;
* any other URL goes through ``huggingface_hub``'s :func:`~huggingface_hub.file_download.http_get`, appending to a
  ``.part`` file so that an interrupted download resumes with an HTTP ``Range`` request on the next call.

A downloaded file is moved into :func:`checkpoint_dir` only after its SHA-256 matched, so a file found there is
never half-written. Before the (retrying) download starts, one HEAD request without retries checks that the server
is reachable, so an offline machine fails at once with :class:`WeightsUnavailableError` instead of backing off for
half a minute. The CLIP weights are fetched by open_clip's own pretrained mechanism into ``checkpoint_dir()/clip``.

Run ``python -m models.zoo list | missing NAME... | download NAME...`` to inspect or prefetch.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

log = logging.getLogger(__name__)

Outputs = Literal["moments+saliency", "saliency"]
NmsType = Literal["normal", "linear"]
QueryPath = Literal["features", "e2e"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_RE = re.compile(r"[0-9a-f]{6,64}")
# torch.hub / nncore naming convention: "<stem>-<first hex digits of sha256>.<ext>"
_NAME_HASH_RE = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")
# A file on a Hugging Face Hub (or a mirror): <endpoint>/[datasets/|spaces/]<owner>/<repo>/resolve/<rev>/<path>
_HUB_URL_RE = re.compile(
    r"(?P<endpoint>https?://[^/]+)/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"
    r"/resolve/(?P<revision>[^/]+)/(?P<path>.+)"
)
_DEFAULT_HUB = "https://huggingface.co"
_PROBE_TIMEOUT_S = 10.0
_HASH_CHUNK = 1 << 20


# ----------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# The spec
# ----------------------------------------------------------------------------------------------------------------


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
    return out


# ----------------------------------------------------------------------------------------------------------------
# The official zoo (README "Model Zoo" of github.com/yeliudev/R2-Tuning; settings from configs/)
# ----------------------------------------------------------------------------------------------------------------

OFFICIAL_HUB_DIR = "https://huggingface.co/yeliudev/R2-Tuning/resolve/main/checkpoints/"

_MR: Outputs = "moments+saliency"
_HL: Outputs = "saliency"
_YOUTUBE_FPS_NOTE = (
    "official features use a per-video rate (frames_224_auto: one frame per annotated clip, i.e. number of clips "
    "/ duration); 0.5 fps is this service's sampling default"
)

# Moment retrieval: name, dataset, file stem, sha256 prefix, fps, unit, nms type.
# fps/unit come from configs/_base_/datasets/<ds>.py; NMS is the Grounding.evaluate default (normal, 0.7) unless
# the model config overrides it with `nms_cfg=dict(_delete_=True, type='linear')` (which has no threshold).
_MOMENT_MODELS: tuple[tuple[str, str, str, str, float, float | None, NmsType], ...] = (
    ("qvhighlights", "QVHighlights", "qvhighlights", "ed516355", 0.5, 2.0, "normal"),
    ("charades", "Charades-STA", "charades", "1de02112", 1.0, 0.1, "linear"),
    ("ego4d", "Ego4D-NLQ", "ego4d", "6a6f5754", 0.5, None, "linear"),
    ("tacos", "TACoS", "tacos", "81759b55", 0.5, None, "linear"),
)
# Highlight detection, one checkpoint per domain: config domain code, sha256 prefix, domain title.
_YOUTUBE_DOMAINS: tuple[tuple[str, str, str], ...] = (
    ("dog", "702bd293", "Dog"),
    ("gym", "ff68b1b3", "Gymnastics"),
    ("par", "27442af0", "Parkour"),
    ("ska", "dad28398", "Skating"),
    ("ski", "df2edc4c", "Skiing"),
    ("sur", "d384d8b2", "Surfing"),
)
_TVSUM_DOMAINS: tuple[tuple[str, str, str], ...] = (
    ("BK", "45b59440", "Beekeeping"),
    ("BT", "13683fdf", "Attempting bike tricks"),
    ("DS", "d11b33d3", "Dog show"),
    ("FM", "2c8c119d", "Flash mob gathering"),
    ("GA", "58e79858", "Grooming an animal"),
    ("MS", "d9b4f8fa", "Making sandwich"),
    ("PK", "1830ce03", "Parkour"),
    ("PR", "51d78fc9", "Parade"),
    ("VT", "0069d8d3", "Changing vehicle tire"),
    ("VU", "6f8ebb4b", "Getting vehicle unstuck"),
)


def _official(name: str, dataset: str, domain: str | None, stem: str, prefix: str, **settings: Any) -> ModelSpec:
    filename = f"r2_tuning_{stem}-{prefix}.pth"
    return ModelSpec(
        name=name,
        dataset=dataset,
        domain=domain,
        filename=filename,
        url=OFFICIAL_HUB_DIR + filename,
        hash_prefix=prefix,
        **settings,
    )


OFFICIAL_MODELS: tuple[ModelSpec, ...] = (
    *(
        _official(name, dataset, None, stem, prefix, fps=fps, unit=unit, nms_type=nms, nms_thres=0.7, outputs=_MR)
        for name, dataset, stem, prefix, fps, unit, nms in _MOMENT_MODELS
    ),
    # Highlight-only: strides (1,), no TEF, no coordinate head => saliency only, so unit/NMS never apply.
    *(
        _official(
            f"youtube-{code}",
            "YouTube Highlights",
            code,
            f"youtube_{code}",
            prefix,
            fps=0.5,
            unit=None,
            nms_type="normal",
            nms_thres=0.7,
            outputs=_HL,
            notes=f"{title}. {_YOUTUBE_FPS_NOTE}",
        )
        for code, prefix, title in _YOUTUBE_DOMAINS
    ),
    *(
        _official(
            f"tvsum-{code.lower()}",
            "TVSum",
            code,
            f"tvsum_{code.lower()}",
            prefix,
            fps=0.5,
            unit=None,
            nms_type="normal",
            nms_thres=0.7,
            outputs=_HL,
            notes=title,
        )
        for code, prefix, title in _TVSUM_DOMAINS
    ),
)
_OFFICIAL_BY_NAME = {spec.name: spec for spec in OFFICIAL_MODELS}

# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------

_registry_lock = threading.RLock()
_REGISTRY: dict[str, ModelSpec] = dict(_OFFICIAL_BY_NAME)


def list_models() -> list[ModelSpec]:
    """All registered models: the official zoo in table order, then user models in registration order."""
    with _registry_lock:
        return list(_REGISTRY.values())


def get_model(name: str) -> ModelSpec:
    """The spec registered under ``name``; :class:`UnknownModelError` (a ``KeyError``) lists the known names."""
    with _registry_lock:
        try:
            return _REGISTRY[name]
        except KeyError:
            raise UnknownModelError(name, list(_REGISTRY)) from None


def _check_local_files(spec: ModelSpec) -> None:
    for label, value in (("checkpoint", spec.path), ("CLIP", spec.clip_path)):
        if value is not None and not Path(value).is_file():
            raise FileNotFoundError(f"model {spec.name!r}: {label} file {value} does not exist")


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> None:
    """Add a model (typically the user's own checkpoint from local files) to the registry.

    Local files named by ``path`` / ``clip_path`` must exist (``FileNotFoundError``); a taken name raises
    :class:`DuplicateModelError` unless ``overwrite`` (which may also shadow an official model, e.g. to point it at
    a local copy; :func:`unregister_model` restores it).
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"expected a ModelSpec, got {type(spec).__name__}")
    _check_local_files(spec)
    with _registry_lock:
        if spec.name in _REGISTRY and not overwrite:
            raise DuplicateModelError(f"a model named {spec.name!r} is already registered (use overwrite=True)")
        _REGISTRY[spec.name] = spec


def unregister_model(name: str) -> None:
    """Remove a user model; a shadowed official model comes back. Official models themselves cannot be removed."""
    with _registry_lock:
        current = get_model(name)
        official = _OFFICIAL_BY_NAME.get(name)
        if official is not None and current is official:
            raise ValueError(f"{name!r} is an official model and cannot be unregistered")
        if official is not None:
            _REGISTRY[name] = official
        else:
            del _REGISTRY[name]


def register_local_model(
    name: str,
    checkpoint_path: str | os.PathLike[str],
    *,
    clip_path: str | os.PathLike[str] | None = None,
    clip: str = "ViT-B-32",
    clip_pretrained: str | None = "openai",
    fps: float = 0.5,
    unit: float | None = 2.0,
    nms_type: NmsType = "normal",
    nms_thres: float = 0.7,
    outputs: Outputs = "moments+saliency",
    query_path: QueryPath = "features",
    dataset: str = "custom",
    domain: str | None = None,
    hash_prefix: str | None = None,
    overwrite: bool = False,
) -> ModelSpec:
    """Register the user's own nncore-format checkpoint (and optionally a local CLIP file) under ``name``.

    Defaults are the QVHighlights settings. Missing files raise ``FileNotFoundError``, bad values ``ValueError``,
    a taken name :class:`DuplicateModelError`.
    """
    ckpt = Path(checkpoint_path).expanduser().resolve()
    clip_file = Path(clip_path).expanduser().resolve() if clip_path is not None else None
    spec = ModelSpec(
        name=name,
        dataset=dataset,
        domain=domain,
        filename=ckpt.name,
        url=None,
        hash_prefix=hash_prefix,
        clip=clip,
        clip_pretrained=None if clip_file is not None else clip_pretrained,
        clip_path=str(clip_file) if clip_file is not None else None,
        path=str(ckpt),
        fps=fps,
        unit=unit,
        nms_type=nms_type,
        nms_thres=nms_thres,
        outputs=outputs,
        query_path=query_path,
    )
    register_model(spec, overwrite=overwrite)
    return spec


_SPEC_FIELDS = frozenset(f.name for f in fields(ModelSpec))
_LOCAL_DEFAULTS: dict[str, Any] = {
    "dataset": "custom",
    "domain": None,
    "url": None,
    "hash_prefix": None,
    "fps": 0.5,
    "unit": 2.0,
    "nms_type": "normal",
    "nms_thres": 0.7,
    "outputs": "moments+saliency",
}


def _spec_from_entry(entry: object, base: Path) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ValueError("each entry must be a JSON object")
    data = dict(entry)
    if "checkpoint_path" in data:  # friendlier alias of `path`
        if "path" in data:
            raise ValueError("give either 'checkpoint_path' or 'path', not both")
        data["path"] = data.pop("checkpoint_path")
    unknown = sorted(set(data) - _SPEC_FIELDS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(_SPEC_FIELDS | {'checkpoint_path'})}")
    if "name" not in data:
        raise ValueError("'name' is required")
    for key in ("path", "clip_path"):  # relative paths are relative to the registry file
        if data.get(key) is not None:
            data[key] = str((base / Path(str(data[key])).expanduser()).resolve())
    if data.get("path") is None and data.get("url") is None:
        raise ValueError("needs 'checkpoint_path' (a local file) or 'url'")
    if "filename" not in data:
        source = data["path"] if data.get("path") is not None else str(data["url"]).split("?")[0]
        data["filename"] = Path(source).name
    if "hash_prefix" not in data and data.get("path") is None:
        match = _NAME_HASH_RE.search(data["filename"])  # remote file named "<stem>-<sha256 prefix>.pth"
        data["hash_prefix"] = match.group(1) if match else None
    if data.get("clip_path") is not None and "clip_pretrained" not in data:
        data["clip_pretrained"] = None
    spec = ModelSpec(**{**_LOCAL_DEFAULTS, **data})
    _check_local_files(spec)
    return spec


def load_registry_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> list[ModelSpec]:
    """Register the user models listed in a JSON file and return their specs.

    The file holds ``{"models": [entry, ...]}`` or a bare list. An entry uses :class:`ModelSpec` field names
    (``checkpoint_path`` is accepted for ``path``; relative paths are relative to the file); only ``name`` and
    ``checkpoint_path`` (or ``url``) are required, the rest defaults as in :func:`register_local_model`.
    All entries are checked before any is registered, so a bad file registers nothing (:class:`RegistryError`).
    """
    file = Path(path).expanduser().resolve()
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RegistryError(f"cannot read model registry {file}: {err}") from err
    entries = document.get("models") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise RegistryError(f'model registry {file}: expected a list of models or {{"models": [...]}}')
    specs: list[ModelSpec] = []
    for index, entry in enumerate(entries):
        label = entry.get("name") if isinstance(entry, dict) else None
        try:
            specs.append(_spec_from_entry(entry, file.parent))
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise RegistryError(f"model registry {file}, entry {index} ({label!r}): {err}") from err
    names = [spec.name for spec in specs]
    with _registry_lock:
        for spec in specs:
            if names.count(spec.name) > 1:
                raise RegistryError(f"model registry {file}: name {spec.name!r} appears more than once")
            if spec.name in _REGISTRY and not overwrite:
                raise RegistryError(f"model registry {file}: a model named {spec.name!r} is already registered")
        for spec in specs:
            _REGISTRY[spec.name] = spec
    return specs


# ----------------------------------------------------------------------------------------------------------------
# Local files and verification
# ----------------------------------------------------------------------------------------------------------------

_REPO_ROOT = Path(__file__).resolve().parent.parent


def checkpoint_dir() -> Path:
    """Where checkpoints live: ``$R2_CHECKPOINT_DIR``, default ``<repo>/checkpoints`` (read on every call)."""
    env = os.environ.get("R2_CHECKPOINT_DIR")
    return Path(env).expanduser().absolute() if env else _REPO_ROOT / "checkpoints"


def clip_dir() -> Path:
    """open_clip's download cache for the CLIP weights: ``checkpoint_dir()/clip``."""
    return checkpoint_dir() / "clip"


def checkpoint_path(spec: ModelSpec) -> Path:
    """The checkpoint's local path: the registered file for user models, else ``checkpoint_dir()/filename``."""
    return Path(spec.path) if spec.path is not None else checkpoint_dir() / spec.filename


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# Files already hashed in this process, keyed by identity + size + mtime, so readiness checks and per-request
# ensure_checkpoint() calls do not re-hash hundreds of MB.
_verified: set[tuple[str, int, int, str]] = set()


def verify_file(path: str | os.PathLike[str], hash_prefix: str | None, *, quarantine: bool = True) -> None:
    """Check that the file's SHA-256 starts with ``hash_prefix`` (``None``: nothing to check).

    On a mismatch the file is moved aside to ``<name>.corrupt`` (unless ``quarantine=False``, used for files the
    user owns) and :class:`ChecksumError` is raised, so the bad file is never picked up again as valid.
    """
    if hash_prefix is None:
        return
    file = Path(path)
    stat = file.stat()
    key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, hash_prefix)
    if key in _verified:
        return
    actual = sha256_file(file)
    if actual.startswith(hash_prefix):
        _verified.add(key)
        return
    moved_to = None
    if quarantine:
        moved_to = file.with_name(file.name + ".corrupt")
        os.replace(file, moved_to)
    raise ChecksumError(file, hash_prefix, actual, moved_to, deleted=False)


# ----------------------------------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _HubFile:
    endpoint: str
    repo_type: str | None
    repo_id: str
    revision: str
    path: str


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _offline() -> bool:
    from huggingface_hub import constants

    # The library reads HF_HUB_OFFLINE once at import; the environment is re-read so it can change at run time.
    return constants.is_offline_mode() or _env_true("HF_HUB_OFFLINE")


def _hub_endpoint(endpoint: str = _DEFAULT_HUB) -> str:
    """The endpoint to use for a Hub URL: ``HF_ENDPOINT`` (a mirror) replaces huggingface.co."""
    if endpoint.rstrip("/") != _DEFAULT_HUB:
        return endpoint.rstrip("/")
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _parse_hub_url(url: str) -> _HubFile | None:
    match = _HUB_URL_RE.fullmatch(url.split("?")[0])
    if match is None:
        return None
    kind = match["kind"]
    return _HubFile(
        endpoint=_hub_endpoint(match["endpoint"]),
        repo_type={"datasets": "dataset", "spaces": "space"}.get(kind) if kind else None,
        repo_id=match["repo"],
        revision=match["revision"],
        path=match["path"],
    )


def _tqdm_class(progress: bool) -> Any:
    if progress:
        return None  # huggingface_hub's own bar (honours HF_HUB_DISABLE_PROGRESS_BARS)
    from tqdm.auto import tqdm

    class _Quiet(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Quiet


def _fetch_from_hub(hub: _HubFile, staging: Path, progress: bool) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    url = hf_hub_url(hub.repo_id, hub.path, repo_type=hub.repo_type, revision=hub.revision, endpoint=hub.endpoint)
    # One HEAD without retries: hf_hub_download retries connection errors with backoff (~25 s) when nothing is
    # cached, which is the wrong behaviour for an offline machine.
    get_hf_file_metadata(url, timeout=_PROBE_TIMEOUT_S, endpoint=hub.endpoint)
    fetched = hf_hub_download(
        hub.repo_id,
        hub.path,
        repo_type=hub.repo_type,
        revision=hub.revision,
        local_dir=staging,
        endpoint=hub.endpoint,
        tqdm_class=_tqdm_class(progress),
    )
    return Path(str(fetched))


def _fetch_plain(url: str, staging: Path, filename: str, progress: bool) -> Path:
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import get_session, hf_raise_for_status

    head = get_session().head(url, follow_redirects=True, timeout=_PROBE_TIMEOUT_S)
    hf_raise_for_status(head)
    length = head.headers.get("Content-Length")
    encoded = head.headers.get("Content-Encoding", "identity").lower() != "identity"
    size = int(length) if length is not None and not encoded else None
    part = staging / f"{filename}.part"
    staging.mkdir(parents=True, exist_ok=True)
    if part.exists() and size is not None and part.stat().st_size > size:
        part.unlink()  # longer than the remote file: not a prefix of it
    with open(part, "ab") as f:
        # Resumes from what an earlier, interrupted call left (HTTP Range); http_get restarts if Range is ignored.
        http_get(
            url,
            f,
            resume_size=f.tell(),
            expected_size=size,
            displayed_filename=filename,
            tqdm_class=_tqdm_class(progress),
        )
    return part


def _download_failure(spec: ModelSpec, reason: str) -> WeightsUnavailableError:
    target = checkpoint_path(spec)
    if spec.path is not None:
        message = (
            f"Checkpoint for model {spec.name!r} is not available: {reason}.\n"
            f"It was registered as the local file\n  {target}\n"
            "Put the file back at that path, or register the model again with the right path "
            "(register_local_model(...) or a 'checkpoint_path' entry in the model registry JSON file)."
        )
        return WeightsUnavailableError(message, missing=[spec.filename], urls=[None], target_dir=target.parent)
    message = (
        f"Checkpoint {spec.filename!r} for model {spec.name!r} is not available: {reason}.\n"
        f"Download\n  {spec.url}\nand save it as\n  {target}\n"
        f"(directory {target.parent}, set by R2_CHECKPOINT_DIR), e.g. on a machine with Internet access:\n"
        f"  mkdir -p '{target.parent}' && curl -L -o '{target}' '{spec.url}'\n"
        "Its SHA-256 is checked on first use. Alternatively point a model at a local copy: "
        "register_local_model(name, '/path/to/checkpoint.pth') or a 'checkpoint_path' entry in the model "
        "registry JSON file."
    )
    return WeightsUnavailableError(message, missing=[spec.filename], urls=[spec.url], target_dir=target.parent)


_path_locks: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise work on one file within the process (across processes, the final rename is atomic)."""
    with _registry_lock:
        lock = _path_locks.setdefault(str(path), threading.Lock())
    with lock:
        yield


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2

    # OSError covers huggingface_hub's HTTP/entry/offline errors, disk errors and socket errors.
    return (OSError, httpx2.HTTPError)


def ensure_checkpoint(spec: ModelSpec | str, *, download: bool = True, progress: bool = True) -> Path:
    """Path of a verified checkpoint file, downloading it if needed.

    User models: the registered local file (verified when a ``hash_prefix`` was given). Official models: the file in
    :func:`checkpoint_dir` if its SHA-256 matches (a corrupt one is moved aside and fetched again), else it is
    downloaded (see the module docstring), verified and moved into place. Raises :class:`WeightsUnavailableError`
    when offline / unreachable / ``download=False``, :class:`ChecksumError` when the only copy is corrupt.
    """
    spec = get_model(spec) if isinstance(spec, str) else spec
    target = checkpoint_path(spec)
    if spec.path is not None:
        if not target.is_file():
            raise _download_failure(spec, "the registered file does not exist")
        verify_file(target, spec.hash_prefix, quarantine=False)  # never move the user's own file
        return target

    with _locked(target):
        if _verified_in_place(target, spec, download):
            return target
        if not download:
            raise _download_failure(spec, "it is not in the checkpoint directory and downloads are disabled")
        if _offline():
            raise _download_failure(spec, "offline mode is on (HF_HUB_OFFLINE)")
        staging = checkpoint_dir() / ".download"
        staging.mkdir(parents=True, exist_ok=True)
        from huggingface_hub.utils import WeakFileLock

        # Across processes (e.g. several service workers): one downloads, the others wait and then reuse it.
        with WeakFileLock(staging / f"{spec.filename}.lock"):
            if _verified_in_place(target, spec, download):
                return target
            _download_to(spec, staging, target, progress)
        log.info("model %s: checkpoint saved to %s", spec.name, target)
        return target


def _verified_in_place(target: Path, spec: ModelSpec, download: bool) -> bool:
    """Whether a good copy is already at ``target``; a corrupt one is moved aside (and re-raised if no download)."""
    if not target.is_file():
        return False
    try:
        verify_file(target, spec.hash_prefix)
        return True
    except ChecksumError as err:
        if not download:
            raise
        log.warning("%s Downloading a fresh copy.", err)
        return False


def _download_to(spec: ModelSpec, staging: Path, target: Path, progress: bool) -> None:
    """Fetch into ``staging``, verify, then atomically move to ``target`` (a bad download is deleted)."""
    assert spec.url is not None  # guaranteed by ModelSpec validation for non-local specs
    hub = _parse_hub_url(spec.url)
    try:
        if hub is not None:
            fetched = _fetch_from_hub(hub, staging, progress)
        else:
            fetched = _fetch_plain(spec.url, staging, spec.filename, progress)
    except _network_errors() as err:
        raise _download_failure(spec, f"download failed ({type(err).__name__}: {_first_line(err)})") from err
    try:
        verify_file(fetched, spec.hash_prefix, quarantine=False)
    except ChecksumError as err:
        fetched.unlink(missing_ok=True)
        raise ChecksumError(target, err.expected, err.actual, None, deleted=True) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(fetched, target)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------------------------------------------
# CLIP weights (open_clip's pretrained mechanism)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ClipSource:
    """Where open_clip gets a pretrained tag's weights, and the by-hand alternative."""

    cfg: dict[str, Any]
    hub_repo: str | None  # open_clip downloads from this Hub repo the first of hub_files that exists ...
    hub_files: tuple[str, ...]
    release_url: str | None  # ... else (or, by hand, instead) this original release file, e.g. OpenAI's ViT-B-32.pt

    @property
    def release_file(self) -> Path | None:
        """Where the release file goes by hand; models.clip and open_clip both use it without network access."""
        return clip_dir() / os.path.basename(self.release_url) if self.release_url else None

    @property
    def release_sha256(self) -> str | None:
        """OpenAI release URLs carry the file's full SHA-256 as a path segment."""
        if not self.release_url:
            return None
        return next((part for part in self.release_url.split("/") if re.fullmatch(r"[0-9a-f]{64}", part)), None)


def _clip_source(spec: ModelSpec) -> _ClipSource:
    from open_clip import pretrained

    cfg = pretrained.get_pretrained_cfg(spec.clip, spec.clip_pretrained or "")
    if not cfg:
        raise ValueError(
            f"model {spec.name!r}: open_clip has no pretrained weights {spec.clip}/{spec.clip_pretrained}; "
            "set clip_path to a local CLIP file instead"
        )
    repo, candidates = None, []
    hub: str = cfg.get("hf_hub") or ""
    if hub:
        if hub.endswith("/"):  # "org/repo/" means open_clip's default file name in that repo
            repo, filename = hub.rstrip("/"), pretrained.HF_WEIGHTS_NAME
        else:
            repo, filename = os.path.split(hub)
        # open_clip tries a .safetensors twin first (pretrained._get_safe_alternatives), then the named file.
        candidates = [filename]
        if filename == pretrained.HF_WEIGHTS_NAME:
            candidates.insert(0, pretrained.HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
    return _ClipSource(cfg=cfg, hub_repo=repo, hub_files=tuple(candidates), release_url=cfg.get("url") or None)


def _clip_cached(source: _ClipSource) -> Path | None:
    """The weights already in :func:`clip_dir` (presence only): the release file, else open_clip's Hub cache."""
    if source.release_file is not None and source.release_file.is_file():
        return source.release_file
    if source.hub_repo is not None:
        from huggingface_hub import try_to_load_from_cache

        for filename in source.hub_files:
            cached = try_to_load_from_cache(source.hub_repo, filename, cache_dir=clip_dir())
            if isinstance(cached, str) and Path(cached).is_file():
                return Path(cached)
    return None


def _clip_download_url(source: _ClipSource) -> str:
    """The URL open_clip's downloader will hit first (Hub preferred, as open_clip does)."""
    if source.hub_repo is not None:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(source.hub_repo, source.hub_files[0], endpoint=_hub_endpoint())
    assert source.release_url is not None
    return source.release_url


def _clip_failure(spec: ModelSpec, source: _ClipSource | None, reason: str) -> WeightsUnavailableError:
    if spec.clip_path is not None:
        path = Path(spec.clip_path)
        message = (
            f"CLIP weights for model {spec.name!r} are not available: {reason}.\n"
            f"The model is set to the local file\n  {path}\n"
            "Put an OpenAI-format CLIP file (e.g. ViT-B-32.pt) there, or change clip_path."
        )
        return WeightsUnavailableError(message, missing=[path.name], urls=[None], target_dir=path.parent)
    assert source is not None
    target = clip_dir()
    lines = [f"CLIP weights {spec.clip}/{spec.clip_pretrained} for model {spec.name!r} are not available: {reason}."]
    if source.release_url is not None and source.release_file is not None:
        lines += [
            f"Download\n  {source.release_url}\nand save it as\n  {source.release_file}",
            f"e.g.  mkdir -p '{target}' && curl -L -o '{source.release_file}' '{source.release_url}'",
        ]
    if source.hub_repo is not None:
        lines += [
            ("Or fill" if source.release_url else "Fill")
            + f" open_clip's Hub cache in {target} with {source.hub_repo}/{source.hub_files[0]}",
            f"  ({_clip_download_url(source)}), e.g. on a machine with Internet access run",
            f"  hf download {source.hub_repo} {source.hub_files[0]} --cache-dir '{target}'",
            "and copy that directory here.",
        ]
    lines.append("Alternatively set the model's clip_path to a local OpenAI-format CLIP file.")
    if source.release_file is not None:
        missing, urls = [source.release_file.name], [source.release_url]
    else:
        missing, urls = [source.hub_files[0]], [_clip_download_url(source)]
    return WeightsUnavailableError("\n".join(lines), missing=missing, urls=urls, target_dir=target)


@contextlib.contextmanager
def _hub_progress(enabled: bool) -> Iterator[None]:
    """open_clip takes no progress option, so quiet downloads switch huggingface_hub's bars off meanwhile."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def ensure_clip_weights(spec: ModelSpec | str, *, download: bool = True, progress: bool = True) -> Path:
    """Path of the CLIP weights the model runs on, letting open_clip download them into :func:`clip_dir`.

    ``clip_path`` models use that file as-is. Otherwise weights already in :func:`clip_dir` are used: the original
    release file (e.g. ``ViT-B-32.pt``, SHA-256 checked when its URL carries one) or open_clip's Hub cache; else,
    after one quick reachability check, ``open_clip.pretrained.download_pretrained`` fetches them there, which is
    where ``models.clip.load_clip(..., cache_dir=clip_dir())`` looks.
    """
    spec = get_model(spec) if isinstance(spec, str) else spec
    if spec.clip_path is not None:
        path = Path(spec.clip_path)
        if not path.is_file():
            raise _clip_failure(spec, None, "the file does not exist")
        return path
    source = _clip_source(spec)
    with _locked(clip_dir() / f"{spec.clip}-{spec.clip_pretrained}"):
        cached = _clip_cached(source)
        if cached is not None and cached == source.release_file:
            try:
                verify_file(cached, source.release_sha256)
                return cached
            except ChecksumError as err:
                if not download:
                    raise
                log.warning("%s Downloading a fresh copy.", err)
        elif cached is not None:
            return cached
        if not download:
            raise _clip_failure(spec, source, "they are not in the cache and downloads are disabled")
        if _offline():
            raise _clip_failure(spec, source, "offline mode is on (HF_HUB_OFFLINE)")
        from open_clip import pretrained

        try:
            _probe(_clip_download_url(source))
            clip_dir().mkdir(parents=True, exist_ok=True)
            with _hub_progress(progress):
                fetched = pretrained.download_pretrained(source.cfg, cache_dir=str(clip_dir()))
        except (*_network_errors(), RuntimeError) as err:  # open_clip raises RuntimeError on a URL hash mismatch
            raise _clip_failure(spec, source, f"download failed ({type(err).__name__}: {_first_line(err)})") from err
        if not fetched or not Path(fetched).is_file():
            raise _clip_failure(spec, source, "open_clip returned no file")
        return Path(fetched)


def _probe(url: str) -> None:
    """Raise if the server of ``url`` cannot be reached (one request, no retries); HTTP errors are fine here."""
    from huggingface_hub.utils import get_session

    get_session().head(url, follow_redirects=False, timeout=_PROBE_TIMEOUT_S)


# ----------------------------------------------------------------------------------------------------------------
# Readiness
# ----------------------------------------------------------------------------------------------------------------


def missing_files(spec: ModelSpec | str) -> list[str]:
    """What the model still needs on disk (for ``/readyz``): the checkpoint path and the CLIP weights file.

    For open_clip-named CLIP weights the entry is the release file in :func:`clip_dir` (e.g. ``.../clip/ViT-B-32.pt``);
    weights found in open_clip's Hub cache there count as present too.

    Only presence is checked (cheap); the SHA-256 is checked by :func:`ensure_checkpoint` on first use.
    """
    spec = get_model(spec) if isinstance(spec, str) else spec
    out: list[str] = []
    ckpt = checkpoint_path(spec)
    if not ckpt.is_file():
        out.append(str(ckpt))
    if spec.clip_path is not None:
        if not Path(spec.clip_path).is_file():
            out.append(spec.clip_path)
    else:
        source = _clip_source(spec)
        if _clip_cached(source) is None:
            # the by-hand file, else the Hub file open_clip would cache
            out.append(
                str(source.release_file) if source.release_file else f"hf://{source.hub_repo}/{source.hub_files[0]}"
            )
    return out


# ----------------------------------------------------------------------------------------------------------------
# Command line: python -m models.zoo list | missing NAME... | download NAME...
# ----------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.zoo", description="R2-Tuning model zoo")
    parser.add_argument("--registry", help="also load user models from this JSON file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the registered models")
    for command, text in (("missing", "print the files a model still needs"), ("download", "fetch and verify")):
        cmd = sub.add_parser(command, help=text)
        cmd.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    if args.registry:
        load_registry_file(args.registry)

    if args.command == "list":
        for spec in list_models():
            unit = "-" if spec.unit is None else f"{spec.unit:g}"
            print(
                f"{spec.name:14} {spec.dataset:18} fps={spec.fps:<4g} unit={unit:<4} "
                f"nms={spec.nms_type}/{spec.nms_thres:g} {spec.outputs:17} {spec.url or spec.path}"
            )
        return 0
    status = 0
    for name in args.names:
        try:
            if args.command == "missing":
                print(f"{name}: " + (", ".join(missing_files(name)) or "complete"))
            else:
                print(f"{name}: checkpoint {ensure_checkpoint(name)}")
                print(f"{name}: CLIP {ensure_clip_weights(name)}")
        except (UnknownModelError, WeightsUnavailableError, ChecksumError, ValueError) as err:
            print(f"{name}: {err}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
