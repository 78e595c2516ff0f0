"""The weight files a model needs (its R2 checkpoint and its CLIP weights), and the one downloader for both.

Each file is a :class:`WeightFile`: where it lives, where it comes from and the SHA-256 (prefix) it must have.
:func:`ensure_file` is the downloader, used for checkpoints and CLIP weights alike:

* Hub URLs (``https://<endpoint>/<owner>/<repo>/resolve/<revision>/<path>``, where the official checkpoints
  live) go through :func:`huggingface_hub.hf_hub_download` into a staging folder, which honours ``HF_ENDPOINT``
  mirrors, tokens, redirects to the CDN, the progress bar and in-transfer resume;
* any other URL (OpenAI's CLIP releases) goes through ``huggingface_hub``'s
  :func:`~huggingface_hub.file_download.http_get`, appending to a ``.part`` file so that an interrupted download
  resumes with an HTTP ``Range`` request on the next call.

A downloaded file is moved into place only after its SHA-256 matched, so a file found there is never
half-written. Before the (retrying) download starts, one HEAD request without retries checks that the server is
reachable, so an offline machine fails at once with :class:`WeightsUnavailableError` (whose message says which
file to get from where, and where to put it) instead of backing off for half a minute.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .registry import get_model
from .spec import ChecksumError, ModelSpec, WeightsUnavailableError

log = logging.getLogger(__name__)

# A file on a Hugging Face Hub (or a mirror): <endpoint>/[datasets/|spaces/]<owner>/<repo>/resolve/<rev>/<path>
_HUB_URL_RE = re.compile(
    r"(?P<endpoint>https?://[^/]+)/(?:(?P<kind>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"
    r"/resolve/(?P<revision>[^/]+)/(?P<path>.+)"
)
_DEFAULT_HUB = "https://huggingface.co"
_PROBE_TIMEOUT_S = 10.0
_HASH_CHUNK = 1 << 20
_REPO_ROOT = Path(__file__).resolve().parents[2]

# OpenAI's CLIP releases (open_clip tag "openai"), in OpenAI's own format; each URL carries the file's SHA-256.
OPENAI_CLIP_URLS: dict[str, str] = {
    "ViT-B-32": "https://openaipublic.azureedge.net/clip/models/"
                "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    "ViT-B-16": "https://openaipublic.azureedge.net/clip/models/"
                "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    "ViT-L-14": "https://openaipublic.azureedge.net/clip/models/"
                "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt",
    "ViT-L-14-336": "https://openaipublic.azureedge.net/clip/models/"
                    "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02/ViT-L-14-336px.pt",
}


# ------------------------------------------------------------------------------------------------------ places


def checkpoint_dir() -> Path:
    """Where weights live: ``$R2_CHECKPOINT_DIR``, default ``<repo>/checkpoints`` (read on every call)."""
    env = os.environ.get("R2_CHECKPOINT_DIR")
    return Path(env).expanduser().absolute() if env else _REPO_ROOT / "checkpoints"


def clip_dir() -> Path:
    """Where downloaded CLIP weights go: ``checkpoint_dir()/clip``."""
    return checkpoint_dir() / "clip"


@dataclass(frozen=True)
class WeightFile:
    """One file a model needs."""

    model: str
    label: str  # "checkpoint" or "CLIP weights", for messages
    path: Path  # where it is used from
    url: str | None  # where it is downloaded from (None: the user's own file)
    sha256: str | None  # hex SHA-256 or a prefix of it; None: not checked
    user_owned: bool  # the user registered this path: it is never moved, deleted or downloaded

    @property
    def name(self) -> str:
        return self.path.name


def checkpoint_file(spec: ModelSpec) -> WeightFile:
    if spec.path is not None:
        return WeightFile(spec.name, "checkpoint", Path(spec.path), None, spec.hash_prefix, True)
    return WeightFile(spec.name, "checkpoint", checkpoint_dir() / spec.filename, spec.url, spec.hash_prefix, False)


def clip_file(spec: ModelSpec) -> WeightFile:
    if spec.clip_path is not None:
        return WeightFile(spec.name, "CLIP weights", Path(spec.clip_path), None, None, True)
    url = OPENAI_CLIP_URLS.get(spec.clip) if spec.clip_pretrained == "openai" else None
    if url is None:
        raise ValueError(f"model {spec.name!r}: no download is known for CLIP {spec.clip}/{spec.clip_pretrained} "
                         f"(known: OpenAI's {', '.join(OPENAI_CLIP_URLS)}); set clip_path to a local CLIP file")
    sha256 = next(part for part in url.split("/") if re.fullmatch(r"[0-9a-f]{64}", part))
    return WeightFile(spec.name, "CLIP weights", clip_dir() / url.rsplit("/", 1)[1], url, sha256, False)


def checkpoint_path(spec: ModelSpec) -> Path:
    """The checkpoint's local path: the registered file for user models, else ``checkpoint_dir()/filename``."""
    return checkpoint_file(spec).path


# ------------------------------------------------------------------------------------------------------ checks


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# Files already hashed in this process, keyed by identity + size + mtime, so readiness checks and repeated
# ensure_* calls do not re-hash hundreds of MB.
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


def missing_files(spec: ModelSpec | str) -> list[str]:
    """What the model still needs on disk (for ``/readyz`` and ``r2tuning missing``): presence only (cheap);
    the SHA-256 is checked when the file is first used."""
    spec = get_model(spec) if isinstance(spec, str) else spec
    return [str(f.path) for f in (checkpoint_file(spec), clip_file(spec)) if not f.path.is_file()]


# ------------------------------------------------------------------------------------------------------ fetching


def ensure_file(file: WeightFile, *, download: bool = True, progress: bool = True) -> Path:
    """Path of the verified file, downloading it if needed (see the module docstring).

    A user's own file is used as it is (verified when it has a hash). A downloaded one found in place is used if
    its SHA-256 matches (a corrupt one is moved aside and fetched again). Raises :class:`WeightsUnavailableError`
    when offline / unreachable / ``download=False``, :class:`ChecksumError` when the only copy is corrupt.
    """
    if file.user_owned:
        if not file.path.is_file():
            raise _unavailable(file, "the registered file does not exist")
        verify_file(file.path, file.sha256, quarantine=False)  # never move the user's own file
        return file.path
    with _locked(file.path):
        if _verified_in_place(file, download):
            return file.path
        if not download:
            raise _unavailable(file, "it is not on disk and downloads are disabled")
        if _offline():
            raise _unavailable(file, "offline mode is on (HF_HUB_OFFLINE)")
        _probe(file)  # unreachable: fail now, before any lock or staging file is made
        staging = checkpoint_dir() / ".download"
        staging.mkdir(parents=True, exist_ok=True)
        # Across processes (e.g. several service workers): one downloads, the others wait and then reuse it.
        with _process_lock(staging / f"{file.name}.lock"):
            if _verified_in_place(file, download):
                return file.path
            _download_to(file, staging, progress)
        log.info("model %s: %s saved to %s", file.model, file.label, file.path)
        return file.path


def ensure_checkpoint(spec: ModelSpec | str, *, download: bool = True, progress: bool = True) -> Path:
    spec = get_model(spec) if isinstance(spec, str) else spec
    return ensure_file(checkpoint_file(spec), download=download, progress=progress)


def ensure_clip_weights(spec: ModelSpec | str, *, download: bool = True, progress: bool = True) -> Path:
    spec = get_model(spec) if isinstance(spec, str) else spec
    return ensure_file(clip_file(spec), download=download, progress=progress)


def ensure_weights(spec: ModelSpec | str, *, download: bool = True, progress: bool = True) -> tuple[Path, Path]:
    """(checkpoint, CLIP weights) of a model; tries both before failing, so one error names every missing file."""
    spec = get_model(spec) if isinstance(spec, str) else spec
    found: list[Path] = []
    missing: list[WeightsUnavailableError] = []
    for file in (checkpoint_file(spec), clip_file(spec)):
        try:
            found.append(ensure_file(file, download=download, progress=progress))
        except WeightsUnavailableError as err:
            missing.append(err)
    if len(missing) == 1:
        raise missing[0]
    if missing:
        raise WeightsUnavailableError("\n\n".join(str(e) for e in missing),
                                      missing=[n for e in missing for n in e.missing],
                                      urls=[u for e in missing for u in e.urls], target_dir=missing[0].target_dir)
    return found[0], found[1]


def _unavailable(file: WeightFile, reason: str) -> WeightsUnavailableError:
    target = file.path
    if file.user_owned:
        message = (f"The {file.label} file of model {file.model!r} is not available: {reason}.\n"
                   f"It was registered as the local file\n  {target}\n"
                   "Put the file back at that path, or register the model again with the right path "
                   "(register_local_model(...) or an entry in the model registry JSON file).")
        return WeightsUnavailableError(message, missing=[file.name], urls=[None], target_dir=target.parent)
    message = (f"The {file.label} file {file.name!r} of model {file.model!r} is not available: {reason}.\n"
               f"Download\n  {file.url}\nand save it as\n  {target}\n"
               f"(directory {target.parent}, set by R2_CHECKPOINT_DIR), e.g. on a machine with Internet access:\n"
               f"  mkdir -p '{target.parent}' && curl -L -o '{target}' '{file.url}'\n"
               "Its SHA-256 is checked on first use. Alternatively point the model at a local copy: "
               "register_local_model(name, checkpoint_path, clip_path=...) or an entry in the model registry JSON "
               "file (R2_REGISTRY_FILE).")
    return WeightsUnavailableError(message, missing=[file.name], urls=[file.url], target_dir=target.parent)


def _verified_in_place(file: WeightFile, download: bool) -> bool:
    """Whether a good copy is already in place; a corrupt one is moved aside (and re-raised if no download)."""
    if not file.path.is_file():
        return False
    try:
        verify_file(file.path, file.sha256)
        return True
    except ChecksumError as err:
        if not download:
            raise
        log.warning("%s Downloading a fresh copy.", err)
        return False


def _download_to(file: WeightFile, staging: Path, progress: bool) -> None:
    """Fetch into ``staging``, verify, then atomically move into place (a bad download is deleted)."""
    assert file.url is not None  # only user-owned files have none
    hub = _parse_hub_url(file.url)
    try:
        if hub is not None:
            fetched = _fetch_from_hub(hub, staging, progress)
        else:
            fetched = _fetch_plain(file.url, staging, file.name, progress)
    except _network_errors() as err:
        raise _unavailable(file, f"download failed ({type(err).__name__}: {_first_line(err)})") from err
    try:
        verify_file(fetched, file.sha256, quarantine=False)
    except ChecksumError as err:
        fetched.unlink(missing_ok=True)
        raise ChecksumError(file.path, err.expected, err.actual, None, deleted=True) from None
    file.path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(fetched, file.path)


_path_locks: dict[str, threading.Lock] = {}
_locks_lock = threading.Lock()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise work on one file within the process (across processes, the final rename is atomic)."""
    with _locks_lock:
        lock = _path_locks.setdefault(str(path), threading.Lock())
    with lock:
        yield


@contextlib.contextmanager
def _process_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock across processes on ``path``, and leave no lock file behind.

    flock on a file that the holder unlinks before releasing it: a waiter that then gets the lock sees that the
    path no longer names the file it locked and starts over on a fresh one, so two holders never overlap.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now, mine = os.stat(path), os.fstat(fd)
                if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                    break
            except FileNotFoundError:
                pass  # unlinked by the previous holder: lock a fresh one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock


# ------------------------------------------------------------------------------------------------------ transport


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
    from huggingface_hub._local_folder import get_local_download_paths

    url = hf_hub_url(hub.repo_id, hub.path, repo_type=hub.repo_type, revision=hub.revision, endpoint=hub.endpoint)
    # One HEAD without retries: hf_hub_download retries connection errors with backoff (~25 s) when nothing is
    # cached, which is the wrong behaviour for an offline machine.
    get_hf_file_metadata(url, timeout=_PROBE_TIMEOUT_S, endpoint=hub.endpoint)
    # hf_hub_download keeps a lock and a metadata file per file under staging/.cache: we verify and move the file
    # ourselves, so neither is ever reused. Its .incomplete file stays after a failure: the next call resumes it.
    paths = get_local_download_paths(staging, hub.path)
    done = False
    try:
        fetched = hf_hub_download(hub.repo_id, hub.path, repo_type=hub.repo_type, revision=hub.revision,
                                  local_dir=staging, endpoint=hub.endpoint, tqdm_class=_tqdm_class(progress))
        done = True
    finally:
        paths.lock_path.unlink(missing_ok=True)
        if done:
            paths.metadata_path.unlink(missing_ok=True)
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
        http_get(url, f, resume_size=f.tell(), expected_size=size, displayed_filename=filename,
                 tqdm_class=_tqdm_class(progress))
    return part


def _probe(file: WeightFile) -> None:
    """Raise :class:`WeightsUnavailableError` if the server cannot be reached (one request, no retries); HTTP
    errors are left to the download, which reports them."""
    from huggingface_hub.utils import get_session

    assert file.url is not None
    hub = _parse_hub_url(file.url)
    url = f"{hub.endpoint}/" if hub is not None else file.url
    try:
        get_session().head(url, follow_redirects=False, timeout=_PROBE_TIMEOUT_S)
    except _network_errors() as err:
        raise _unavailable(file, f"the server cannot be reached ({type(err).__name__}: {_first_line(err)})") from err


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2

    # OSError covers huggingface_hub's HTTP/entry/offline errors, disk errors and socket errors.
    return (OSError, httpx2.HTTPError)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
