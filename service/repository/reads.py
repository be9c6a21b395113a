"""Reads: a page with its includes (through a loader), counts and estimates, existence checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.query.options import build_count_select, build_estimate
from service.query.params import Count
from service.query.plan import ListQuery
from service.repository.loaders import LOADERS, EmbeddedBudget, Item, LoaderMemo
from service.schema import Resource
from service.schema.codecs import Scalar


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    ids: list[Any]
    has_more: bool
    last_sort_values: tuple[Scalar | None, ...] | None = None
    total: int | None = None
    estimated: bool = False


async def list_page(
    connection: AsyncConnection,
    query: ListQuery,
    *,
    dialect: str,
    loader: str = "columns",
    max_embedded: int = 10_000,
    memo: LoaderMemo,
    remember: bool = True,
) -> Page:
    """One page of rows with their includes: 1 + k statements (+1 for the count)."""
    budget = EmbeddedBudget(max_embedded)
    if loader != "columns" and query.plan.shaped:
        loader = "columns"  # lists cut, sorted or counted per parent are SQL of its own
    loaded = await LOADERS[loader](connection, query, budget, memo, remember=remember)
    total, estimated = await _count(connection, query, dialect=dialect)
    return Page(
        loaded.items, loaded.ids, loaded.has_more, loaded.last_sort_values, total, estimated
    )


async def _count(
    connection: AsyncConnection, query: ListQuery, *, dialect: str
) -> tuple[int | None, bool]:
    if query.count is Count.NONE:
        return None, False
    if query.count is Count.ESTIMATED and dialect == "postgresql":
        plan = await connection.scalar(build_estimate(query))
        return int(plan[0]["Plan"]["Plan Rows"]), True
    return int(await connection.scalar(build_count_select(query)) or 0), False


async def exists(connection: AsyncConnection, resource: Resource, identifier: Any) -> bool:
    key = resource.key.column
    found = await connection.scalar(select(key).where(key == identifier))
    return found is not None
