"""Idempotency keys: per key, the fingerprint of the first request and its answer, for ``R2_IDEMPOTENCY_TTL_S``.

A key is *reserved* (``pending``) before its request runs, so a second request with the same key while the first
runs is refused instead of doing the work twice; the answer replaces the reservation when it is done, or the
reservation is dropped when the request ended in a way worth retrying (5xx, 429). Redis keeps one string per key
in a slot of its own (``{p}:{i:<hash>}:idem``; :mod:`service.contract.keys`); embedded mode keeps a dict.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod

from service.contract.keys import Keys

from .connect import RedisClient

PENDING = b"pending"


class IdempotencyStore(ABC):
    @abstractmethod
    def reserve(self, slot: str, ttl_s: int) -> bytes | None:
        """Reserve ``slot`` (True-ish None) or return what it holds already: :data:`PENDING` or an answer."""

    @abstractmethod
    def save(self, slot: str, answer: bytes, ttl_s: int) -> None:
        """Store the answer of the request that reserved ``slot``."""

    @abstractmethod
    def drop(self, slot: str) -> None:
        """Forget ``slot`` (its request may be sent again and run again)."""


class RedisIdempotency(IdempotencyStore):
    def __init__(self, client: RedisClient, keys: Keys) -> None:
        self.client, self.keys = client, keys

    def reserve(self, slot: str, ttl_s: int) -> bytes | None:
        key = self.keys.idempotency(slot)
        # SET NX GET: reserve, or read what is there, in one command (Redis >= 7).
        found = self.client.set(key, PENDING, nx=True, ex=ttl_s, get=True)
        return bytes(found) if isinstance(found, bytes | bytearray) else None

    def save(self, slot: str, answer: bytes, ttl_s: int) -> None:
        self.client.set(self.keys.idempotency(slot), answer, ex=ttl_s)

    def drop(self, slot: str) -> None:
        self.client.delete(self.keys.idempotency(slot))


class MemoryIdempotency(IdempotencyStore):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, bytes]] = {}

    def reserve(self, slot: str, ttl_s: int) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            for name in [n for n, (until, _) in self._items.items() if until <= now]:
                del self._items[name]  # expired keys go on the next reservation: no sweeper thread
            found = self._items.get(slot)
            if found is not None:
                return found[1]
            self._items[slot] = (now + ttl_s, PENDING)
            return None

    def save(self, slot: str, answer: bytes, ttl_s: int) -> None:
        with self._lock:
            self._items[slot] = (time.monotonic() + ttl_s, answer)

    def drop(self, slot: str) -> None:
        with self._lock:
            self._items.pop(slot, None)
