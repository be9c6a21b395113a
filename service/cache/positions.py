"""Where the WAL stood when each table last changed: what a replica must have replayed to
serve a read of it (SPEC, Scaling out: read-your-writes across replicas and instances).

A write marks its tables *pending* before it commits and, once committed, publishes its
WAL position and clears the mark. A read of a pending table goes to the primary and is not
cached: a write that committed but could not publish (its instance cut off from Redis, or
the primary gone before it said where its WAL ended) keeps its tables pending until the
mark expires, so no reader is ever routed by a position older than a committed write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from service.cache.backend import CacheUnavailable
from service.repository.replicas import PRIMARY_ONLY


@dataclass(frozen=True, slots=True)
class Freshness:
    """What serving a read needs: a WAL position a replica must have replayed, and whether a
    write to its tables is in flight (then only the primary may serve it, uncached)."""

    required: int
    pending: bool

    @property
    def route(self) -> int:
        return PRIMARY_ONLY if self.pending else self.required


UNKNOWN = Freshness(PRIMARY_ONLY, pending=True)


class Positions(Protocol):
    async def freshness(self, tables: tuple[str, ...]) -> Freshness: ...

    async def committing(self, tables: frozenset[str]) -> None:
        """Before COMMIT: the tables are pending (CacheUnavailable: the write must not go on)."""
        ...

    async def committed(self, tables: frozenset[str], position: int) -> None:
        """After COMMIT: the tables need `position` and are no longer pending for this write
        (PRIMARY_ONLY: where the WAL ended is unknown; the mark is left to expire)."""
        ...


class LocalPositions:
    """One process's own writes (CACHE_URL=memory:// or none: nothing is shared)."""

    def __init__(self, *, pending_seconds: float) -> None:
        self._positions: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self._held_until: dict[str, float] = {}  # tables whose write's position is unknown
        self._pending_seconds = pending_seconds

    async def freshness(self, tables: tuple[str, ...]) -> Freshness:
        now = time.monotonic()
        pending = any(
            self._pending.get(t, 0) > 0 or self._held_until.get(t, 0.0) > now for t in tables
        )
        return Freshness(max((self._positions.get(t, 0) for t in tables), default=0), pending)

    async def committing(self, tables: frozenset[str]) -> None:
        for table in tables:
            self._pending[table] = self._pending.get(table, 0) + 1

    async def committed(self, tables: frozenset[str], position: int) -> None:
        for table in tables:
            self._pending[table] = max(0, self._pending.get(table, 0) - 1)
            if position >= PRIMARY_ONLY:
                self._held_until[table] = time.monotonic() + self._pending_seconds
            else:
                self._positions[table] = max(self._positions.get(table, 0), position)


# KEYS: each table's position key then its pending key; ARGV[1]: the position (or -1).
# Raises the position to at least ARGV[1], then takes one mark off pending (not below 0).
_PUBLISH = """
local half = #KEYS / 2
for i = 1, half do
  local position = tonumber(ARGV[1])
  if position >= 0 then
    local known = tonumber(redis.call('GET', KEYS[i]) or '-1')
    if position > known then redis.call('SET', KEYS[i], position) end
    local left = redis.call('DECR', KEYS[half + i])
    if left <= 0 then redis.call('DEL', KEYS[half + i]) end
  end
end
return 1
"""


class RedisPositions:
    """Every instance's writes, in the Redis the cache shares: any instance can route."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        pending_seconds: float,
        reachable: Callable[[], bool],
    ) -> None:
        self._client = client
        self._reachable = reachable  # the cache's circuit: closed while Redis answers
        self._prefix = prefix
        self._pending_ttl = max(1, int(pending_seconds))
        self._publish = client.register_script(_PUBLISH)

    def _keys(self, tables: tuple[str, ...] | frozenset[str]) -> tuple[list[str], list[str]]:
        ordered = sorted(tables)
        positions = [f"{self._prefix}:wal:{t}" for t in ordered]
        pending = [f"{self._prefix}:pending:{t}" for t in ordered]
        return positions, pending

    async def freshness(self, tables: tuple[str, ...]) -> Freshness:
        if not self._reachable():
            return UNKNOWN
        positions, pending = self._keys(tables)
        try:
            values = await self._client.mget([*positions, *pending])
        except (RedisError, OSError, TimeoutError):
            return UNKNOWN  # the primary serves it, uncached
        half = len(positions)
        required = max((int(v) for v in values[:half] if v is not None), default=0)
        return Freshness(required, any(int(v) > 0 for v in values[half:] if v is not None))

    async def committing(self, tables: frozenset[str]) -> None:
        if not self._reachable():
            raise CacheUnavailable("the redis circuit is open")
        _, pending = self._keys(tables)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for key in pending:
                    pipe.incr(key)
                    pipe.expire(key, self._pending_ttl)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def committed(self, tables: frozenset[str], position: int) -> None:
        positions, pending = self._keys(tables)
        published = -1 if position >= PRIMARY_ONLY else position
        try:
            await self._publish(keys=[*positions, *pending], args=[published])
        except (RedisError, OSError, TimeoutError):
            return  # the marks stay until they expire: reads of these tables use the primary
