"""Large values (encoded features, uploaded video bytes) stored as a small header plus raw chunks.

Format of an entry named ``name``: the header at ``name`` and the payload split into chunks of at most
``Settings.chunk_bytes`` at ``name:c0``, ``name:c1``, ... (Redis refuses values over 512 MB, and big values
block its event loop). The header is::

    magic b"R2CK" | format version u16 | reserved u16 | payload bytes u64 | chunk bytes u32 | chunks u32
    | CRC-32 of the payload u32 | meta length u32 | meta (UTF-8 JSON: dtype, shape, versions, video info)

Chunks are written first and the header last, each with a TTL (chunks outlive the header slightly), so a
reader that finds a header finds a complete entry; a missing, short or altered chunk, a bad header or a CRC
mismatch is detected on read, the entry is deleted and the read is a miss. A missing chunk is what Redis'
``maxmemory`` eviction leaves behind, so it is a plain miss; the others are reported as corruption. Never
pickle: bytes in, bytes out.

Stores that keep this format: :class:`service.store.redis_chunks.RedisChunkStore` (shared by every process),
and embedded mode's :class:`service.store.memory.MemoryChunkStore` (features, bounded by bytes) and
:class:`service.store.memory.DirChunkStore` (uploaded videos, one file per entry). Each also keeps small
*indexes* (sets of names, e.g. the feature ids cached for a video) so nothing has to scan for entries.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

MAGIC = b"R2CK"
FORMAT_VERSION = 1
_HEAD = struct.Struct(">4sHHQIIII")
_MAX_META = 1 << 16


class CorruptEntry(ValueError):
    """An entry failed verification (the message says how); readers treat it as a miss."""


class MissingChunk(CorruptEntry):
    """A chunk is gone while its header is there: evicted under ``maxmemory`` or expired, not damaged. Readers
    treat it as a miss too, but it is no corruption (``on_corrupt`` is not called)."""


class NoRoom(Exception):
    """The store refused a write for lack of memory (Redis at ``maxmemory`` with nothing left to evict)."""


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


class Verifier:
    """Checks chunks against a header as they stream past."""

    def __init__(self, header: Header) -> None:
        self.header, self.crc, self.seen, self.index = header, 0, 0, 0

    def add(self, chunk: bytes | None) -> bytes:
        if chunk is None:
            raise MissingChunk(f"chunk {self.index} of {self.header.num_chunks} is missing")
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
            check = Verifier(header)
            for chunk in self._read_chunks(name, header):
                sink(check.add(chunk))
            check.finish()
        except MissingChunk as err:
            log.info("cache entry %s is incomplete (%s: evicted or expired): deleted, treated as a miss", name, err)
            self.delete(name)
            return None
        except CorruptEntry as err:
            log.warning("cache entry %s is corrupt (%s): deleted, treated as a miss", name, err)
            self.delete(name)
            if self.on_corrupt is not None:
                self.on_corrupt(name, str(err))
            return None
        return header.meta

    def header(self, name: str) -> Header | None:
        """The entry's header (its size and meta) without reading the payload; None for a miss."""
        raw = self._read_header(name)
        try:
            return Header.unpack(raw) if raw is not None else None
        except CorruptEntry:
            return None

    def read_range(self, name: str, header: Header, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the payload, one chunk at a time (players seek with Range requests: a 4 GB
        video is never read whole). Chunk sizes are checked; the CRC covers the whole payload only, so it is
        not. :class:`MissingChunk` / :class:`CorruptEntry` when a chunk is gone or has the wrong size."""
        if not 0 <= start <= end <= header.total_bytes:
            raise ValueError(f"range [{start}, {end}) is outside a payload of {header.total_bytes} bytes")
        if start == end:
            return
        first, last = start // header.chunk_bytes, (end - 1) // header.chunk_bytes
        for index, chunk in zip(range(first, last + 1), self._read_chunk_span(name, header, first, last),
                                strict=True):
            if chunk is None:
                raise MissingChunk(f"chunk {index} of {name} is missing")
            if len(chunk) != header.expected_size(index):
                raise CorruptEntry(f"chunk {index} of {name} has {len(chunk)} bytes")
            offset = index * header.chunk_bytes
            yield chunk[max(0, start - offset): min(len(chunk), end - offset)]

    def _read_chunk_span(self, name: str, header: Header, first: int, last: int) -> Iterator[bytes | None]:
        """Chunks ``first..last`` (inclusive); stores that can fetch single chunks override this."""
        for index, chunk in enumerate(self._read_chunks(name, header)):
            if index > last:
                return
            if index >= first:
                yield chunk

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
    def index_add(self, index: str, member: str, ttl_s: int) -> None:
        """Add ``member`` to the set named ``index`` and restart the set's TTL."""

    @abstractmethod
    def index_members(self, index: str) -> set[str]: ...

    @abstractmethod
    def index_drop(self, index: str) -> None: ...

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
