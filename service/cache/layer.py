"""The cache in front of the read pipeline: versioned hits, single-flight misses, bypasses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from service.cache.backend import (
    CacheBackend,
    CacheUnavailable,
    Entry,
    NullBackend,
    Versions,
    etag_of,
)
from service.cache.memory import MemoryBackend
from service.cache.positions import (
    UNKNOWN,
    Freshness,
    LocalPositions,
    Positions,
    RedisPositions,
)
from service.cache.redis_backend import RedisBackend
from service.errors import Unavailable
from service.metrics import cache_outcome
from service.settings import Settings

logger = logging.getLogger("service.cache")


class Outcome(Enum):
    HIT = "HIT"
    MISS = "MISS"
    BYPASS = "BYPASS"


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a setattr call per field
class Served:
    body: bytes
    etag: str
    outcome: Outcome


class Produce(Protocol):
    """Makes a body from the database: on a replica that has replayed `required`, or on
    the primary."""

    def __call__(self, *, required: int) -> Awaitable[bytes]: ...


Lookup = tuple[Versions, Entry | None]
ANYWHERE = Freshness(0, pending=False)  # no replicas: every read is the primary's


class ResponseCache:
    """Serves a body from the backend when its table versions still match, else produces it."""

    def __init__(
        self, backend: CacheBackend, *, wait_seconds: float, positions: Positions | None = None
    ) -> None:
        self.backend = backend
        self.positions = positions  # with replicas: what a read must see, per table
        self.wait_seconds = wait_seconds
        self._flights: dict[tuple[str, Versions], asyncio.Task[Entry]] = {}
        self._hits = cache_outcome(Outcome.HIT.value)  # the hot one, looked up once

    async def fetch(
        self,
        key: str,
        tables: tuple[str, ...],
        produce: Produce,
        *,
        refresh: bool = False,
        looked_up: Lookup | None = None,
    ) -> Served:
        """The response body for `key`; `refresh` skips the stored entry and replaces it.

        `looked_up` is this request's own earlier lookup of `key` (the fast path's miss).
        """
        try:
            versions, entry = looked_up or await self.backend.lookup(key, tables)
        except CacheUnavailable:
            if self.positions is None or not self.backend.shared:
                return await self.bypass(produce, tables)  # caching off; positions in process
            # Redis is out of reach: what the tables need is unknown, so the primary serves.
            return await self._produce_bypassing(produce, UNKNOWN)
        if not refresh and entry is not None and entry.versions == versions:
            return self._count(Served(entry.body, entry.etag, Outcome.HIT))
        # Asked after the versions: a replica that has replayed this far holds at least
        # what they say. A table with a write in flight is read on the primary, uncached.
        freshness = await self._freshness(tables)
        if refresh or freshness.pending:
            fresh = Entry.of(await produce(required=freshness.route), versions)
            if not freshness.pending:
                await self._store(key, fresh)
            return self._count(Served(fresh.body, fresh.etag, Outcome.BYPASS))
        made = await self._single_flight(key, versions, produce, freshness.route)
        return self._count(Served(made.body, made.etag, Outcome.MISS))

    async def hit(self, key: str, tables: tuple[str, ...]) -> tuple[Served | None, Lookup]:
        """A current entry, or None and the lookup (for `fetch`); CacheUnavailable passes up."""
        lookup = await self.backend.lookup(key, tables)
        versions, entry = lookup
        if entry is not None and entry.versions == versions:
            self._hits.inc()
            return Served(entry.body, entry.etag, Outcome.HIT), lookup
        return None, lookup

    def check_writable(self) -> None:
        """Before a write begins: refused while the shared backend is out of reach."""
        if self.backend.shared and not self.backend.reachable:
            raise _unreachable()

    async def tables_changing(self, tables: frozenset[str]) -> None:
        """Last thing before a write commits: the shared backend hears of it first, or the
        write is rolled back. Entries stored between this bump and the commit (by a reader
        that still saw the old rows) are outdated again by the bump after the commit."""
        if self.positions is not None:
            try:
                await self.positions.committing(tables)  # before the versions move
            except CacheUnavailable:
                raise _unreachable() from None
        try:
            if self.backend.shared:  # one process: the bump after the commit is all it needs
                await self.backend.bump(tables)
        except CacheUnavailable:
            if self.positions is not None:
                await self.positions.released(tables)  # the write is rolled back
            raise _unreachable() from None

    async def tables_changed(self, tables: frozenset[str], position: int = 0) -> None:
        """Called after a write commits, before its response is sent, with the primary's WAL
        position after it."""
        if self.positions is not None:
            await self.positions.committed(tables, position)  # before the versions move
        # If the circuit is open, closing it bumps the epoch, which covers this write.
        with contextlib.suppress(CacheUnavailable):
            await self.backend.bump(tables)

    async def close(self) -> None:
        await self.backend.close()

    async def bypass(self, produce: Produce, tables: tuple[str, ...]) -> Served:
        """Straight to the database: the cache is off for this request."""
        return await self._produce_bypassing(produce, await self._freshness(tables))

    async def _produce_bypassing(self, produce: Produce, freshness: Freshness) -> Served:
        body = await produce(required=freshness.route)
        return self._count(Served(body, etag_of(body), Outcome.BYPASS))

    async def _freshness(self, tables: tuple[str, ...]) -> Freshness:
        return ANYWHERE if self.positions is None else await self.positions.freshness(tables)

    async def _single_flight(
        self, key: str, versions: Versions, produce: Produce, required: int
    ) -> Entry:
        """Concurrent identical misses share one task; it outlives a waiter that goes away."""
        flight = (key, versions)
        task = self._flights.get(flight)
        if task is not None:
            try:
                async with asyncio.timeout(self.wait_seconds):
                    return await asyncio.shield(task)
            except TimeoutError:
                return Entry.of(await produce(required=required), versions)
        task = asyncio.ensure_future(self._produce_and_store(key, versions, produce, required))
        self._flights[flight] = task
        task.add_done_callback(lambda done: self._landed(flight, done))
        return await asyncio.shield(task)

    async def _produce_and_store(
        self, key: str, versions: Versions, produce: Produce, required: int
    ) -> Entry:
        made = Entry.of(await produce(required=required), versions)
        await self._store(key, made)
        return made

    def _landed(self, flight: tuple[str, Versions], task: asyncio.Task[Entry]) -> None:
        self._flights.pop(flight, None)
        if not task.cancelled():
            task.exception()  # errors reach the waiters and are never cached

    async def _store(self, key: str, entry: Entry) -> None:
        with contextlib.suppress(CacheUnavailable):
            await self.backend.store(key, entry)

    def _count(self, served: Served) -> Served:
        cache_outcome(served.outcome.value).inc()
        return served


def _unreachable() -> Unavailable:
    return Unavailable(
        "the shared cache cannot be reached, so the other instances could not learn of this "
        "write; nothing was written",
        retry_after=1,
    )


def make_backend(settings: Settings) -> CacheBackend:
    """`memory://`, `redis://host:port/db` or `none`, as CACHE_URL says."""
    url = settings.cache_url.strip()
    if url in ("none", ""):
        return NullBackend()
    if url.startswith("memory://"):
        return MemoryBackend(
            max_entries=settings.cache_max_entries,
            max_bytes=settings.cache_max_bytes,
            ttl_seconds=settings.cache_ttl_seconds,
        )
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisBackend(
            url,
            prefix=settings.cache_prefix,
            timeout=settings.cache_timeout_seconds,
            retry_seconds=settings.cache_retry_seconds,
            ttl_seconds=settings.cache_ttl_seconds,
            failure_threshold=settings.cache_failure_threshold,
        )
    raise ValueError(f"CACHE_URL must be memory://, redis://... or none, not {url!r}")


def make_positions(backend: CacheBackend, settings: Settings) -> Positions:
    """Where the tables' writes left the WAL, kept where the cache's versions are: shared
    through Redis, or this process's own."""
    pending_seconds = settings.write_window_seconds
    if isinstance(backend, RedisBackend):
        return RedisPositions(
            backend, prefix=settings.cache_prefix, pending_seconds=pending_seconds
        )
    return LocalPositions(pending_seconds=pending_seconds)
