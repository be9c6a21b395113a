"""The declarative base, the async engine and the statement counter behind Server-Timing."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from service.metrics import (
    POOL_CHECKED_OUT,
    POOL_OVERFLOW,
    POOL_SIZE,
    REPLICA_POOL_CHECKED_OUT,
)
from service.settings import Settings
from service.timing import Ran, current_stats

_IDLE_SINCE = "idle_since"
UNCOUNTED = "uncounted"  # execution option: session plumbing, not a statement the request asked for
WRITE = (
    "write_transaction"  # execution option: this transaction will write (SQLite: BEGIN IMMEDIATE)
)

# The engine's dialect carries its PostgreSQL case-folding collation, read where a
# case-insensitive filter compiles (service/query/options.py): per app, not per process.
FOLD_COLLATION_ATTRIBUTE = "service_fold_collation"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(
    settings: Settings, *, replica: str | None = None, poll: bool = False
) -> AsyncEngine:
    """An async engine with its pool sized by the settings; SQLite tuned for concurrency.
    `replica`: the URL of a streaming replica to connect to instead of the primary's;
    `poll`: one connection for the replica poll alone, uncounted and unwatched."""
    connect_args: dict[str, Any] = {}
    if settings.is_sqlite:
        connect_args["timeout"] = settings.sqlite_busy_timeout_ms / 1000
    elif settings.pgbouncer:
        # PgBouncer in transaction mode hands each transaction any server connection:
        # no statement cache, and prepared statement names unique per process and call.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    elif settings.statement_timeout_ms > 0:
        # A direct connection is ours alone: set the timeout once, when it opens. (Behind
        # PgBouncer it is SET LOCAL in every transaction instead, below.)
        connect_args["server_settings"] = {"statement_timeout": str(settings.statement_timeout_ms)}
    pool_size = _or(settings.replica_pool_size, settings.pool_size, replica)
    max_overflow = _or(settings.replica_max_overflow, settings.max_overflow, replica)
    if poll:
        pool_size, max_overflow = 1, 0
    engine = create_async_engine(
        replica or settings.database_url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        pool_pre_ping=settings.pool_pre_ping and settings.pool_ping_idle_seconds == 0,
        connect_args=connect_args,
        hide_parameters=True,  # values never reach exception text, hence never the logs
    )
    setattr(engine.dialect, FOLD_COLLATION_ATTRIBUTE, settings.postgres_fold_collation)
    if settings.is_sqlite:
        _configure_sqlite(engine.sync_engine, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    elif settings.pgbouncer and settings.statement_timeout_ms > 0:
        _limit_statements(engine.sync_engine, timeout_ms=settings.statement_timeout_ms)
    if settings.pool_pre_ping and settings.pool_ping_idle_seconds > 0:
        _ping_when_idle(engine.sync_engine, idle_seconds=settings.pool_ping_idle_seconds)
    if poll:
        return engine
    count_statements(engine.sync_engine, "primary" if replica is None else database_name(replica))
    if replica is None:
        _watch_pool(engine.sync_engine)
    else:
        _watch_replica_pool(engine.sync_engine, database_name(replica))
    return engine


def _or(replica_value: int | None, value: int, replica: str | None) -> int:
    """A replica's own pool setting when it has one, else the primary's."""
    return replica_value if replica is not None and replica_value is not None else value


def _ping_when_idle(engine: Engine, *, idle_seconds: float) -> None:
    """SQLAlchemy's pre-ping, for connections that sat in the pool `idle_seconds` or more.

    Under load a connection comes back and goes out again within milliseconds, and a
    round trip to prove it alive would cost as much CPU as a small query. One that died
    sooner than that (the database restarted in between) fails its first statement:
    SQLAlchemy then replaces every connection older than the failure, and reads retry
    once (Database.read).
    """
    pool = engine.pool

    def idle_from_now(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is not None and time.monotonic() - since < idle_seconds:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # whatever the driver raises for a dead connection
            raise sa_exc.DisconnectionError("the pooled connection is gone") from exc
        if not alive:
            raise sa_exc.DisconnectionError("the pooled connection is gone")

    # Raising DisconnectionError in a checkout listener makes the pool discard that
    # connection and hand out another one.
    event.listen(pool, "connect", idle_from_now)
    event.listen(pool, "checkin", idle_from_now)
    event.listen(pool, "checkout", ping_if_idle)


def _watch_pool(engine: Engine) -> None:
    """Keep the pool gauges current as connections come and go."""
    # Counted from the events: the pool's own counters lag behind them by one connection.
    size = int(getattr(engine.pool, "size", lambda: 0)())
    checked_out = 0

    def moved(delta: int) -> None:
        nonlocal checked_out
        checked_out += delta
        POOL_CHECKED_OUT.set(checked_out)
        POOL_OVERFLOW.set(max(0, checked_out - size))

    event.listen(engine.pool, "checkout", lambda *_: moved(+1))
    event.listen(engine.pool, "checkin", lambda *_: moved(-1))
    POOL_SIZE.set(size)


def _watch_replica_pool(engine: Engine, name: str) -> None:
    gauge = REPLICA_POOL_CHECKED_OUT.labels(name)
    event.listen(engine.pool, "checkout", lambda *_: gauge.inc())
    event.listen(engine.pool, "checkin", lambda *_: gauge.dec())


def database_name(url: str) -> str:
    """How logs, metrics and /readyz name a database: host:port/name, never a password."""
    parsed = make_url(url)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def autocommit_reads(engine: AsyncEngine, settings: Settings) -> bool:
    """Reads skip BEGIN/ROLLBACK on a direct PostgreSQL connection: at READ COMMITTED a
    transaction gives several SELECTs no common snapshot anyway, and the two round trips are
    a third of a cheap read. Not behind PgBouncer (SET LOCAL needs a transaction), and not
    on SQLite (there our own BEGIN must be paired with an end)."""
    return engine.dialect.name == "postgresql" and not settings.pgbouncer


def _limit_statements(engine: Engine, *, timeout_ms: int) -> None:
    """`SET LOCAL statement_timeout` as each transaction begins: it ends with the transaction,
    so it holds behind PgBouncer in transaction mode, where session settings would leak.
    Listened for on this engine only: other engines in the process are left alone."""
    statement = f"SET LOCAL statement_timeout = {int(timeout_ms)}"

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(statement, execution_options={UNCOUNTED: True})


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        # SQLite's lower() folds ASCII only; PostgreSQL folds all of Unicode. Use Python's
        # so case-insensitive filters match the same rows on both backends.
        dbapi_connection.create_function("lower", 1, _py_lower, deterministic=True)
        # We issue BEGIN ourselves (below), so the driver must not.
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A writer takes the write lock up front: a deferred transaction that reads and then
        # writes can fail at once with SQLITE_BUSY, without waiting for busy_timeout.
        mode = "BEGIN IMMEDIATE" if connection.get_execution_options().get(WRITE) else "BEGIN"
        connection.exec_driver_sql(mode, execution_options={UNCOUNTED: True})


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4().hex}__"


def _py_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def count_statements(engine: Engine, database: str) -> None:
    """Count every statement and its time into the current request's stats (and keep each
    one when the request asked to see them: `explain`)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _before(
        conn: Connection, _cursor: Any, sql: str, params: Any, context: Any, _many: bool
    ) -> None:
        started = conn.info["statement_started"] = time.perf_counter()
        stats = current_stats.get()
        if stats is not None and not context.execution_options.get(UNCOUNTED):
            stats.queries += 1
            if stats.ran is not None:
                stats.ran.append(Ran(sql, params, database, engine, started))
                conn.info["statement_ran"] = stats.ran[-1]

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Connection, *_args: Any) -> None:
        stats = current_stats.get()
        if stats is not None:
            seconds = time.perf_counter() - conn.info["statement_started"]
            stats.db_seconds += seconds
            ran = conn.info.pop("statement_ran", None)
            if ran is not None:
                ran.seconds = seconds
