"""The registry: the official zoo plus the user's own models (registered in Python or from a JSON file)."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import fields
from pathlib import Path
from typing import Any

from .official import OFFICIAL_BY_NAME
from .spec import (
    DuplicateModelError,
    ModelSpec,
    NmsType,
    Outputs,
    Preprocess,
    QueryPath,
    RegistryError,
    UnknownModelError,
)

# torch.hub / nncore naming convention: "<stem>-<first hex digits of sha256>.<ext>"
_NAME_HASH_RE = re.compile(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$")

_registry_lock = threading.RLock()
_REGISTRY: dict[str, ModelSpec] = dict(OFFICIAL_BY_NAME)


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
        official = OFFICIAL_BY_NAME.get(name)
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
    preprocess: Preprocess = "script",
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
        preprocess=preprocess,
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
