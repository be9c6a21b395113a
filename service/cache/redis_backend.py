"""Redis backend: entries and table versions shared by every instance, behind a circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from service.cache.backend import CacheUnavailable, Entry, Versions
from service.cache.circuit import Circuit
from service.cache.coalesce import CoalescingReader

T = TypeVar("T")


class RedisBackend:
    """Versions live in Redis, so a write through any instance is seen by every instance.

    A lookup is one MGET (epoch, the tables' versions, the entry); lookups made in the same
    event-loop turn share it (service/cache/coalesce.py). `failure_threshold`
    failures in a row open the circuit (one slow answer under load does not), and a lost
    version bump opens it at once; while it is open nothing is read from or written to
    Redis, and a background task retries every `retry_seconds`. Its first success bumps the
    epoch, so nothing cached before or during the outage is served again by any instance,
    then closes the circuit. Requests never wait on that task.
    """

    name = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        timeout: float,
        retry_seconds: float,
        ttl_seconds: float,
        failure_threshold: int = 3,
    ) -> None:
        # A blocking pool: a burst past max_connections waits (within the timeout) for a
        # free connection instead of failing at once.
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=64,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._client = redis.Redis.from_pool(pool)  # the client owns the pool and closes it
        self._prefix = prefix
        self._timeout = timeout
        self._ttl = max(1, int(ttl_seconds))
        self._threshold = failure_threshold
        self._failures = 0
        self._missed_bump = False
        self._recovery: asyncio.Task[None] | None = None
        self.circuit = Circuit(retry_seconds=retry_seconds, name="redis")
        self._epoch_key = f"{prefix}:epoch"
        self._reader = CoalescingReader(self._mget)

    @property
    def reachable(self) -> bool:
        return self.circuit.closed

    async def call(self, operation: Callable[[redis.Redis], Awaitable[T]]) -> T:
        """`operation` on the client, for what else lives beside the cache (positions): timed
        out, counted towards the circuit like the cache's own calls; CacheUnavailable while
        the circuit is open or when it fails."""
        self._ready()
        return await self._call(lambda: operation(self._client))

    def script(self, source: str) -> AsyncScript:
        return self._client.register_script(source)

    def _version_key(self, table: str) -> str:
        return f"{self._prefix}:v:{table}"

    def _entry_key(self, key: str) -> str:
        return f"{self._prefix}:e:" + hashlib.blake2b(key.encode(), digest_size=20).hexdigest()

    async def lookup(self, key: str, tables: tuple[str, ...]) -> tuple[Versions, Entry | None]:
        self._ready()
        keys = [self._epoch_key, *(self._version_key(t) for t in tables), self._entry_key(key)]
        values = await self._reader.mget(keys)
        if values[0] is None:
            # A new or emptied Redis: start the epoch from the clock, so counters that
            # climb back from zero can never again match an entry stored before.
            epoch = int(time.time() * 1000)
            await self._call(lambda: self._client.set(self._epoch_key, epoch, nx=True))
            values = await self._call(lambda: self._client.mget(keys))
        versions = tuple(int(value or 0) for value in values[:-1])
        return versions, _decode(values[-1])

    async def _mget(self, keys: list[str]) -> list[bytes | str | None]:
        return await self._call(lambda: self._client.mget(keys))

    async def store(self, key: str, entry: Entry) -> None:
        self._ready()
        value = _encode(entry)
        await self._call(lambda: self._client.set(self._entry_key(key), value, ex=self._ttl))

    async def bump(self, tables: frozenset[str]) -> None:
        """One pipelined INCR per table; a lost bump is made good by an epoch bump later."""
        try:
            self._ready()

            async def increment() -> object:
                async with self._client.pipeline(transaction=False) as pipe:
                    for table in sorted(tables):
                        pipe.incr(self._version_key(table))
                    return await pipe.execute()

            await self._call(increment)
        except CacheUnavailable as exc:
            # Entries computed before this write could match again: stop using Redis until
            # the epoch bump that recovery makes first.
            self._missed_bump = True
            self.circuit.trip(exc)
            self._start_recovery()
            raise

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        await self._reader.close()
        await self._client.aclose()

    def _ready(self) -> None:
        """Raise CacheUnavailable while the circuit is open (and make sure recovery runs)."""
        if self.circuit.closed:
            return
        self._start_recovery()
        raise CacheUnavailable("the redis circuit is open")

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._timeout * 2):
                result = await operation()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failures += 1
            if self._failures >= self._threshold:
                self.circuit.trip(exc)
                self._start_recovery()
            raise CacheUnavailable(str(exc)) from exc
        self._failures = 0
        return result

    def _start_recovery(self) -> None:
        if self.circuit.closed and not self._missed_bump:
            return
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Until Redis answers: wait, bump the epoch, close the circuit.

        The epoch is bumped on every recovery, not only after a lost write: a Redis that
        restarted from an old snapshot brings back old counters beside old entries."""
        while not self.circuit.closed or self._missed_bump:
            await asyncio.sleep(self.circuit.retry_seconds)
            self._missed_bump = False  # a bump lost from now on needs another round
            try:
                async with asyncio.timeout(self._timeout * 2):
                    await self._client.incr(self._epoch_key)
            except (RedisError, OSError, TimeoutError):
                self._missed_bump = True
                continue
            if self._missed_bump:
                continue  # a write lost its bump during our INCR: go round once more
            self._failures = 0
            self.circuit.close()


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
