"""Streaming replicas: how far each has replayed, learned off the request path, and which
one may serve a read that must see the WAL up to a given position."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from prometheus_client import Counter
from sqlalchemy import TextClause, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import database_name, make_engine
from service.metrics import DB_READS, REPLICA_LAG_BYTES, REPLICA_UP
from service.settings import Settings

logger = logging.getLogger("service.replicas")

# A read that only the primary may serve: a write to its tables is committing, or where the
# WAL stood when it committed is unknown. Past any real WAL position (2^62 bytes).
PRIMARY_ONLY = 1 << 62

# Where a replica has replayed to (a server that is not in recovery is as current as itself),
# and how long ago the last transaction it replayed committed.
REPLAYED = text(
    "SELECT pg_wal_lsn_diff(COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn()), '0/0')"
    "::bigint, COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)"
    "::float8"
)
# Where the primary's WAL ends: after a COMMIT returned, at or past its commit record.
WRITTEN = text("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint")


@dataclass(slots=True, eq=False)
class Replica:
    """One replica's engine and what the last poll learned of it."""

    name: str
    engine: AsyncEngine
    poll_engine: AsyncEngine  # one connection of its own: polls never queue behind reads
    connections: int = 0  # the pool's size plus overflow
    up: bool = False  # answered the last poll (a replica starts skipped until it does)
    replayed: int = -1  # WAL bytes replayed at the last poll
    lag_bytes: int = 0  # behind the primary's WAL end at the last poll of both
    # While behind: how long ago the last transaction it replayed committed (else 0).
    lag_seconds: float = 0.0
    replayed_commit_age: float = 0.0
    in_flight: int = 0  # reads it is serving now
    failure: str | None = None  # why the last poll failed
    reads: Counter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reads = DB_READS.labels(self.name)

    def serves(self, required: int, max_lag_bytes: int, max_lag_seconds: float) -> bool:
        return (
            self.up
            and self.replayed >= required
            and self.lag_bytes <= max_lag_bytes
            and self.lag_seconds <= max_lag_seconds
        )

    def down(self, reason: str) -> None:
        if self.up:
            logger.warning("replica %s is skipped: %s", self.name, reason)
        self.up = False
        self.failure = reason
        REPLICA_UP.labels(self.name).set(0)


class Replicas:
    """The replicas of one primary, and the background poll that keeps their positions."""

    def __init__(
        self,
        primary: AsyncEngine,
        replicas: list[Replica],
        *,
        poll_seconds: float,
        timeout_seconds: float,
        max_lag_bytes: int,
        max_lag_seconds: float,
    ) -> None:
        self.primary = primary
        self.max_lag_seconds = max_lag_seconds
        self.replicas = replicas
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.max_lag_bytes = max_lag_bytes
        self.primary_written = 0  # where the primary's WAL ended at its last answer
        self._task: asyncio.Task[None] | None = None

    def choose(self, required: int) -> Replica | None:
        """The least busy replica that has replayed `required`; None: the primary's turn."""
        best: Replica | None = None
        for replica in self.replicas:
            if replica.serves(required, self.max_lag_bytes, self.max_lag_seconds) and (
                best is None or replica.in_flight < best.in_flight
            ):
                best = replica
        return best

    def start(self) -> None:
        if self._task is None and self.replicas:
            self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        """The poll ends, and every engine of the replicas and of the poll is closed."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for engine in (self.primary, *(r.engine for r in self.replicas)):
            await engine.dispose()
        for replica in self.replicas:
            await replica.poll_engine.dispose()

    async def poll(self) -> None:
        """Every database's WAL position at once; a database that does not answer in time
        is down until it does."""
        await asyncio.gather(self._poll_primary(), *(self._poll(r) for r in self.replicas))
        for replica in self.replicas:
            if replica.up:
                replica.lag_bytes = max(0, self.primary_written - replica.replayed)
                # Behind: the oldest commit it lacks is younger than the last it replayed.
                replica.lag_seconds = replica.replayed_commit_age if replica.lag_bytes else 0.0
                REPLICA_LAG_BYTES.labels(replica.name).set(replica.lag_bytes)

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # the poll must outlive anything one round does
                logger.exception("the replica poll failed")
            await asyncio.sleep(self.poll_seconds)

    async def _poll_primary(self) -> None:
        # A primary that does not answer takes no writes: its last position still holds.
        with contextlib.suppress(Exception):
            self.primary_written = await self._position(self.primary, WRITTEN)

    async def _poll(self, replica: Replica) -> None:
        try:
            async with (
                asyncio.timeout(self.timeout_seconds),
                replica.poll_engine.connect() as connection,
            ):
                row = (await connection.execute(REPLAYED)).one()
        except Exception as exc:  # whatever the driver raises for a database that is gone
            replica.down(type(exc).__name__)
            return
        replayed, replica.replayed_commit_age = int(row[0] or 0), float(row[1] or 0.0)
        if not replica.up:
            # Back (or new): connections its pool kept from before an outage are dead.
            await replica.engine.dispose()
            logger.info("replica %s serves reads (replayed to %d)", replica.name, replayed)
            REPLICA_UP.labels(replica.name).set(1)
        replica.up, replica.failure = True, None
        replica.replayed = replayed

    async def _position(self, engine: AsyncEngine, statement: TextClause) -> int:
        async with asyncio.timeout(self.timeout_seconds), engine.connect() as connection:
            value = await connection.scalar(statement)
        return int(value or 0)


class ReplicaSettingError(ValueError):
    """DATABASE_REPLICA_URLS cannot be served as given; the message says why."""


def check_replica_settings(settings: Settings) -> None:
    """Replicas are PostgreSQL streaming replicas of a PostgreSQL primary."""
    urls = settings.database_replica_urls
    if not urls:
        return
    if make_url(settings.database_url).get_backend_name() != "postgresql":
        raise ReplicaSettingError("DATABASE_REPLICA_URLS needs a PostgreSQL DATABASE_URL")
    for url in urls:
        if make_url(url).get_backend_name() != "postgresql":
            raise ReplicaSettingError(f"{database_name(url)} is not a PostgreSQL URL")
    if settings.replica_max_lag_seconds > settings.write_window_seconds:
        # A write whose WAL position was lost is read on the primary for this window; past
        # it, only a replica no older than this may serve what it changed.
        raise ReplicaSettingError(
            f"REPLICA_MAX_LAG_SECONDS ({settings.replica_max_lag_seconds:g}) must not exceed "
            f"REQUEST_TIMEOUT_SECONDS plus the statement timeout "
            f"({settings.write_window_seconds:g})"
        )


def make_replicas(settings: Settings) -> Replicas | None:
    """The replicas DATABASE_REPLICA_URLS names, each with a pool sized like the primary's."""
    check_replica_settings(settings)
    if not settings.database_replica_urls:
        return None
    replicas = [
        Replica(
            database_name(url),
            make_engine(settings, replica=url),
            make_engine(settings, replica=url, poll=True),
            connections=(settings.replica_pool_size or settings.pool_size)
            + (settings.replica_max_overflow or settings.max_overflow),
        )
        for url in settings.database_replica_urls
    ]
    return Replicas(
        make_engine(settings, poll=True),
        replicas,
        poll_seconds=settings.replica_poll_seconds,
        timeout_seconds=settings.replica_timeout_seconds,
        max_lag_bytes=settings.replica_max_lag_bytes,
        max_lag_seconds=settings.replica_max_lag_seconds,
    )
