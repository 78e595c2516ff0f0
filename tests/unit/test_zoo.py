"""Model zoo: the official table, the registry, and verified downloads against a local Hub-like HTTP server.

No test touches the network: downloads go to a tiny server on 127.0.0.1 (through the real huggingface_hub code
path, via HF_ENDPOINT), and "offline" is a port nobody listens on.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from models import zoo
from models.zoo import (
    OFFICIAL_HUB_DIR,
    OFFICIAL_MODELS,
    ChecksumError,
    DuplicateModelError,
    ModelSpec,
    RegistryError,
    UnknownModelError,
    WeightsUnavailableError,
    checkpoint_dir,
    checkpoint_path,
    ensure_checkpoint,
    ensure_clip_weights,
    get_model,
    list_models,
    load_registry_file,
    missing_files,
    register_local_model,
    register_model,
    registry,
    unregister_model,
    verify_file,
    weights,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Every test gets its own checkpoint dir and leaves the registry as it found it."""
    monkeypatch.setenv("R2_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


# ------------------------------------------------------------------------------------------------------------------
# A Hub-compatible file server (HEAD metadata headers, GET with Range) on 127.0.0.1
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class FakeHub:
    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    honour_range: bool = True

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET"]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def _serve(self, with_body: bool) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        hub.requests.append((self.command, path, self.headers.get("Range")))
        data = hub.files.get(path)
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if with_body and match and hub.honour_range:
            start, status = int(match[1]), 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{sha(data)}"')  # the Hub's ETag of an LFS file is its sha256
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()
        if with_body:
            self.wfile.write(body)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    fake = FakeHub(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.hub = fake  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)  # the official huggingface.co URLs now resolve here
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def dead_endpoint(monkeypatch: pytest.MonkeyPatch) -> str:
    """An endpoint whose port refuses connections: what an offline machine sees."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    return url


@pytest.fixture
def clip_file(tmp_path: Path) -> Path:
    path = tmp_path / "ViT-B-32.pt"
    path.write_bytes(b"not really CLIP")
    return path


def hub_spec(data: bytes, clip_file: Path, *, name: str = "qvh-test", base: str = OFFICIAL_HUB_DIR) -> ModelSpec:
    """The official QVHighlights spec, re-pointed at a test file named the official way."""
    prefix = sha(data)[:8]
    filename = f"r2_tuning_test-{prefix}.pth"
    return replace(
        get_model("qvhighlights"),
        name=name,
        filename=filename,
        url=base + filename,
        hash_prefix=prefix,
        clip_path=str(clip_file),
        clip_pretrained=None,
    )


def hub_file_path(spec: ModelSpec) -> str:
    return "/yeliudev/R2-Tuning/resolve/main/checkpoints/" + spec.filename


# ------------------------------------------------------------------------------------------------------------------
# The official table
# ------------------------------------------------------------------------------------------------------------------

# name: (dataset, domain, fps, unit, nms_type, outputs) as in configs/ and datasets/ of the official repo
EXPECTED = {
    "qvhighlights": ("QVHighlights", None, 0.5, 2.0, "normal", "moments+saliency"),
    "charades": ("Charades-STA", None, 1.0, 0.1, "linear", "moments+saliency"),
    "ego4d": ("Ego4D-NLQ", None, 0.5, None, "linear", "moments+saliency"),
    "tacos": ("TACoS", None, 0.5, None, "linear", "moments+saliency"),
    **{
        f"youtube-{d}": ("YouTube Highlights", d, 0.5, None, "normal", "saliency")
        for d in ("dog", "gym", "par", "ska", "ski", "sur")
    },
    **{
        f"tvsum-{d.lower()}": ("TVSum", d, 0.5, None, "normal", "saliency")
        for d in ("BK", "BT", "DS", "FM", "GA", "MS", "PK", "PR", "VT", "VU")
    },
}


def test_official_zoo_has_every_checkpoint_once() -> None:
    names = [spec.name for spec in OFFICIAL_MODELS]
    assert len(names) == len(set(names)) == 20
    assert set(names) == set(EXPECTED)
    assert [s.name for s in list_models()] == names  # table order; no user models yet
    assert len({s.filename for s in OFFICIAL_MODELS}) == len({s.hash_prefix for s in OFFICIAL_MODELS}) == 20


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_official_spec_matches_config(name: str) -> None:
    spec = get_model(name)
    dataset, domain, fps, unit, nms_type, outputs = EXPECTED[name]
    assert (spec.dataset, spec.domain, spec.fps, spec.unit, spec.nms_type, spec.outputs) == (
        dataset,
        domain,
        fps,
        unit,
        nms_type,
        outputs,
    )
    assert spec.nms_thres == 0.7
    assert spec.has_moments == (outputs == "moments+saliency")
    assert (spec.clip, spec.clip_pretrained, spec.clip_path, spec.path) == ("ViT-B-32", "openai", None, None)
    assert spec.query_path == "features"
    # file name "r2_tuning_<config stem>-<8 hex>.pth" carries the hash prefix; URL is on the official Hub repo
    stem = name.replace("-", "_")
    assert re.fullmatch(rf"r2_tuning_{stem}-[0-9a-f]{{8}}\.pth", spec.filename)
    assert spec.hash_prefix is not None and spec.filename.endswith(f"-{spec.hash_prefix}.pth")
    assert spec.url == OFFICIAL_HUB_DIR + spec.filename
    assert checkpoint_path(spec) == checkpoint_dir() / spec.filename


def test_official_urls_match_the_readme() -> None:
    base = "https://huggingface.co/yeliudev/R2-Tuning/resolve/main/checkpoints/"
    assert get_model("qvhighlights").url == base + "r2_tuning_qvhighlights-ed516355.pth"
    assert get_model("charades").url == base + "r2_tuning_charades-1de02112.pth"
    assert get_model("ego4d").url == base + "r2_tuning_ego4d-6a6f5754.pth"
    assert get_model("tacos").url == base + "r2_tuning_tacos-81759b55.pth"
    assert get_model("youtube-sur").url == base + "r2_tuning_youtube_sur-d384d8b2.pth"
    assert get_model("tvsum-vu").url == base + "r2_tuning_tvsum_vu-6f8ebb4b.pth"


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model("qvhighlight")
    assert isinstance(info.value, KeyError)
    assert "qvhighlight" in str(info.value) and "qvhighlights" in str(info.value) and "tvsum-vu" in str(info.value)


def test_checkpoint_dir_default_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("R2_CHECKPOINT_DIR")
    assert checkpoint_dir() == Path(zoo.__file__).resolve().parents[2] / "checkpoints"
    monkeypatch.setenv("R2_CHECKPOINT_DIR", str(tmp_path / "elsewhere"))
    assert checkpoint_dir() == tmp_path / "elsewhere"
    assert zoo.clip_dir() == tmp_path / "elsewhere" / "clip"


@pytest.mark.parametrize(
    "change",
    [
        {"fps": 0},
        {"fps": -1.0},
        {"fps": float("nan")},
        {"fps": True},
        {"fps": "0.5"},
        {"unit": 0},
        {"unit": float("inf")},
        {"nms_type": "soft"},
        {"nms_thres": 1.5},
        {"nms_thres": -0.1},
        {"outputs": "boundaries"},
        {"query_path": "tokens"},
        {"name": "bad name"},
        {"name": ""},
        {"hash_prefix": "XYZ123"},
        {"hash_prefix": "abc"},
        {"url": "ftp://x/y.pth"},
        {"url": None},
        {"filename": "a/b.pth"},
        {"clip_pretrained": None},
        {"clip": ""},
    ],
)
def test_bad_spec_values_are_rejected(change: dict) -> None:
    with pytest.raises(ValueError, match="invalid model spec"):
        replace(get_model("qvhighlights"), **change)


# ------------------------------------------------------------------------------------------------------------------
# verify_file
# ------------------------------------------------------------------------------------------------------------------


def test_verify_file_accepts_matching_prefix_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(b"weights")
    calls = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: calls.append(p) or real(p))
    verify_file(path, sha(b"weights")[:8])
    verify_file(path, sha(b"weights")[:8])
    verify_file(path, None)
    assert len(calls) == 1  # unchanged file: hashed once


def test_verify_file_moves_a_mismatching_file_aside(tmp_path: Path) -> None:
    path = tmp_path / "w-deadbeef.pth"
    path.write_bytes(b"weights")
    with pytest.raises(ChecksumError) as info:
        verify_file(path, "deadbeef")
    assert not path.exists()
    assert info.value.moved_to == tmp_path / "w-deadbeef.pth.corrupt"
    assert info.value.moved_to.read_bytes() == b"weights"
    assert info.value.actual == sha(b"weights")
    assert "deadbeef" in str(info.value)


def test_verify_file_can_leave_a_users_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "mine.pth"
    path.write_bytes(b"weights")
    with pytest.raises(ChecksumError):
        verify_file(path, "deadbeef", quarantine=False)
    assert path.read_bytes() == b"weights"


# ------------------------------------------------------------------------------------------------------------------
# Downloads
# ------------------------------------------------------------------------------------------------------------------


def test_hub_download_verifies_and_is_reused(hub: FakeHub, clip_file: Path) -> None:
    data = b"r2-tuning checkpoint bytes " * 1000
    spec = hub_spec(data, clip_file)
    hub.files[hub_file_path(spec)] = data
    assert missing_files(spec) == [str(checkpoint_dir() / spec.filename)]

    path = ensure_checkpoint(spec, progress=False)
    assert path == checkpoint_dir() / spec.filename
    assert path.read_bytes() == data
    assert [r[1] for r in hub.gets()] == [hub_file_path(spec)]
    assert missing_files(spec) == []

    hub.requests.clear()
    assert ensure_checkpoint(spec, progress=False) == path
    assert hub.requests == []  # verified local file: no network at all
    assert ensure_checkpoint(spec, download=False) == path


def test_hub_download_with_wrong_hash_is_refused(hub: FakeHub, clip_file: Path) -> None:
    spec = hub_spec(b"the real weights", clip_file)
    hub.files[hub_file_path(spec)] = b"something else entirely"
    with pytest.raises(ChecksumError) as info:
        ensure_checkpoint(spec, progress=False)
    assert info.value.expected == spec.hash_prefix
    target = checkpoint_dir() / spec.filename
    assert not target.exists()
    assert not [p for p in checkpoint_dir().rglob("*.pth") if p.is_file()]  # no copy left anywhere
    with pytest.raises(ChecksumError):  # still refused next time: nothing was kept as valid
        ensure_checkpoint(spec, progress=False)
    assert missing_files(spec) == [str(target)]


def test_corrupt_local_file_is_moved_aside_and_replaced(hub: FakeHub, clip_file: Path) -> None:
    data = b"good weights"
    spec = hub_spec(data, clip_file)
    hub.files[hub_file_path(spec)] = data
    target = checkpoint_dir() / spec.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncat")

    with pytest.raises(ChecksumError):
        ensure_checkpoint(spec, download=False)
    assert not target.exists() and target.with_name(target.name + ".corrupt").exists()

    target.write_bytes(b"truncat")
    assert ensure_checkpoint(spec, progress=False).read_bytes() == data
    assert len(hub.gets()) == 1


def test_concurrent_callers_share_one_download(hub: FakeHub, clip_file: Path) -> None:
    data = b"shared" * 10_000
    spec = hub_spec(data, clip_file)
    hub.files[hub_file_path(spec)] = data
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_checkpoint(spec, progress=False))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [checkpoint_dir() / spec.filename] * 4
    assert len(hub.gets()) == 1


@pytest.mark.parametrize("honour_range", [True, False])
def test_plain_url_download_resumes_a_partial_file(hub: FakeHub, clip_file: Path, honour_range: bool) -> None:
    data = bytes(range(256)) * 400
    spec = hub_spec(data, clip_file, base=hub.url + "/files/")
    hub.files["/files/" + spec.filename] = data
    hub.honour_range = honour_range
    part = checkpoint_dir() / ".download" / f"{spec.filename}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:40_000])  # left by an interrupted earlier download

    path = ensure_checkpoint(spec, progress=False)
    assert path.read_bytes() == data
    assert hub.gets() == [("GET", "/files/" + spec.filename, "bytes=40000-")]
    assert not part.exists()


def test_offline_machine_gets_one_clear_error(dead_endpoint: str) -> None:
    spec = get_model("qvhighlights")
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_checkpoint(spec, progress=False)
    assert time.monotonic() - start < 8  # no 25-second retry backoff
    message = str(info.value)
    assert spec.filename in message
    assert spec.url is not None and spec.url in message
    assert str(checkpoint_dir()) in message
    assert "register_local_model" in message
    assert info.value.missing == [spec.filename]
    assert info.value.urls == [spec.url]
    assert info.value.target_dir == checkpoint_dir()
    assert not (checkpoint_dir() / spec.filename).exists()


def test_offline_mode_and_disabled_downloads_make_no_request(
    hub: FakeHub, clip_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = hub_spec(b"data", clip_file)
    hub.files[hub_file_path(spec)] = b"data"
    with pytest.raises(WeightsUnavailableError, match="downloads are disabled"):
        ensure_checkpoint(spec, download=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        ensure_checkpoint(spec)
    assert hub.requests == []


def test_missing_remote_file_is_reported(hub: FakeHub, clip_file: Path) -> None:
    spec = hub_spec(b"never uploaded", clip_file)
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_checkpoint(spec, progress=False)
    assert spec.filename in str(info.value)
    assert len(hub.gets()) == 0


def test_ensure_accepts_a_model_name(hub: FakeHub, clip_file: Path) -> None:
    data = b"named"
    spec = hub_spec(data, clip_file, name="by-name")
    register_model(spec)
    hub.files[hub_file_path(spec)] = data
    assert ensure_checkpoint("by-name", progress=False).read_bytes() == data


# ------------------------------------------------------------------------------------------------------------------
# CLIP weights: OpenAI's release files, through the same downloader
# ------------------------------------------------------------------------------------------------------------------


def _openai_release(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, data: bytes) -> str:
    """Serve ``data`` as OpenAI's ViT-B-32.pt (its URL carries the file's SHA-256, as OpenAI's do)."""
    path = f"/clip/models/{sha(data)}/ViT-B-32.pt"
    hub.files[path] = data
    monkeypatch.setitem(weights.OPENAI_CLIP_URLS, "ViT-B-32", hub.url + path)
    return hub.url + path


def test_clip_weights_download_with_the_checkpoint_downloader_and_are_reused(
        hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    _openai_release(hub, monkeypatch, b"an OpenAI TorchScript archive")
    spec = get_model("qvhighlights")
    assert missing_files(spec) == [str(checkpoint_dir() / spec.filename), str(zoo.clip_dir() / "ViT-B-32.pt")]

    path = ensure_clip_weights(spec, progress=False)
    assert path == zoo.clip_dir() / "ViT-B-32.pt" and path.read_bytes() == b"an OpenAI TorchScript archive"
    assert missing_files(spec) == [str(checkpoint_dir() / spec.filename)]

    hub.requests.clear()
    assert ensure_clip_weights(spec) == path
    assert hub.requests == []


def test_clip_download_with_a_wrong_hash_is_refused(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _openai_release(hub, monkeypatch, b"the real file")
    hub.files[urlsplit(url).path] = b"something else"
    with pytest.raises(ChecksumError):
        ensure_clip_weights("qvhighlights", progress=False)
    assert not (zoo.clip_dir() / "ViT-B-32.pt").exists()


def test_clip_release_file_placed_by_hand_is_verified(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"an OpenAI TorchScript archive"
    _openai_release(hub, monkeypatch, data)
    hub.requests.clear()
    release = zoo.clip_dir() / "ViT-B-32.pt"
    release.parent.mkdir(parents=True)
    release.write_bytes(data)
    assert ensure_clip_weights("qvhighlights", download=False) == release
    assert not any("ViT-B-32" in m for m in missing_files("qvhighlights"))

    release.write_bytes(b"a different file")
    with pytest.raises(ChecksumError):
        ensure_clip_weights("qvhighlights", download=False)
    assert not release.exists()
    assert hub.requests == []


def test_clip_weights_offline_error(dead_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"{dead_endpoint}/clip/models/{'ab' * 32}/ViT-B-32.pt"
    monkeypatch.setitem(weights.OPENAI_CLIP_URLS, "ViT-B-32", url)
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_clip_weights("qvhighlights", progress=False)
    assert time.monotonic() - start < 8
    message = str(info.value)
    assert url in message and str(zoo.clip_dir() / "ViT-B-32.pt") in message
    assert "clip_path" in message
    assert info.value.missing == ["ViT-B-32.pt"]
    assert info.value.urls == [url]
    assert info.value.target_dir == zoo.clip_dir()
    assert not (checkpoint_dir() / ".download").exists() or not any((checkpoint_dir() / ".download").iterdir())


def test_one_error_names_every_missing_file(dead_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(weights.OPENAI_CLIP_URLS, "ViT-B-32", f"{dead_endpoint}/c/{'ab' * 32}/ViT-B-32.pt")
    with pytest.raises(WeightsUnavailableError) as info:
        zoo.ensure_weights("qvhighlights", progress=False)
    assert info.value.missing == [get_model("qvhighlights").filename, "ViT-B-32.pt"]


def test_clip_path_is_used_as_is(clip_file: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "mine.pth"
    ckpt.write_bytes(b"x")
    spec = register_local_model("mine", ckpt, clip_path=clip_file)
    assert ensure_clip_weights(spec) == clip_file
    clip_file.unlink()
    assert missing_files(spec) == [str(clip_file)]
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_clip_weights(spec)
    assert str(clip_file) in str(info.value)


def test_unknown_clip_weights_are_a_value_error(tmp_path: Path) -> None:
    ckpt = tmp_path / "mine.pth"
    ckpt.write_bytes(b"x")
    spec = register_local_model("odd-clip", ckpt, clip="ViT-B-32", clip_pretrained="no-such-tag")
    with pytest.raises(ValueError, match="no-such-tag"):
        ensure_clip_weights(spec)


# ------------------------------------------------------------------------------------------------------------------
# User models
# ------------------------------------------------------------------------------------------------------------------


def test_register_local_model_round_trip(tmp_path: Path, clip_file: Path, hub: FakeHub) -> None:
    ckpt = tmp_path / "my_r2.pth"
    ckpt.write_bytes(b"my weights")
    spec = register_local_model(
        "my-model",
        ckpt,
        clip_path=clip_file,
        fps=1.0,
        unit=None,
        nms_type="linear",
        outputs="saliency",
        hash_prefix=sha(b"my weights")[:10],
    )
    assert get_model("my-model") == spec
    assert list_models()[-1] == spec and len(list_models()) == 21
    assert (spec.path, spec.clip_path, spec.filename, spec.url) == (str(ckpt), str(clip_file), "my_r2.pth", None)
    assert (spec.fps, spec.unit, spec.nms_type, spec.outputs, spec.has_moments) == (
        1.0,
        None,
        "linear",
        "saliency",
        False,
    )
    assert ensure_checkpoint(spec) == ckpt
    assert missing_files(spec) == []
    assert hub.requests == []

    unregister_model("my-model")
    with pytest.raises(UnknownModelError):
        get_model("my-model")


def test_register_local_model_errors(tmp_path: Path) -> None:
    ckpt = tmp_path / "w.pth"
    with pytest.raises(FileNotFoundError, match="w.pth"):
        register_local_model("w", ckpt)
    ckpt.write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        register_local_model("w", ckpt, clip_path=tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="fps"):
        register_local_model("w", ckpt, fps=0)
    with pytest.raises(ValueError, match="nms_type"):
        register_local_model("w", ckpt, nms_type="gaussian")  # type: ignore[arg-type]
    register_local_model("w", ckpt)
    with pytest.raises(DuplicateModelError):
        register_local_model("w", ckpt)
    with pytest.raises(DuplicateModelError):
        register_local_model("qvhighlights", ckpt)
    with pytest.raises(ValueError, match="official"):
        unregister_model("tacos")


def test_shadowing_an_official_model_and_restoring_it(tmp_path: Path) -> None:
    ckpt = tmp_path / "r2_tuning_qvhighlights-ed516355.pth"
    ckpt.write_bytes(b"local copy")
    spec = register_local_model("qvhighlights", ckpt, overwrite=True)
    assert get_model("qvhighlights") == spec and ensure_checkpoint("qvhighlights") == ckpt
    unregister_model("qvhighlights")
    assert get_model("qvhighlights").url == OFFICIAL_HUB_DIR + "r2_tuning_qvhighlights-ed516355.pth"


def test_local_model_with_wrong_hash_is_refused_but_not_moved(tmp_path: Path) -> None:
    ckpt = tmp_path / "mine.pth"
    ckpt.write_bytes(b"mine")
    spec = register_local_model("mine", ckpt, hash_prefix="00000000")
    with pytest.raises(ChecksumError):
        ensure_checkpoint(spec)
    assert ckpt.read_bytes() == b"mine"
    ckpt.unlink()
    with pytest.raises(WeightsUnavailableError) as info:
        ensure_checkpoint(spec)
    assert str(ckpt) in str(info.value)


def write_registry(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_load_registry_file_round_trip(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "a.pth").write_bytes(b"a")
    (tmp_path / "weights" / "b.pth").write_bytes(b"b")
    (tmp_path / "weights" / "clip.pt").write_bytes(b"c")
    registry = write_registry(
        tmp_path / "models.json",
        {
            "models": [
                {"name": "user-a", "checkpoint_path": "weights/a.pth"},
                {
                    "name": "user-b",
                    "checkpoint_path": str(tmp_path / "weights" / "b.pth"),
                    "clip_path": "weights/clip.pt",
                    "fps": 1,
                    "unit": None,
                    "nms_type": "linear",
                    "nms_thres": 0.5,
                    "outputs": "saliency",
                    "query_path": "e2e",
                    "dataset": "MyData",
                    "domain": "cats",
                    "hash_prefix": sha(b"b")[:8],
                },
                {"name": "user-c", "url": "https://example.org/w/my_model-0123abcd.pth"},
            ]
        },
    )
    specs = load_registry_file(registry)
    assert [s.name for s in specs] == ["user-a", "user-b", "user-c"]
    a, b, c = specs
    assert a.path == str(tmp_path / "weights" / "a.pth") and a.filename == "a.pth"
    assert (a.fps, a.unit, a.nms_type, a.outputs, a.clip_pretrained, a.hash_prefix) == (
        0.5,
        2.0,
        "normal",
        "moments+saliency",
        "openai",
        None,
    )
    assert b.clip_path == str(tmp_path / "weights" / "clip.pt") and b.clip_pretrained is None
    assert (b.fps, b.unit, b.nms_type, b.nms_thres, b.outputs, b.query_path, b.dataset, b.domain) == (
        1,
        None,
        "linear",
        0.5,
        "saliency",
        "e2e",
        "MyData",
        "cats",
    )
    assert (c.path, c.filename, c.hash_prefix) == (None, "my_model-0123abcd.pth", "0123abcd")
    assert [get_model(n) for n in ("user-a", "user-b", "user-c")] == specs
    assert ensure_checkpoint("user-b").read_bytes() == b"b"

    # the same JSON shape as ModelSpec.to_dict(): a bare list works too
    bare = write_registry(tmp_path / "bare.json", [{**b.to_dict(), "name": "user-b2"}])
    assert load_registry_file(bare)[0] == replace(b, name="user-b2")


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ({"models": [{"name": "x", "checkpoint_path": "missing.pth"}]}, "does not exist"),
        ({"models": [{"checkpoint_path": "ok.pth"}]}, "'name' is required"),
        ({"models": [{"name": "x", "checkpoint_path": "ok.pth", "fsp": 1}]}, "unknown key"),
        ({"models": [{"name": "x", "checkpoint_path": "ok.pth", "fps": -2}]}, "fps"),
        ({"models": [{"name": "x", "checkpoint_path": "ok.pth", "unit": "2"}]}, "unit"),
        ({"models": [{"name": "x", "checkpoint_path": "ok.pth", "outputs": "all"}]}, "outputs"),
        ({"models": [{"name": "x"}]}, "checkpoint_path"),
        ({"models": [{"name": "x", "checkpoint_path": "ok.pth", "path": "ok.pth"}]}, "not both"),
        ({"models": ["x"]}, "JSON object"),
        ({"models": {"name": "x"}}, "expected a list"),
        (
            {"models": [{"name": "x", "checkpoint_path": "ok.pth"}, {"name": "x", "checkpoint_path": "ok.pth"}]},
            "more than once",
        ),
        ({"models": [{"name": "tacos", "checkpoint_path": "ok.pth"}]}, "already registered"),
    ],
)
def test_load_registry_file_errors_register_nothing(tmp_path: Path, document: object, error: str) -> None:
    (tmp_path / "ok.pth").write_bytes(b"ok")
    good = {"name": "fine-model", "checkpoint_path": "ok.pth"}
    if isinstance(document, dict) and isinstance(document.get("models"), list):
        document = {"models": [good, *document["models"]]}
    before = list_models()
    with pytest.raises(RegistryError, match=error):
        load_registry_file(write_registry(tmp_path / "models.json", document))
    assert list_models() == before


def test_load_registry_file_unreadable(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry_file(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry_file(tmp_path / "bad.json")
