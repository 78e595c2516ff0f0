"""The cold tier: uploaded bytes and encoded features written once and kept while the video lives.

Redis (or embedded mode's memory) holds hot copies under a memory budget and may evict them at any time; the
cold tier keeps every entry of every live video, so a query whose features are not hot reads them from here
instead of decoding the video again, and eviction never loses a ready video. Writes are atomic (a temporary
file, fsync, rename), entries carry the chunk format's header with its CRC-32 (:mod:`service.store.chunks`)
and are verified on every read; a damaged entry is deleted and reads as a miss.

:class:`ColdStore` is the interface; :class:`DirColdStore` keeps entries in a directory: local disk in embedded
mode, a volume shared by the API and every worker in a deployment (``R2_COLD_DIR``). An object store would be
a third implementation of the same interface, ``S3ColdStore`` (boto3 against any S3-compatible endpoint: one
object per entry under ``<prefix>/<video id>/``, the header as object metadata and its CRC checked on read,
``put_object``/multipart upload (an object appears whole or not at all, so no rename is needed), deletion by
listing the video's prefix, expiry by a bucket lifecycle rule instead of :meth:`ColdStore.sweep`), chosen in
:func:`service.store.backend.open_backend` from an ``s3://bucket/prefix`` value of the same setting.

Layout of :class:`DirColdStore`, one folder per video (the cold twin of the video's Redis slot), one file per
entry: the payload verbatim from byte 0, then the header (sizes, CRC-32, meta), then the header's length as a
big-endian u32, renamed into place once complete::

    <root>/<key prefix>/<video id[:2]>/<video id>/
        blob.r2ck                 the uploaded bytes (bytes [0, payload size) are the file as uploaded, so
                                  a Range read can seek in it)
        feat-<feature id>.r2ck    encoded features, raw float16 (K, T, P, C)
        record.json               the video's record once ready (restores an evicted Redis record)

The folder's modification time is the video's last use (:meth:`ColdStore.touch`); :meth:`ColdStore.sweep`
removes videos unused for longer than their lifetime (``R2_VIDEO_TTL_S``), as their Redis records expire.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import threading
import time
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote

from .chunks import CorruptEntry, Header, Verifier, rechunk

log = logging.getLogger(__name__)

_SUFFIX = ".r2ck"
_TRAILER = struct.Struct(">I")  # the header's length, last in the file
_RECORD = "record.json"
_TMP_MARK = ".tmp-"
_TMP_MAX_AGE_S = 3600.0  # a temporary file older than this belongs to a writer that died


class ColdStore(ABC):
    """Entries of (meta, payload bytes) per video, written once; a damaged entry reads as a miss.

    ``on_corrupt(name, reason)`` is called when an entry fails verification (it has been deleted by then).
    """

    def __init__(self, chunk_bytes: int, on_corrupt: Callable[[str, str], None] | None = None) -> None:
        self.chunk_bytes = chunk_bytes
        self.on_corrupt = on_corrupt

    @abstractmethod
    def put(self, video_id: str, name: str, pieces: Iterable[bytes | bytearray | memoryview],
            meta: dict[str, Any]) -> Header:
        """Store the concatenation of ``pieces`` as entry ``name`` of the video, atomically. An entry that is
        already there is kept (entries are written once: same name, same content)."""

    @abstractmethod
    def get(self, video_id: str, name: str) -> tuple[dict[str, Any], bytes] | None:
        """(meta, payload) of a complete, verified entry; None when missing or damaged."""

    @abstractmethod
    def get_to_file(self, video_id: str, name: str, file: IO[bytes]) -> dict[str, Any] | None:
        """Stream a verified entry into ``file``; its meta, or None (the file content is then garbage)."""

    @abstractmethod
    def exists(self, video_id: str, name: str) -> bool: ...

    @abstractmethod
    def header(self, video_id: str, name: str) -> Header | None:
        """The entry's header (its size and meta) without reading the payload; None for a miss."""

    @abstractmethod
    def read_range(self, video_id: str, name: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the entry's payload, in pieces of at most the chunk size (not CRC-checked: the
        CRC covers the whole payload)."""

    @abstractmethod
    def names(self, video_id: str) -> set[str]:
        """The entries the video has."""

    @abstractmethod
    def delete(self, video_id: str, name: str) -> None:
        """Remove one entry (the video's folder goes with its last entry)."""

    @abstractmethod
    def delete_video(self, video_id: str) -> None:
        """Remove every entry and the record of the video."""

    @abstractmethod
    def touch(self, video_id: str) -> None:
        """The video was used now (it is kept another lifetime from now)."""

    @abstractmethod
    def last_used(self, video_id: str) -> float | None:
        """When the video was last used (epoch seconds); None when the cold tier has nothing of it."""

    @abstractmethod
    def put_record(self, video_id: str, record: dict[str, Any]) -> None:
        """Keep the video's record (JSON), replacing the previous one atomically."""

    @abstractmethod
    def get_record(self, video_id: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def delete_record(self, video_id: str) -> None: ...

    @abstractmethod
    def sweep(self, max_idle_s: float) -> int:
        """Remove the videos unused for more than ``max_idle_s``; how many were removed."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename is still atomic
    finally:
        os.close(fd)


class DirColdStore(ColdStore):
    """The cold tier in a directory (see the module's docstring for the layout)."""

    def __init__(self, root: Path, prefix: str, chunk_bytes: int,
                 on_corrupt: Callable[[str, str], None] | None = None) -> None:
        super().__init__(chunk_bytes, on_corrupt)
        self.root = Path(root) / prefix
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ paths

    def folder(self, video_id: str) -> Path:
        safe = quote(video_id, safe="")
        return self.root / (safe[:2] or "_") / safe

    def path(self, video_id: str, name: str) -> Path:
        """The file of an entry: its payload from byte 0, then the header (see the module's docstring)."""
        return self.folder(video_id) / (quote(name, safe="") + _SUFFIX)

    @staticmethod
    def _write_atomically(target: Path, pieces: Iterable[bytes]) -> None:
        tmp = target.with_name(f"{target.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                for piece in pieces:
                    f.write(piece)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------------------------------------ entries

    def put(self, video_id: str, name: str, pieces: Iterable[bytes | bytearray | memoryview],
            meta: dict[str, Any]) -> Header:
        target = self.path(video_id, name)
        existing = self._header(target)
        if existing is not None:
            return existing
        target.parent.mkdir(parents=True, exist_ok=True)
        header: Header | None = None

        def file_pieces() -> Iterator[bytes]:
            nonlocal header
            crc, total, count = 0, 0, 0
            for chunk in rechunk(pieces, self.chunk_bytes):
                crc, total, count = zlib.crc32(chunk, crc), total + len(chunk), count + 1
                yield chunk
            header = Header(total, self.chunk_bytes, count, crc, meta)
            packed = header.pack()
            yield packed + _TRAILER.pack(len(packed))

        self._write_atomically(target, file_pieces())  # one rename: the entry appears whole or not at all
        _fsync_dir(target.parent)
        assert header is not None
        return header

    @staticmethod
    def _open_header(f: IO[bytes]) -> tuple[Header, int]:
        """The header of an open entry file and the file's size; :class:`CorruptEntry` when inconsistent."""
        size = f.seek(0, os.SEEK_END)
        if size < _TRAILER.size:
            raise CorruptEntry(f"file of {size} bytes is too short")
        f.seek(size - _TRAILER.size)
        (head_len,) = _TRAILER.unpack(f.read(_TRAILER.size))
        if head_len > size - _TRAILER.size:
            raise CorruptEntry(f"header length {head_len} does not fit in a file of {size} bytes")
        f.seek(size - _TRAILER.size - head_len)
        header = Header.unpack(f.read(head_len))
        if header.total_bytes + head_len + _TRAILER.size != size:
            raise CorruptEntry(f"file of {size} bytes cannot hold a payload of {header.total_bytes} bytes")
        return header, size

    def _header(self, path: Path) -> Header | None:
        try:
            with open(path, "rb") as f:
                return self._open_header(f)[0]
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, CorruptEntry):
            return None  # unreadable: a reader reports (and removes) it

    def _read(self, video_id: str, name: str, sink: Callable[[bytes], object]) -> dict[str, Any] | None:
        label = f"cold:{video_id}/{name}"
        try:
            with open(self.path(video_id, name), "rb") as f:
                header, _ = self._open_header(f)
                check = Verifier(header)
                f.seek(0)
                for index in range(header.num_chunks):
                    sink(check.add(f.read(header.expected_size(index))))
                check.finish()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, CorruptEntry) as caught:
            err = caught if isinstance(caught, CorruptEntry) else CorruptEntry(f"unreadable: {caught}")
        else:
            return header.meta
        log.warning("cold entry %s is damaged (%s): deleted, treated as a miss", label, err)
        self.delete(video_id, name)
        if self.on_corrupt is not None:
            self.on_corrupt(label, str(err))
        return None

    def get(self, video_id: str, name: str) -> tuple[dict[str, Any], bytes] | None:
        out = bytearray()
        meta = self._read(video_id, name, out.extend)
        return None if meta is None else (meta, bytes(out))

    def get_to_file(self, video_id: str, name: str, file: IO[bytes]) -> dict[str, Any] | None:
        return self._read(video_id, name, file.write)

    def exists(self, video_id: str, name: str) -> bool:
        return self.path(video_id, name).is_file()

    def header(self, video_id: str, name: str) -> Header | None:
        return self._header(self.path(video_id, name))

    def read_range(self, video_id: str, name: str, start: int, end: int) -> Iterator[bytes]:
        with open(self.path(video_id, name), "rb") as f:
            header, _ = self._open_header(f)
            if not 0 <= start <= end <= header.total_bytes:
                raise ValueError(f"range [{start}, {end}) is outside a payload of {header.total_bytes} bytes")
            f.seek(start)
            left = end - start
            while left > 0:
                piece = f.read(min(left, self.chunk_bytes))
                if not piece:
                    raise CorruptEntry(f"cold entry {video_id}/{name} ends early")
                left -= len(piece)
                yield piece

    def names(self, video_id: str) -> set[str]:
        try:
            files = os.listdir(self.folder(video_id))
        except (FileNotFoundError, NotADirectoryError):
            return set()
        return {unquote(f[: -len(_SUFFIX)]) for f in files if f.endswith(_SUFFIX) and _TMP_MARK not in f}

    def delete(self, video_id: str, name: str) -> None:
        self.path(video_id, name).unlink(missing_ok=True)
        try:
            self.folder(video_id).rmdir()  # only when nothing else is left
        except OSError:
            pass

    def delete_video(self, video_id: str) -> None:
        shutil.rmtree(self.folder(video_id), ignore_errors=True)

    def touch(self, video_id: str) -> None:
        try:
            os.utime(self.folder(video_id))
        except (FileNotFoundError, NotADirectoryError):
            pass

    def last_used(self, video_id: str) -> float | None:
        try:
            return self.folder(video_id).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    # ------------------------------------------------------------------------------------------------ records

    def put_record(self, video_id: str, record: dict[str, Any]) -> None:
        folder = self.folder(video_id)
        folder.mkdir(parents=True, exist_ok=True)
        self._write_atomically(folder / _RECORD, [json.dumps(record, sort_keys=True).encode()])

    def get_record(self, video_id: str) -> dict[str, Any] | None:
        try:
            record = json.loads((self.folder(video_id) / _RECORD).read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as err:
            log.warning("cold record of video %s is unreadable (%s): ignored", video_id, err)
            return None
        return record if isinstance(record, dict) else None

    def delete_record(self, video_id: str) -> None:
        (self.folder(video_id) / _RECORD).unlink(missing_ok=True)
        try:
            self.folder(video_id).rmdir()
        except OSError:
            pass

    # ------------------------------------------------------------------------------------------------ expiry

    def sweep(self, max_idle_s: float) -> int:
        now, removed = time.time(), 0
        for bucket in _children(self.root):
            for folder in _children(bucket):
                try:
                    idle = now - folder.stat().st_mtime
                except OSError:
                    continue
                if idle > max_idle_s:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
                    continue
                for leftover in folder.glob(f"*{_TMP_MARK}*"):  # from writers that died mid-write
                    try:
                        if now - leftover.stat().st_mtime > _TMP_MAX_AGE_S:
                            leftover.unlink(missing_ok=True)
                    except OSError:
                        continue
            try:
                bucket.rmdir()
            except OSError:
                pass
        return removed


def _children(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except OSError:
        return []
