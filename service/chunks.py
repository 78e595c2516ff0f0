"""Large values (encoded features, uploaded video bytes) stored as a small header plus raw chunks.

Format of an entry named ``name``: the header at ``name`` and the payload split into chunks of at most
``Settings.chunk_bytes`` at ``name:c0``, ``name:c1``, ... (Redis refuses values over 512 MB, and big values
block its event loop). The header is::

    magic b"R2CK" | format version u16 | reserved u16 | payload bytes u64 | chunk bytes u32 | chunks u32
    | CRC-32 of the payload u32 | meta length u32 | meta (UTF-8 JSON: dtype, shape, versions, video info)

Chunks are written first and the header last, each with a TTL (chunks outlive the header slightly), so a
reader that finds a header finds a complete entry; a missing, short or altered chunk, a bad header or a CRC
mismatch is detected on read, the entry is deleted and the read is a miss. Never pickle: bytes in, bytes out.

Three stores share this format: :class:`RedisChunkStore` (shared by every process), :class:`MemoryChunkStore`
(embedded mode, bounded by bytes, least recently used first out) and :class:`DirChunkStore` (embedded mode's
uploaded videos, one file per entry).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

from .keys import Keys

log = logging.getLogger(__name__)

MAGIC = b"R2CK"
FORMAT_VERSION = 1
_HEAD = struct.Struct(">4sHHQIIII")
_MAX_META = 1 << 16
_CHUNK_GRACE_S = 60  # chunks expire this much after their header
_READ_BATCH_BYTES = 64 << 20  # fetch at most this much per Redis round trip


class CorruptEntry(ValueError):
    """An entry failed verification (the message says how); readers treat it as a miss."""


@dataclass(frozen=True)
class Header:
    total_bytes: int
    chunk_bytes: int
    num_chunks: int
    crc32: int
    meta: dict[str, Any]

    def pack(self) -> bytes:
        meta = json.dumps(self.meta, sort_keys=True, separators=(",", ":")).encode()
        if len(meta) > _MAX_META:
            raise ValueError("entry meta is too large")
        return _HEAD.pack(MAGIC, FORMAT_VERSION, 0, self.total_bytes, self.chunk_bytes, self.num_chunks,
                          self.crc32, len(meta)) + meta

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        if len(data) < _HEAD.size:
            raise CorruptEntry(f"header of {len(data)} bytes is too short")
        magic, version, _, total, chunk, count, crc, meta_len = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise CorruptEntry(f"bad magic {magic!r}")
        if version != FORMAT_VERSION:
            raise CorruptEntry(f"format version {version}, expected {FORMAT_VERSION}")
        if len(data) != _HEAD.size + meta_len:
            raise CorruptEntry("header length does not match its meta length")
        if chunk <= 0 or count != math.ceil(total / chunk):
            raise CorruptEntry(f"{count} chunks of {chunk} bytes cannot hold {total} bytes")
        try:
            meta = json.loads(data[_HEAD.size:])
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CorruptEntry(f"meta is not JSON: {err}") from err
        if not isinstance(meta, dict):
            raise CorruptEntry("meta is not a JSON object")
        return cls(total, chunk, count, crc, meta)

    def expected_size(self, index: int) -> int:
        return self.chunk_bytes if index < self.num_chunks - 1 else self.total_bytes - self.chunk_bytes * index


def rechunk(pieces: Iterable[bytes | bytearray | memoryview], size: int) -> Iterator[bytes]:
    """Cut a stream of byte pieces of any sizes into chunks of exactly ``size`` (the last may be shorter)."""
    buffer = bytearray()
    for piece in pieces:
        view = memoryview(piece).cast("B")
        while len(view):
            take = min(size - len(buffer), len(view))
            buffer += view[:take]
            view = view[take:]
            if len(buffer) == size:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)


class _Verifier:
    """Checks chunks against a header as they stream past."""

    def __init__(self, header: Header) -> None:
        self.header, self.crc, self.seen, self.index = header, 0, 0, 0

    def add(self, chunk: bytes | None) -> bytes:
        if chunk is None:
            raise CorruptEntry(f"chunk {self.index} of {self.header.num_chunks} is missing")
        if len(chunk) != self.header.expected_size(self.index):
            raise CorruptEntry(f"chunk {self.index} has {len(chunk)} bytes, "
                               f"expected {self.header.expected_size(self.index)}")
        self.crc = zlib.crc32(chunk, self.crc)
        self.seen += len(chunk)
        self.index += 1
        return chunk

    def finish(self) -> None:
        if self.index != self.header.num_chunks or self.seen != self.header.total_bytes:
            raise CorruptEntry("entry is truncated")
        if self.crc != self.header.crc32:
            raise CorruptEntry("CRC-32 mismatch: the payload was altered")


class ChunkStore(ABC):
    """Named entries of (meta, payload bytes) with a TTL; corrupted entries read as misses.

    ``on_corrupt(name, reason)`` is called when an entry fails verification (it has been deleted by then).
    """

    def __init__(self, chunk_bytes: int, on_corrupt: Callable[[str, str], None] | None = None) -> None:
        self.chunk_bytes = chunk_bytes
        self.on_corrupt = on_corrupt

    def put(self, name: str, pieces: Iterable[bytes | bytearray | memoryview], meta: dict[str, Any],
            ttl_s: int) -> Header:
        """Store the concatenation of ``pieces``; chunks first, header last."""
        crc, total, count = 0, 0, 0

        def counted() -> Iterator[bytes]:
            nonlocal crc, total, count
            for chunk in rechunk(pieces, self.chunk_bytes):
                crc = zlib.crc32(chunk, crc)
                total += len(chunk)
                count += 1
                yield chunk

        self._write_chunks(name, counted(), ttl_s)
        header = Header(total, self.chunk_bytes, count, crc, meta)
        self._write_header(name, header.pack(), ttl_s)
        return header

    def get(self, name: str) -> tuple[dict[str, Any], bytes] | None:
        """(meta, payload) of a complete, verified entry; None for a miss or a corrupted entry."""
        out = bytearray()
        meta = self._read(name, out.extend)
        return None if meta is None else (meta, bytes(out))

    def get_to_file(self, name: str, file: IO[bytes]) -> dict[str, Any] | None:
        """Stream a verified entry into ``file``; meta, or None (the file content is then garbage)."""
        return self._read(name, file.write)

    def _read(self, name: str, sink: Callable[[bytes], object]) -> dict[str, Any] | None:
        raw = self._read_header(name)
        if raw is None:
            return None
        try:
            header = Header.unpack(raw)
            check = _Verifier(header)
            for chunk in self._read_chunks(name, header):
                sink(check.add(chunk))
            check.finish()
        except CorruptEntry as err:
            log.warning("cache entry %s is corrupt (%s): deleted, treated as a miss", name, err)
            self.delete(name)
            if self.on_corrupt is not None:
                self.on_corrupt(name, str(err))
            return None
        return header.meta

    def delete(self, name: str) -> None:
        """Remove an entry: header first (readers then see a miss), then every chunk."""
        raw = self._read_header(name)
        self._delete_header(name)
        try:
            count = Header.unpack(raw).num_chunks if raw is not None else None
        except CorruptEntry:
            count = None
        self._delete_chunks(name, count)

    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def touch(self, name: str, ttl_s: int) -> bool:
        """Restart the entry's TTL; False when it does not exist."""

    @abstractmethod
    def delete_matching(self, pattern: str) -> int:
        """Delete every header and chunk whose name matches a Redis glob ending in ``*``."""

    @abstractmethod
    def _write_chunks(self, name: str, chunks: Iterator[bytes], ttl_s: int) -> None: ...

    @abstractmethod
    def _write_header(self, name: str, header: bytes, ttl_s: int) -> None: ...

    @abstractmethod
    def _read_header(self, name: str) -> bytes | None: ...

    @abstractmethod
    def _read_chunks(self, name: str, header: Header) -> Iterator[bytes | None]: ...

    @abstractmethod
    def _delete_header(self, name: str) -> None: ...

    @abstractmethod
    def _delete_chunks(self, name: str, count: int | None) -> None: ...


# ------------------------------------------------------------------------------------------------------------ Redis


class RedisChunkStore(ChunkStore):
    """Entries in Redis, shared by the API and every worker on every machine."""

    def __init__(self, client: redis.Redis, chunk_bytes: int,
                 on_corrupt: Callable[[str, str], None] | None = None) -> None:
        super().__init__(chunk_bytes, on_corrupt)
        self.client = client

    def _write_chunks(self, name: str, chunks: Iterator[bytes], ttl_s: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for index, chunk in enumerate(chunks):
            pipe.set(Keys.chunk(name, index), chunk, ex=ttl_s + _CHUNK_GRACE_S)
            pending += len(chunk)
            if pending >= _READ_BATCH_BYTES:
                pipe.execute()
                pending = 0
        pipe.execute()

    def _write_header(self, name: str, header: bytes, ttl_s: int) -> None:
        self.client.set(name, header, ex=ttl_s)

    def _read_header(self, name: str) -> bytes | None:
        return self.client.get(name)  # type: ignore[return-value]

    def _read_chunks(self, name: str, header: Header) -> Iterator[bytes | None]:
        per_batch = max(1, _READ_BATCH_BYTES // header.chunk_bytes)
        for start in range(0, header.num_chunks, per_batch):
            keys = [Keys.chunk(name, i) for i in range(start, min(start + per_batch, header.num_chunks))]
            yield from self.client.mget(keys)  # type: ignore[misc]

    def exists(self, name: str) -> bool:
        return bool(self.client.exists(name))

    def touch(self, name: str, ttl_s: int) -> bool:
        raw = self._read_header(name)
        if raw is None:
            return False
        try:
            count = Header.unpack(raw).num_chunks
        except CorruptEntry:
            return False
        pipe = self.client.pipeline(transaction=False)
        for index in range(count):
            pipe.expire(Keys.chunk(name, index), ttl_s + _CHUNK_GRACE_S)
        pipe.expire(name, ttl_s)
        return bool(pipe.execute()[-1])

    def delete_matching(self, pattern: str) -> int:
        deleted = 0
        batch: list[str | bytes] = []
        for key in self.client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(self.client.delete(*batch))  # type: ignore[arg-type]
                batch.clear()
        if batch:
            deleted += int(self.client.delete(*batch))  # type: ignore[arg-type]
        return deleted

    def _delete_header(self, name: str) -> None:
        self.client.delete(name)

    def _delete_chunks(self, name: str, count: int | None) -> None:
        if count is None:
            self.delete_matching(f"{name}:c*")
            return
        for start in range(0, count, 500):
            self.client.delete(*[Keys.chunk(name, i) for i in range(start, min(count, start + 500))])


# ------------------------------------------------------------------------------------------------------------ memory


class MemoryChunkStore(ChunkStore):
    """Embedded mode: entries in this process's memory, at most ``capacity_bytes``, least recently used out."""

    def __init__(self, chunk_bytes: int, capacity_bytes: int,
                 on_corrupt: Callable[[str, str], None] | None = None) -> None:
        super().__init__(chunk_bytes, on_corrupt)
        self.capacity_bytes = capacity_bytes
        self._lock = threading.RLock()
        # name -> [header bytes, chunks, expires at]; chunk lists are filled before the header lands.
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        self._chunks: dict[str, list[bytes]] = {}
        self._used = 0

    def _live(self, name: str) -> list[Any] | None:
        entry = self._entries.get(name)
        if entry is not None and entry[2] < time.monotonic():
            self._drop(name)
            return None
        if entry is not None:
            self._entries.move_to_end(name)
        return entry

    def _drop(self, name: str) -> None:
        self._entries.pop(name, None)
        chunks = self._chunks.pop(name, None)
        if chunks:
            self._used -= sum(len(c) for c in chunks)

    def _write_chunks(self, name: str, chunks: Iterator[bytes], ttl_s: int) -> None:
        data = list(chunks)
        with self._lock:
            self._drop(name)
            self._chunks[name] = data
            self._used += sum(len(c) for c in data)

    def _write_header(self, name: str, header: bytes, ttl_s: int) -> None:
        with self._lock:
            self._entries[name] = [header, None, time.monotonic() + ttl_s]
            while self._used > self.capacity_bytes and len(self._entries) > 1:
                oldest = next(iter(self._entries))
                self._drop(oldest)

    def _read_header(self, name: str) -> bytes | None:
        with self._lock:
            entry = self._live(name)
            return None if entry is None else entry[0]

    def _read_chunks(self, name: str, header: Header) -> Iterator[bytes | None]:
        with self._lock:
            chunks = list(self._chunks.get(name, []))
        for index in range(header.num_chunks):
            yield chunks[index] if index < len(chunks) else None

    def exists(self, name: str) -> bool:
        with self._lock:
            return self._live(name) is not None

    def touch(self, name: str, ttl_s: int) -> bool:
        with self._lock:
            entry = self._live(name)
            if entry is None:
                return False
            entry[2] = time.monotonic() + ttl_s
            return True

    def delete_matching(self, pattern: str) -> int:
        if not pattern.endswith("*"):
            raise ValueError("only prefix patterns are supported")
        with self._lock:
            names = [n for n in self._entries if n.startswith(pattern[:-1])]
            for name in names:
                self._drop(name)
            return len(names)

    def _delete_header(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)

    def _delete_chunks(self, name: str, count: int | None) -> None:
        with self._lock:
            self._drop(name)

    def corrupt_for_tests(self, name: str, index: int, data: bytes | None) -> None:
        """Replace (or with None, remove) one chunk, to test verification."""
        with self._lock:
            chunks = self._chunks[name]
            if data is None:
                del chunks[index]
            else:
                chunks[index] = data


# ------------------------------------------------------------------------------------------------------------ files


class DirChunkStore(ChunkStore):
    """Embedded mode's uploaded videos: one file per entry (header length u32, header, payload) in a folder.

    Expiry is the file's modification time plus the TTL stored in the header meta; expired files are removed
    when read and on every write.
    """

    def __init__(self, root: Path, chunk_bytes: int, on_corrupt: Callable[[str, str], None] | None = None) -> None:
        super().__init__(chunk_bytes, on_corrupt)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    def _path(self, name: str) -> Path:
        return self.root / (name.replace("/", "_").replace(":", "_") + ".r2ck")

    def put(self, name: str, pieces: Iterable[bytes | bytearray | memoryview], meta: dict[str, Any],
            ttl_s: int) -> Header:
        self._sweep()
        path = self._path(name)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        crc, total, count = 0, 0, 0
        with open(tmp, "wb") as f:
            f.write(b"\0" * 4)  # header length, patched below; the header itself goes at the end
            for chunk in rechunk(pieces, self.chunk_bytes):
                f.write(chunk)
                crc, total, count = zlib.crc32(chunk, crc), total + len(chunk), count + 1
            header = Header(total, self.chunk_bytes, count, crc, {**meta, "_ttl_s": ttl_s})
            packed = header.pack()
            f.write(packed)
            f.seek(0)
            f.write(struct.pack(">I", len(packed)))
        os.replace(tmp, path)
        return header

    def _open(self, name: str) -> tuple[Path, int, int] | None:
        """(path, payload size, header size) of a live entry."""
        path = self._path(name)
        try:
            size, mtime = path.stat().st_size, path.stat().st_mtime
            with open(path, "rb") as f:
                (head_len,) = struct.unpack(">I", f.read(4))
                f.seek(size - head_len)
                header = Header.unpack(f.read(head_len))
        except FileNotFoundError:
            return None
        except (OSError, struct.error, CorruptEntry):
            return path, -1, 0
        if mtime + float(header.meta.get("_ttl_s", 0)) < time.time():
            path.unlink(missing_ok=True)
            return None
        return path, size - 4 - head_len, head_len

    def _read_header(self, name: str) -> bytes | None:
        found = self._open(name)
        if found is None:
            return None
        path, payload, head_len = found
        if payload < 0:
            return b""  # unreadable header: reported as corrupt by the caller
        with open(path, "rb") as f:
            f.seek(4 + payload)
            return f.read(head_len)

    def _read_chunks(self, name: str, header: Header) -> Iterator[bytes | None]:
        with open(self._path(name), "rb") as f:
            f.seek(4)
            for index in range(header.num_chunks):
                data = f.read(header.expected_size(index))
                yield data if data else None

    def get(self, name: str) -> tuple[dict[str, Any], bytes] | None:
        found = super().get(name)
        return None if found is None else ({k: v for k, v in found[0].items() if k != "_ttl_s"}, found[1])

    def exists(self, name: str) -> bool:
        return self._open(name) is not None

    def touch(self, name: str, ttl_s: int) -> bool:
        if self._open(name) is None:
            return False
        os.utime(self._path(name))
        return True

    def delete_matching(self, pattern: str) -> int:
        prefix = self._path(pattern.rstrip("*")).name[: -len(".r2ck")]
        count = 0
        for path in self.root.glob(f"{prefix}*.r2ck"):
            path.unlink(missing_ok=True)
            count += 1
        return count

    def _delete_header(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def _delete_chunks(self, name: str, count: int | None) -> None:
        pass  # one file holds everything

    def _write_chunks(self, name: str, chunks: Iterator[bytes], ttl_s: int) -> None:  # pragma: no cover
        raise NotImplementedError("DirChunkStore.put writes whole files")

    def _write_header(self, name: str, header: bytes, ttl_s: int) -> None:  # pragma: no cover
        raise NotImplementedError("DirChunkStore.put writes whole files")

    def _sweep(self) -> None:
        for path in self.root.glob("*.r2ck"):
            try:
                with open(path, "rb") as f:
                    (head_len,) = struct.unpack(">I", f.read(4))
                    f.seek(path.stat().st_size - head_len)
                    ttl = float(Header.unpack(f.read(head_len)).meta.get("_ttl_s", 0))
                if path.stat().st_mtime + ttl < time.time():
                    path.unlink(missing_ok=True)
            except (OSError, struct.error, CorruptEntry):
                continue


# ------------------------------------------------------------------------------------------------------------ typed


@dataclass(frozen=True)
class CachedFeatures:
    """Encoded video features as raw bytes (the worker turns them into a tensor; no torch here)."""

    dtype: str  # "float16"
    shape: tuple[int, ...]  # (K, T, P, C)
    data: bytes
    video: dict[str, Any]  # VideoInfo fields: num_frames, avg_fps, width, height, duration


_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4}
FEATURES_VERSION = 1


class FeatureCache:
    """Video features keyed by (video SHA-256, the grounder's feature_id)."""

    def __init__(self, store: ChunkStore, keys: Keys, ttl_s: int) -> None:
        self.store, self.keys, self.ttl_s = store, keys, ttl_s

    def get(self, video_id: str, feature_id: str) -> CachedFeatures | None:
        name = self.keys.features(video_id, feature_id)
        found = self.store.get(name)
        if found is None:
            return None
        meta, data = found
        try:
            dtype, shape = str(meta["dtype"]), tuple(int(d) for d in meta["shape"])
            if meta.get("version") != FEATURES_VERSION or meta.get("feature_id") != feature_id:
                raise CorruptEntry("written by another version or for other features")
            if dtype not in _ITEMSIZE or math.prod(shape) * _ITEMSIZE[dtype] != len(data):
                raise CorruptEntry(f"{len(data)} bytes do not hold a {dtype} tensor of shape {shape}")
            video = dict(meta["video"])
        except (KeyError, TypeError, ValueError) as err:
            log.warning("feature entry %s has a bad header (%s): deleted, treated as a miss", name, err)
            self.store.delete(name)
            if self.store.on_corrupt is not None:
                self.store.on_corrupt(name, str(err))
            return None
        self.store.touch(name, self.ttl_s)
        return CachedFeatures(dtype, shape, data, video)

    def put(self, video_id: str, feature_id: str, features: CachedFeatures) -> None:
        meta = dict(version=FEATURES_VERSION, feature_id=feature_id, dtype=features.dtype,
                    shape=list(features.shape), video=features.video)
        self.store.put(self.keys.features(video_id, feature_id), [features.data], meta, self.ttl_s)

    def delete_video(self, video_id: str) -> int:
        return self.store.delete_matching(self.keys.features_of_video(video_id))


class VideoBlobs:
    """Uploaded video bytes, reachable by every worker (in Redis, or a folder in embedded mode)."""

    def __init__(self, store: ChunkStore, keys: Keys, ttl_s: int) -> None:
        self.store, self.keys, self.ttl_s = store, keys, ttl_s

    def put_file(self, video_id: str, path: Path) -> None:
        with open(path, "rb") as f:
            pieces = iter(lambda: f.read(self.store.chunk_bytes), b"")
            self.store.put(self.keys.blob(video_id), pieces, {"video_id": video_id}, self.ttl_s)

    def fetch_to(self, video_id: str, path: Path) -> bool:
        """Write the video into ``path``; False when it is gone or failed verification."""
        with open(path, "wb") as f:
            return self.store.get_to_file(self.keys.blob(video_id), f) is not None

    def exists(self, video_id: str) -> bool:
        return self.store.exists(self.keys.blob(video_id))

    def touch(self, video_id: str) -> bool:
        return self.store.touch(self.keys.blob(video_id), self.ttl_s)

    def delete(self, video_id: str) -> None:
        self.store.delete(self.keys.blob(video_id))
