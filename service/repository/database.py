"""The engine, one session per request, and driver failures translated to domain errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from service.db import WRITE
from service.errors import Conflict, InvalidParameter, ServiceError, Unavailable
from service.metrics import DB_READS
from service.repository.replicas import PRIMARY_ONLY, WRITTEN, Replica, Replicas
from service.timing import current_stats

logger = logging.getLogger("service.database")
T = TypeVar("T")

# What a statement can raise: SQLAlchemy's wrapped driver errors, the network, and the
# OverflowError that sqlite3 raises bare (unwrapped) for an integer it cannot bind.
DRIVER_ERRORS = (sa_exc.SQLAlchemyError, OSError, TimeoutError, OverflowError)


class Database:
    """The engine, its sessions, and the translation of driver failures."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        autocommit_reads: bool = False,
        connections: int = 0,
        wait_seconds: float = 5.0,
        replicas: Replicas | None = None,
    ) -> None:
        self.engine = engine
        self.replicas = replicas
        self._turns = Turns(connections, wait_seconds)
        self.sessionmaker = sessionmaker
        self.dialect = engine.dialect.name
        self.read_sessionmaker = sessionmaker
        # Reads need no ORM session: a connection of the same pool, in autocommit where
        # that saves the BEGIN/ROLLBACK round trips.
        self.read_engine = engine
        if autocommit_reads:
            self.read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            self.read_sessionmaker = async_sessionmaker(
                self.read_engine, expire_on_commit=False, autoflush=False
            )
        self._primary_reads = DB_READS.labels("primary")
        self._replica_engines = {
            replica: replica.engine.execution_options(isolation_level="AUTOCOMMIT")
            if autocommit_reads
            else replica.engine
            for replica in (replicas.replicas if replicas else ())
        }
        # Each replica's pool is handed out in arrival order too (see Turns).
        self._replica_turns = {
            replica: Turns(replica.connections, wait_seconds)
            for replica in (replicas.replicas if replicas else ())
        }

    async def written_position(self) -> int:
        """Where the primary's WAL ends, asked once a write has committed (on a connection of
        its own, so nothing here can touch the write's outcome): a replica that has replayed
        this far holds the write. PRIMARY_ONLY when it cannot be learned (the write
        happened; reads of what it changed then go to the primary for a while)."""
        if self.replicas is None:
            return 0
        try:
            async with asyncio.timeout(self.replicas.timeout_seconds):
                async with self.read_engine.connect() as connection:
                    return int(await connection.scalar(WRITTEN) or 0)
        except Exception:  # whatever failed, the write has happened: it must be answered
            logger.warning("the WAL position of a committed write could not be read")
            return PRIMARY_ONLY

    @asynccontextmanager
    async def session(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        """One session per request; any driver failure leaves as a ServiceError."""
        sessions = self.read_sessionmaker if read_only else self.sessionmaker
        try:
            async with self._turn(), sessions() as session:
                yield session
        except ServiceError:
            raise
        except DRIVER_ERRORS as exc:
            error = translate_error(exc)
            _log_failure(exc, error)
            raise error from exc

    def _turn(self) -> AbstractAsyncContextManager[None]:
        return self._turns.take()

    async def read(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, required: int = PRIMARY_ONLY
    ) -> T:
        """`work` on a replica that has replayed the WAL to `required`, else on the primary;
        run once more if the connection turned out dead (the database restarted since the
        pool last used it, or a replica went away): a read has nothing to undo."""
        replica = self.replicas.choose(required) if self.replicas is not None else None
        if replica is not None:
            try:
                return await self._read_on(replica, work)
            except _ReplicaFailed:
                pass  # the primary serves it
        if self.replicas is not None:
            self._primary_reads.inc()
        for attempt in (1, 2):
            try:
                async with self._turn(), self.read_engine.connect() as connection:
                    return await work(connection)
            except ServiceError:
                raise
            except DRIVER_ERRORS as exc:
                dropped = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
                if dropped and attempt == 1:
                    logger.info("a pooled connection was gone; the read runs again")
                    continue
                error = translate_error(exc)
                _log_failure(exc, error)
                raise error from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _read_on(
        self, replica: Replica, work: Callable[[AsyncConnection], Awaitable[T]]
    ) -> T:
        """`work` on `replica`; a replica that fails (gone, too slow to hand out a connection,
        or cancelling the statement for a conflict with recovery) hands the read back."""
        replica.in_flight += 1
        try:
            async with (
                self._replica_turns[replica].take(),
                self._replica_engines[replica].connect() as connection,
            ):
                result = await work(connection)
        except Unavailable as exc:  # its pool stayed busy: the primary may have room
            raise _ReplicaFailed from exc
        except ServiceError:
            raise
        except DRIVER_ERRORS as exc:
            if _is_data_error(exc):
                raise translate_error(exc) from exc  # the client's value, wherever it runs
            gone = isinstance(exc, OSError | TimeoutError) or (
                isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
            )
            if gone:
                replica.down(type(exc).__name__)  # until its next poll answers
            logger.info("replica %s failed a read (%s); the primary serves it", replica.name,
                        type(exc).__name__)  # fmt: skip
            raise _ReplicaFailed from exc
        finally:
            replica.in_flight -= 1
        replica.reads.inc()
        return result


class Turns:
    """Places among the requests holding a connection of one pool, granted first come,
    first served.

    The pool's own queue lets a request that just arrived take a connection ahead of one
    already waiting (which then queues again at the back): at 32 requests on 10
    connections, p99 was 9.5x p50 (and 6.6-10.6x on a replica's pool before it had its
    own). Waiting here in order keeps the pool from having to make anyone wait. Past
    `wait_seconds` the request gets a 503, as from the pool.
    """

    def __init__(self, connections: int, wait_seconds: float) -> None:
        self._connections = connections
        self._wait_seconds = wait_seconds
        self._turns: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    @asynccontextmanager
    async def take(self) -> AsyncIterator[None]:
        if self._connections <= 0:
            yield
            return
        loop = asyncio.get_running_loop()
        if self._turns is None or self._turns[0] is not loop:
            self._turns = (loop, asyncio.Semaphore(self._connections))
        turns = self._turns[1]
        try:
            async with asyncio.timeout(self._wait_seconds):
                await turns.acquire()
        except TimeoutError:
            raise Unavailable("no database connection became free in time", retry_after=1) from None
        try:
            yield
        finally:
            turns.release()


class _ReplicaFailed(Exception):
    """A replica could not serve a read that the primary can."""


@asynccontextmanager
async def write_transaction(session: AsyncSession) -> AsyncIterator[None]:
    """A transaction that will write: on SQLite it takes the write lock as it begins."""
    async with session.begin():
        await session.connection(execution_options={WRITE: True})
        yield
        stats = current_stats.get()
        if stats is not None:
            stats.committing = True  # the deadline now waits for the outcome (middleware)


def _log_failure(exc: BaseException, error: ServiceError) -> None:
    """Say what failed without saying what was in it: class names and SQLSTATE, no text
    (drivers quote values, which may be private data)."""
    cause = getattr(exc, "orig", None)
    logger.warning(
        "database failure answered as %d",
        error.status,
        extra={
            "error": type(exc).__name__,
            "driver_error": type(cause).__name__ if cause is not None else None,
            "sqlstate": getattr(cause, "sqlstate", None),
        },
    )


def translate_error(exc: BaseException) -> ServiceError:
    """Map what the driver or the pool raised to what the client is told."""
    if isinstance(exc, sa_exc.TimeoutError):
        return Unavailable("no database connection became free in time", retry_after=1)
    if isinstance(exc, sa_exc.IntegrityError):
        return Conflict("the write clashed with the stored data; nothing was changed")
    if _is_data_error(exc):
        return InvalidParameter("query", "a value is out of range for the database")
    return Unavailable("the database is not available right now", retry_after=1)


def _is_data_error(exc: BaseException) -> bool:
    """A value the database refused: the client's doing, never an outage.

    asyncpg's refusals reach us as a plain DBAPIError, not a DataError: SQLAlchemy's
    adaptor maps every PostgresError it has no class for to its base Error. Their SQLSTATE
    says what they are: class 22, data exception (22021 for a NUL in text, from the
    server; 22000 for asyncpg's own DataError, e.g. a zoned datetime for a `timestamp`
    column or an integer past int4, refused before anything is sent)."""
    if isinstance(exc, sa_exc.DataError | OverflowError):
        return True
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")
