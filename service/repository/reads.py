"""Reads: a page of rows with their includes, counts and estimates, existence checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
