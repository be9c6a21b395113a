"""Async reads (and, later, writes) on one session; driver errors become domain errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.errors import InvalidParameter, ServiceError, Unavailable
from service.query.options import build_count_select, build_estimate, build_list_select
from service.query.params import Count
from service.query.plan import ListQuery
from service.resources import RESOURCES


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[Any]
    has_more: bool
    total: int | None = None
    estimated: bool = False


class Database:
    """The engine, its sessions, and the translation of driver failures."""

    def __init__(self, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.dialect = engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """One session per request; any driver failure leaves as a ServiceError."""
        try:
            async with self.sessionmaker() as session:
                yield session
        except ServiceError:
            raise
        except (sa_exc.SQLAlchemyError, OSError, TimeoutError) as exc:
            raise translate_error(exc) from exc


def translate_error(exc: BaseException) -> ServiceError:
    """Map what the driver or the pool raised to what the client is told."""
    if isinstance(exc, sa_exc.TimeoutError):
        return Unavailable("no database connection became free in time", retry_after=1)
    if isinstance(exc, sa_exc.DataError):
        return InvalidParameter("query", "a value is out of range for the database")
    return Unavailable("the database is not available right now", retry_after=1)


async def list_page(session: AsyncSession, query: ListQuery, *, dialect: str) -> Page:
    """One page of rows with their includes: 1 + k statements (+1 for the count)."""
    rows = (await session.scalars(build_list_select(query))).all()
    page = Page(rows=rows[: query.limit], has_more=len(rows) > query.limit)
    if query.count is Count.NONE:
        return page
    if query.count is Count.ESTIMATED and dialect == "postgresql":
        plan = await session.scalar(build_estimate(query))
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        return replace(page, total=estimate, estimated=True)
    total = int(await session.scalar(build_count_select(query)) or 0)
    return replace(page, total=total, estimated=False)


async def exists(session: AsyncSession, resource_name: str, identifier: int) -> bool:
    model: Any = RESOURCES[resource_name].model
    found = await session.scalar(select(model.id).where(model.id == identifier))
    return found is not None
