"""Where the WAL stood when each table last changed: what a replica must have replayed to
serve a read of it (SPEC, Scaling out: read-your-writes across replicas and instances).

A write marks its tables *pending* before it commits and, once committed, publishes its
WAL position and clears the mark. A read of a pending table goes to the primary and is not
cached: a write that committed but could not publish (its instance cut off from Redis, or
the primary gone before it said where its WAL ended) keeps its tables pending until the
mark expires, so no reader is ever routed by a position older than a committed write.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Protocol

from service.cache.backend import CacheUnavailable
from service.cache.redis_backend import RedisBackend
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

    async def released(self, tables: frozenset[str]) -> None:
        """The write was rolled back after `committing`: its mark goes (best effort)."""
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

    async def released(self, tables: frozenset[str]) -> None:
        for table in tables:
            self._pending[table] = max(0, self._pending.get(table, 0) - 1)

    async def committed(self, tables: frozenset[str], position: int) -> None:
        await self.released(tables)
        for table in tables:
            if position >= PRIMARY_ONLY:
                self._held_until[table] = time.monotonic() + self._pending_seconds
            else:
                self._positions[table] = max(self._positions.get(table, 0), position)


# KEYS: each table's pending key; ARGV[1]: seconds the mark lasts. One atomic command (a
# MULTI pipeline that times out would try to DISCARD on the dead connection).
_MARK = """
for i = 1, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return 1
"""

# KEYS: each table's position key then its pending key; ARGV[1]: the position, or -1 to
# take the mark off without publishing (a write rolled back). Raises each position to at
# least ARGV[1], then takes one mark off pending (not below 0).
_PUBLISH = """
local half = #KEYS / 2
local position = tonumber(ARGV[1])
for i = 1, half do
  if position >= 0 then
    local known = tonumber(redis.call('GET', KEYS[i]) or '-1')
    if position > known then redis.call('SET', KEYS[i], position) end
  end
  local left = redis.call('DECR', KEYS[half + i])
  if left <= 0 then redis.call('DEL', KEYS[half + i]) end
end
return 1
"""


class RedisPositions:
    """Every instance's writes, in the Redis the cache shares: any instance can route."""

    def __init__(self, backend: RedisBackend, *, prefix: str, pending_seconds: float) -> None:
        self._backend = backend
        self._prefix = prefix
        self._pending_ttl = max(1, math.ceil(pending_seconds))
        self._mark = backend.script(_MARK)
        self._publish = backend.script(_PUBLISH)

    def _keys(self, tables: tuple[str, ...] | frozenset[str]) -> tuple[list[str], list[str]]:
        ordered = sorted(tables)
        positions = [f"{self._prefix}:wal:{t}" for t in ordered]
        pending = [f"{self._prefix}:pending:{t}" for t in ordered]
        return positions, pending

    async def freshness(self, tables: tuple[str, ...]) -> Freshness:
        positions, pending = self._keys(tables)
        try:
            values = await self._backend.call(lambda client: client.mget([*positions, *pending]))
        except CacheUnavailable:
            return UNKNOWN  # the primary serves it, uncached
        half = len(positions)
        required = max((int(v) for v in values[:half] if v is not None), default=0)
        return Freshness(required, any(int(v) > 0 for v in values[half:] if v is not None))

    async def committing(self, tables: frozenset[str]) -> None:
        _, pending = self._keys(tables)
        # CacheUnavailable: the write must not go on.
        await self._backend.call(lambda _client: self._mark(keys=pending, args=[self._pending_ttl]))

    async def committed(self, tables: frozenset[str], position: int) -> None:
        if position >= PRIMARY_ONLY:
            return  # the marks stay until they expire: reads of these tables use the primary
        await self._take_off(tables, position)

    async def released(self, tables: frozenset[str]) -> None:
        await self._take_off(tables, -1)

    async def _take_off(self, tables: frozenset[str], position: int) -> None:
        positions, pending = self._keys(tables)
        with contextlib.suppress(CacheUnavailable):
            # Lost, the marks stay until they expire: reads of these tables use the primary.
            await self._backend.call(
                lambda _client: self._publish(keys=[*positions, *pending], args=[position])
            )
