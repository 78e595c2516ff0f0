"""Model zoo: the official R2-Tuning checkpoints as one table of data, user models, and verified weights.

* :mod:`.spec`: :class:`ModelSpec` (a model's weights and inference settings) and the zoo's errors;
* :mod:`.official`: the 20 official checkpoints;
* :mod:`.registry`: official plus user-registered models (Python or a JSON file);
* :mod:`.weights`: the files a model needs and the one downloader that fetches and verifies them.

Importing any of it loads neither torch nor open_clip (``r2tuning models`` stays instant).
"""

from .official import OFFICIAL_HUB_DIR, OFFICIAL_MODELS
from .registry import (
    get_model,
    list_models,
    load_registry_file,
    register_local_model,
    register_model,
    unregister_model,
)
from .spec import (
    ChecksumError,
    DuplicateModelError,
    ModelSpec,
    NmsType,
    Outputs,
    Preprocess,
    QueryPath,
    RegistryError,
    UnknownModelError,
    WeightsUnavailableError,
)
from .weights import (
    OPENAI_CLIP_URLS,
    checkpoint_dir,
    checkpoint_path,
    clip_dir,
    clip_file,
    ensure_checkpoint,
    ensure_clip_weights,
    ensure_file,
    ensure_weights,
    missing_files,
    sha256_file,
    verify_file,
)

__all__ = [
    "OFFICIAL_HUB_DIR", "OFFICIAL_MODELS", "OPENAI_CLIP_URLS", "ChecksumError", "DuplicateModelError", "ModelSpec",
    "NmsType", "Outputs", "Preprocess", "QueryPath", "RegistryError", "UnknownModelError", "WeightsUnavailableError",
    "checkpoint_dir", "checkpoint_path", "clip_dir", "clip_file", "ensure_checkpoint", "ensure_clip_weights",
    "ensure_file", "ensure_weights", "get_model", "list_models", "load_registry_file", "missing_files",
    "register_local_model", "register_model", "sha256_file", "unregister_model", "verify_file",
]
