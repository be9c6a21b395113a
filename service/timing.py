"""Per-request timings and statement counts, carried in a context variable."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine


@dataclass(slots=True)
class Ran:
    """One statement a request ran, as its engine's events saw it (kept for `explain`)."""

    sql: str
    parameters: Any  # only to EXPLAIN the statement again; never shown
    database: str  # "primary" or the replica's host:port/name
    engine: Engine
    started: float
    seconds: float = 0.0


@dataclass(slots=True)
class RequestStats:
    """What one request spent; filled by the engine events and the pipeline stages."""

    started: float = field(default_factory=time.perf_counter)
    queries: int = 0
    db_seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    cache: str | None = None
    committing: bool = False  # a write's COMMIT was sent: its answer must say what happened
    ran: list[Ran] | None = None  # each statement, kept only for a read asked to explain itself

    def add_stage(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + seconds

    def server_timing(self) -> str:
        """The `Server-Timing` header value: each stage, the database, and the total."""
        tail = timing_tail(self.queries, self.db_seconds, time.perf_counter() - self.started)
        if not self.stages:  # a cache hit
            return tail
        stages = ", ".join(
            f"{name};dur={seconds * 1000:.2f}" for name, seconds in self.stages.items()
        )
        return f"{stages}, {tail}"


def timing_tail(queries: int, db_seconds: float, total_seconds: float) -> str:
    """The part of `Server-Timing` every response has: the database and the total."""
    db_ms, total_ms = db_seconds * 1000, total_seconds * 1000
    return f'db;dur={db_ms:.2f};desc="{queries} queries", total;dur={total_ms:.2f}'


current_stats: ContextVar[RequestStats | None] = ContextVar("current_stats", default=None)


class stage:
    """Context manager timing one pipeline stage into the current request's stats."""

    __slots__ = ("_name", "_started")

    def __init__(self, name: str) -> None:
        self._name = name
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        stats = current_stats.get()
        if stats is not None:
            stats.add_stage(self._name, time.perf_counter() - self._started)
