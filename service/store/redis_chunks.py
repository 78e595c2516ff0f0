"""Chunked entries (see :mod:`service.store.chunks`) in Redis, shared by the API and every worker."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis

from service.contract.keys import Keys

from .chunks import ChunkStore, CorruptEntry, Header, NoRoom
from .connect import RedisClient

_CHUNK_GRACE_S = 60  # chunks expire this much after their header
_READ_BATCH_BYTES = 64 << 20  # fetch at most this much per Redis round trip
# Send at most this much per pipeline: a pipeline holds its commands (and redis-py their encoded copy) until it
# runs, so this is the memory one write in progress takes. 64 MiB per upload made the API's RSS grow by about
# 55 MiB per concurrent upload; 1 MiB costs a round trip per MiB, well under the time to receive that MiB.
WRITE_BATCH_BYTES = 1 << 20
_DELETE_BATCH = 500  # keys per DEL


class RedisChunkStore(ChunkStore):
    """Entries in Redis, shared by the API and every worker on every machine. An entry's header and chunks share
    its hash tag, so on a cluster every entry lives on one node and its batched reads and writes stay there."""

    def __init__(self, client: RedisClient, chunk_bytes: int,
                 on_corrupt: Callable[[str, str], None] | None = None) -> None:
        super().__init__(chunk_bytes, on_corrupt)
        self.client = client

    def put(self, name: str, pieces: Iterable[bytes | bytearray | memoryview], meta: dict[str, Any],
            ttl_s: int) -> Header:
        try:
            return super().put(name, pieces, meta, ttl_s)
        except redis.OutOfMemoryError as err:  # maxmemory reached and nothing evictable: drop what was written
            self._delete_chunks(name, None)
            raise NoRoom(f"Redis is at maxmemory: {err}") from err

    def _write_chunks(self, name: str, chunks: Iterator[bytes], ttl_s: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for index, chunk in enumerate(chunks):
            pipe.set(Keys.chunk(name, index), chunk, ex=ttl_s + _CHUNK_GRACE_S)
            pending += len(chunk)
            if pending >= WRITE_BATCH_BYTES:
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

    def _read_chunk_span(self, name: str, header: Header, first: int, last: int) -> Iterator[bytes | None]:
        for index in range(first, last + 1):  # one chunk per round trip: a Range read holds one chunk at a time
            yield self.client.get(Keys.chunk(name, index))  # type: ignore[misc]

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

    def index_add(self, index: str, member: str, ttl_s: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(index, member)
        pipe.expire(index, ttl_s + _CHUNK_GRACE_S)
        try:
            pipe.execute()
        except redis.OutOfMemoryError as err:
            raise NoRoom(f"Redis is at maxmemory: {err}") from err

    def index_members(self, index: str) -> set[str]:
        return {m.decode() if isinstance(m, bytes) else m for m in self.client.smembers(index)}

    def index_drop(self, index: str) -> None:
        self.client.delete(index)

    def _delete_header(self, name: str) -> None:
        self.client.delete(name)

    def _delete_chunks(self, name: str, count: int | None) -> None:
        if count is None:  # the header was unreadable: chunks are numbered from 0, delete until a batch finds none
            start = 0
            while self.client.delete(*[Keys.chunk(name, i) for i in range(start, start + _DELETE_BATCH)]):
                start += _DELETE_BATCH
            return
        for start in range(0, count, _DELETE_BATCH):
            self.client.delete(*[Keys.chunk(name, i) for i in range(start, min(count, start + _DELETE_BATCH))])
