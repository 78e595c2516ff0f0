"""Clients for one Redis server or a Redis Cluster, chosen by one setting (``R2_REDIS_CLUSTER``).

Both fail fast (Redis down must give a quick 503, not a hang or minutes of retries) and connect lazily, so a
process starts, and answers 503, while Redis is down. redis-py's cluster client connects in its constructor,
hence :class:`LazyCluster`. With a cluster, ``REDIS_URL`` names one node, or several as
``redis://host1:7000,host2:7000`` (any reachable one is enough: the client discovers the others and follows
failovers); the database must be 0.
"""

from __future__ import annotations

import threading
from typing import Any, TypeAlias, cast
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
from redis._parsers import Encoder
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.exceptions import RedisClusterException, SlotNotCoveredError
from redis.retry import Retry

RedisClient: TypeAlias = "redis.Redis | redis.RedisCluster"
AsyncRedisClient: TypeAlias = "redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster"

BACKEND_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, SlotNotCoveredError)
"""What a Redis call raises when the server or the cluster cannot serve it (the API answers 503)."""


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.2, base=0.05), 1)  # one retry: a stale pooled connection reconnects


def split_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis://h1:7000,h2:7001/0`` -> (``redis://h1:7000/0``, [("h2", 7001)]): the URL of the first node and
    the other seeds."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    seeds = []
    for other in others:
        host, _, port = other.strip().rpartition(":")
        seeds.append((host or other.strip(), int(port) if host else 6379))
    netloc = f"{credentials}@{first}" if credentials else first
    return urlunsplit(parts._replace(netloc=netloc)), seeds


class LazyCluster:
    """A :class:`redis.RedisCluster` built on first use; until the cluster answers, every call raises
    :class:`redis.ConnectionError` (and the next call tries again)."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._url, self._kwargs = url, kwargs
        self._client: redis.RedisCluster | None = None
        self._lock = threading.Lock()

    def real(self) -> redis.RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    first, seeds = split_nodes(self._url)
                    nodes = [redis.cluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
                             for host, port in seeds]
                    try:
                        self._client = redis.RedisCluster.from_url(first, startup_nodes=nodes, **self._kwargs)
                    except RedisClusterException as err:
                        raise redis.ConnectionError(f"the Redis Cluster cannot be reached: {err}") from err
        return self._client

    def get_encoder(self) -> Encoder:
        """The scripts' SHA is computed at registration, before anything connects."""
        if self._client is not None:
            encoder: Encoder = self._client.get_encoder()  # type: ignore[no-untyped-call]
            return encoder
        return Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]  # the client's defaults

    def register_script(self, script: str) -> Script:
        return Script(cast(redis.RedisCluster, self), script)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


def redis_client(url: str, timeout_s: float, *, cluster: bool = False) -> RedisClient:
    """A synchronous client of one server or of a cluster; nothing connects before the first command."""
    options: dict[str, Any] = dict(socket_connect_timeout=timeout_s, socket_timeout=timeout_s, protocol=2)
    if cluster:
        return cast(redis.RedisCluster, LazyCluster(url, retry=_retry(), **options))
    return redis.Redis.from_url(url, retry=_retry(), health_check_interval=30, **options)


def async_redis_client(url: str, connect_timeout_s: float, read_timeout_s: float, *,
                       cluster: bool = False) -> AsyncRedisClient:
    """An asyncio client (the API's blocking waits); the cluster variant also connects on first use."""
    options: dict[str, Any] = dict(socket_connect_timeout=connect_timeout_s, socket_timeout=read_timeout_s,
                                   protocol=2)
    if not cluster:
        return redis.asyncio.Redis.from_url(url, **options)
    first, seeds = split_nodes(url)
    nodes = [redis.asyncio.cluster.ClusterNode(host, port) for host, port in seeds]
    return redis.asyncio.cluster.RedisCluster.from_url(first, startup_nodes=nodes or None, **options)
