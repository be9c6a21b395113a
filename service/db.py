"""The declarative base, the async engine and the statement counter behind Server-Timing."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from service.settings import Settings
from service.timing import current_stats

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def make_engine(settings: Settings) -> AsyncEngine:
    """An async engine with its pool sized by the settings; SQLite tuned for concurrency."""
    connect_args: dict[str, Any] = {}
    if settings.is_sqlite:
        connect_args["timeout"] = settings.sqlite_busy_timeout_ms / 1000
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle,
        pool_pre_ping=settings.pool_pre_ping,
        connect_args=connect_args,
    )
    if settings.is_sqlite:
        _configure_sqlite(engine.sync_engine, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    count_statements(engine.sync_engine)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


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


def _py_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def count_statements(engine: Engine) -> None:
    """Count every statement and its time into the current request's stats."""

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Connection, *_args: Any) -> None:
        conn.info["statement_started"] = time.perf_counter()
        stats = current_stats.get()
        if stats is not None:
            stats.queries += 1

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Connection, *_args: Any) -> None:
        stats = current_stats.get()
        if stats is not None:
            stats.db_seconds += time.perf_counter() - conn.info["statement_started"]
