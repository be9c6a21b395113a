"""Two ways to load a page with its includes, equal in SQL and in output.

`columns` (the default) runs Core SELECTs of the planned columns and builds the response
dicts straight from the rows: exactly 1 + k statements. `orm` runs the same statements
through `select(Model)` with `load_only` and `selectinload` options, then reads the
entities; it is the reference the columns loader is tested against and costs more CPU per
row, and SQLAlchemy skips a level when the one above it found no rows (at most 1 + k).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.errors import InvalidParameter
from service.query.columns import PARENT_IDS, build_page_select, children_select, page_select
from service.query.options import build_list_select
from service.query.plan import ListQuery, Plan
from service.query.values import Scalar

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Loaded:
    items: list[Item]  # exactly the planned keys, relationships embedded
    ids: list[int]  # the items' ids, in order (an item holds `id` only if it was asked for)
    has_more: bool
    last_sort_values: tuple[Scalar | None, ...] | None  # for the next page's cursor


class EmbeddedBudget:
    """Counts embedded rows; past the limit the client is sent to the sub-collection endpoint."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def take(self, count: int, owner: str, relation: str) -> None:
        """Count `count` more embedded rows of `owner`'s `relation`; too many is a 400."""
        self.left -= count
        if self.left < 0:
            raise InvalidParameter(
                "include",
                f"the response would embed more than {self.limit} rows; page through "
                f"/{owner}/{{id}}/{relation} instead",
            )


async def load_columns(
    connection: AsyncConnection, query: ListQuery, budget: EmbeddedBudget, *, remember: bool = True
) -> Loaded:
    """1 statement for the page, then exactly 1 per include path.

    `remember=False` for a query asked once (a write reading its rows back): its statement
    is not kept, so it cannot push out the statements of the queries that repeat.
    """
    plan = query.plan
    rows = await _fetch(connection, page_select(query) if remember else build_page_select(query))
    has_more = len(rows) > query.limit
    rows = rows[: query.limit]
    names, values, id_at = _shape(plan, offset=0)
    items: list[Item] = []
    parents: dict[int, Item] = {}
    for row in rows:
        item = dict(zip(names, values(row), strict=False))  # equal lengths by construction
        items.append(item)
        parents[row[id_at]] = item
    last = None
    if rows:
        positions = [plan.load.index(key.name) for key in query.sort]
        last = tuple(rows[-1][i] for i in positions)
    await _attach_children(connection, plan, parents, None, budget)
    return Loaded(items, list(parents), has_more, last)


async def _attach_children(
    connection: AsyncConnection,
    plan: Plan,
    parents: dict[int, Item],
    weights: dict[int, int] | None,
    budget: EmbeddedBudget,
) -> None:
    """Fill each parent's relationship lists; a child shared by parents is one dict.

    `weights` says how many times each parent appears in the response (None: once each),
    so the budget counts rows as rendered.
    """
    array = connection.dialect.name == "postgresql"
    for relation, child in plan.children:
        lists: dict[int, list[Item]] = {}
        for parent_id, item in parents.items():
            lists[parent_id] = item[relation] = []
        # Even with no parents the level runs (and finds nothing): the contract is exactly
        # 1 + k statements, so a client can count on it whatever the data.
        statement = children_select(plan.resource, relation, child, array_parameter=array)
        rows = await _fetch(connection, statement, {PARENT_IDS: list(parents)})  # owner id first
        rendered = len(rows) if weights is None else sum(weights[row[0]] for row in rows)
        budget.take(rendered, plan.resource, relation)
        names, values, id_at = _shape(child, offset=1)
        children: dict[int, Item] = {}
        for row in rows:
            child_id = row[id_at]
            found = children.get(child_id)
            if found is None:
                found = children[child_id] = dict(zip(names, values(row), strict=False))
            lists[row[0]].append(found)
        child_weights = _child_weights(rows, id_at, weights) if child.children else None
        await _attach_children(connection, child, children, child_weights, budget)


async def _fetch(
    connection: AsyncConnection, statement: Select[Any], params: dict[str, Any] | None = None
) -> Sequence[Sequence[Any]]:
    """The statement's rows, as the driver returned them when SQLAlchemy would convert none
    of the values (asyncpg: ints, text and timestamps come out final): building a Row per
    row is most of what fetching costs past the driver. Otherwise SQLAlchemy's rows."""
    result = await connection.execute(statement, params)
    if _converts_values(tuple(statement.selected_columns), connection.dialect):
        converted: Sequence[Sequence[Any]] = result.all()
        return converted
    rows: Sequence[Sequence[Any]] = result.cursor.fetchall()
    result.close()
    return rows


@lru_cache(maxsize=256)
def _converts_values(columns: tuple[ColumnElement[Any], ...], dialect: Dialect) -> bool:
    # Keyed by the table columns (they live as long as the process), not the statement.
    return any(
        column.type.dialect_impl(dialect).result_processor(dialect, None) is not None
        for column in columns
    )


def _child_weights(
    rows: Sequence[Sequence[Any]], id_at: int, weights: dict[int, int] | None
) -> dict[int, int]:
    """How many times each child is rendered: once under every appearance of each owner."""
    found: dict[int, int] = {}
    for row in rows:
        child_id = row[id_at]
        found[child_id] = found.get(child_id, 0) + (1 if weights is None else weights[row[0]])
    return found


RowValues = Callable[[Sequence[Any]], Sequence[Any]]


@lru_cache(maxsize=1024)
def _shape(plan: Plan, *, offset: int) -> tuple[tuple[str, ...], RowValues, int]:
    """A level's output names, a C-level getter of their values from a row, and where the
    row holds the id; `offset` is how many leading columns precede the plan's `load`."""
    positions = [plan.load.index(name) + offset for name in plan.output]
    values: RowValues
    if not positions:
        values = lambda row: ()  # noqa: E731
    elif len(positions) == 1:
        only = positions[0]
        values = lambda row: (row[only],)  # noqa: E731 (itemgetter of one returns no tuple)
    else:
        values = itemgetter(*positions)
    return tuple(plan.output), values, plan.load.index("id") + offset


async def load_entities(
    connection: AsyncConnection, query: ListQuery, budget: EmbeddedBudget, *, remember: bool = True
) -> Loaded:
    """The same page through ORM entities (`load_only` + `selectinload`, lazy loads raise),
    in a session on the caller's connection (inside its transaction, if it has one)."""
    async with AsyncSession(bind=connection, autoflush=False, expire_on_commit=False) as session:
        rows = (await session.scalars(build_list_select(query))).all()
        page = rows[: query.limit]
        items = [to_item(row, query.plan, budget) for row in page]
        last = tuple(getattr(page[-1], key.name) for key in query.sort) if page else None
        return Loaded(items, [row.id for row in page], len(rows) > query.limit, last)


def to_item(row: Any, plan: Plan, budget: EmbeddedBudget) -> Item:
    item = {name: getattr(row, name) for name in plan.output}
    for relation, child in plan.children:
        related: Sequence[Any] = getattr(row, relation)
        budget.take(len(related), plan.resource, relation)
        item[relation] = [to_item(other, child, budget) for other in related]
    return item


LOADERS = {"columns": load_columns, "orm": load_entities}
