"""Redis backend: entries and table versions shared by every instance, behind a circuit breaker."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.cache.backend import CacheUnavailable, Entry, Versions
from service.cache.circuit import Circuit

T = TypeVar("T")


class RedisBackend:
    """Versions live in Redis, so a write through any instance is seen by every instance.

    A lookup is one MGET (epoch, the tables' versions, the entry). While the circuit is
    open nothing is read from or written to Redis; closing it first bumps the epoch, so
    nothing cached before or during an outage is served again.
    """

    name = "redis"

    def __init__(
        self, url: str, *, prefix: str, timeout: float, retry_seconds: float, ttl_seconds: float
    ) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=64,
        )
        self._prefix = prefix
        self._timeout = timeout
        self._ttl = max(1, int(ttl_seconds))
        self.circuit = Circuit(retry_seconds=retry_seconds, name="redis")
        self._epoch_key = f"{prefix}:epoch"

    def _version_key(self, table: str) -> str:
        return f"{self._prefix}:v:{table}"

    def _entry_key(self, key: str) -> str:
        return f"{self._prefix}:e:" + hashlib.blake2b(key.encode(), digest_size=20).hexdigest()

    async def lookup(self, key: str, tables: tuple[str, ...]) -> tuple[Versions, Entry | None]:
        await self._ready()
        keys = [self._epoch_key, *(self._version_key(t) for t in tables), self._entry_key(key)]
        values = await self._call(lambda: self._client.mget(keys))
        versions = tuple(int(value or 0) for value in values[:-1])
        return versions, _decode(values[-1])

    async def store(self, key: str, entry: Entry) -> None:
        await self._ready()
        value = _encode(entry)
        await self._call(lambda: self._client.set(self._entry_key(key), value, ex=self._ttl))

    async def bump(self, tables: frozenset[str]) -> None:
        """One pipelined INCR per table; if it fails, the epoch bump on recovery covers it."""
        await self._ready()

        async def increment() -> object:
            async with self._client.pipeline(transaction=False) as pipe:
                for table in sorted(tables):
                    pipe.incr(self._version_key(table))
                return await pipe.execute()

        await self._call(increment)

    async def close(self) -> None:
        await self._client.aclose()

    async def _ready(self) -> None:
        """Raise CacheUnavailable while open; the first caller after the cool-down probes."""
        if self.circuit.closed:
            return
        if not self.circuit.may_probe():
            raise CacheUnavailable("the redis circuit is open")
        await self._call(lambda: self._client.incr(self._epoch_key))
        self.circuit.close()

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._timeout * 2):
                return await operation()
        except (RedisError, OSError, TimeoutError) as exc:
            self.circuit.trip(exc)
            raise CacheUnavailable(str(exc)) from exc


def _encode(entry: Entry) -> bytes:
    header = ",".join(str(v) for v in entry.versions).encode()
    return header + b"\n" + entry.etag.encode() + b"\n" + entry.body


def _decode(value: bytes | str | None) -> Entry | None:
    if value is None:
        return None
    if isinstance(value, str):  # only with decode_responses=True, which this client never sets
        value = value.encode()
    header, etag, body = value.split(b"\n", 2)
    versions = tuple(int(v) for v in header.split(b",")) if header else ()
    return Entry(body=body, etag=etag.decode(), versions=versions)
