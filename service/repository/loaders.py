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
from service.query.columns import (
    PARENT_KEYS,
    build_children_select,
    build_count_select,
    build_page_select,
)
from service.query.options import build_list_select
from service.query.plan import ListQuery, Plan
from service.schema.codecs import Scalar

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Loaded:
    items: list[Item]  # exactly the planned keys, relationships embedded
    ids: list[Any]  # the items' keys, in order (an item holds its key only if it was asked for)
    has_more: bool
    last_sort_values: tuple[Scalar | None, ...] | None  # for the next page's cursor


class Level:
    """One level of the response as loaded: its dicts, their rows, and how often the response
    holds each (None: once each, as on the page itself)."""

    __slots__ = ("items", "rows", "weights")

    def __init__(
        self, items: list[Item], rows: Sequence[Sequence[Any]], weights: list[int] | None
    ) -> None:
        self.items = items
        self.rows = rows
        self.weights = weights


# Statements are immutable, so one per distinct query is shared by every request that asks
# it: building costs ~25-50 us, and SQLAlchemy computes a statement's cache key only once.
# Kept for the hot queries only: each holds ~6 KB, and cursors make most pages distinct.
STATEMENTS = 512


class LoaderMemo:
    """What loading derives once per distinct query: its statements and row shapes.

    One per app (the Reader's), bounded: nothing is shared between apps in a process."""

    def __init__(self, statements: int = STATEMENTS) -> None:
        self.page = lru_cache(maxsize=statements)(build_page_select)
        self.children = lru_cache(maxsize=statements)(build_children_select)
        self.counts = lru_cache(maxsize=statements)(build_count_select)
        self.shape = lru_cache(maxsize=1024)(_shape)
        self.converts = lru_cache(maxsize=256)(_converts_values)


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
    connection: AsyncConnection,
    query: ListQuery,
    budget: EmbeddedBudget,
    memo: LoaderMemo,
    *,
    remember: bool = True,
) -> Loaded:
    """1 statement for the page, then exactly 1 per include path.

    `remember=False` for a query asked once (a write reading its rows back): its statement
    is not kept, so it cannot push out the statements of the queries that repeat.
    """
    plan = query.plan
    statement = memo.page(query) if remember else build_page_select(query)
    rows = await _fetch(connection, statement, memo)
    has_more = len(rows) > query.limit
    rows = rows[: query.limit]
    shape = memo.shape(plan, 0)
    names, values = shape.names, shape.values
    items = [dict(zip(names, values(row), strict=False)) for row in rows]
    last = None
    if rows:
        last = tuple(rows[-1][shape.at[a.column]] for a in query.sort_attributes)
    await _attach_children(connection, plan, Level(items, rows, None), budget, memo, 0)
    keys = [row[shape.key_at] for row in rows]
    return Loaded(items, keys, has_more, last)


async def _attach_children(
    connection: AsyncConnection,
    plan: Plan,
    level: Level,
    budget: EmbeddedBudget,
    memo: LoaderMemo,
    offset: int,
) -> None:
    """Fill each parent's relationships (a list, or an object or None) and its counts; a
    child shared by parents is one dict. The budget counts rows as rendered (a shared child
    as often as its parents appear); `offset` is how many leading columns precede a row's
    `load`."""
    array = connection.dialect.name == "postgresql"
    shape = memo.shape(plan, offset)
    totals: dict[str, dict[Any, int]] = {}  # a cut list's counts, per owner key
    for relation, child in plan.children:
        join = plan.join(relation)
        many = join.many
        key_at = shape.at[join.parent_key]
        # Owner key -> what its rows fill: each parent's list, or for a to-one link each
        # parent's dict. As a rule one parent per key (its own key); a to-one link's foreign
        # key can be shared by several, and then the key holds a list of them.
        fills: dict[Any, Any] = {}
        shared: dict[Any, list[Any]] = {}
        for item, row in zip(level.items, level.rows, strict=True):
            container: Any = item
            if many:
                item[relation] = container = []
            else:
                item[relation] = None
            key = row[key_at]
            if key is None:
                continue
            if key in fills:
                shared.setdefault(key, [fills[key]]).append(container)
            fills[key] = container
        # Even with no parents the level runs (and finds nothing): the contract is exactly
        # 1 + k statements, so a client can count on it whatever the data.
        counted = relation in plan.counts and child.limit is not None
        statement = memo.children(join, child, array, counted)
        rows = await _fetch(connection, statement, memo, {PARENT_KEYS: list(fills)})
        child_shape = memo.shape(child, 1)
        names, values, child_key_at = child_shape.names, child_shape.values, child_shape.key_at
        if counted:
            total_at = 1 + len(child.load)
            totals[relation] = {row[0]: row[total_at] for row in rows}
        # How often each owner's parents appear (None: once, the common case).
        owner_weight = _owner_weights(level, key_at) if level.weights or shared else None
        index: dict[Any, int] = {}
        child_items: list[Item] = []
        child_rows: list[Sequence[Any]] = []
        child_weights: list[int] = []
        rendered = 0
        for row in rows:
            key, owner = row[child_key_at], row[0]
            at = index.get(key)
            if at is None:
                at = index[key] = len(child_items)
                child_items.append(dict(zip(names, values(row), strict=False)))
                child_rows.append(row)
                child_weights.append(0)
            weight = 1 if owner_weight is None else owner_weight[owner]
            rendered += weight
            child_weights[at] += weight
            item = child_items[at]
            for container in shared.get(owner) or (fills[owner],):
                if many:
                    container.append(item)
                else:
                    container[relation] = item
        budget.take(rendered, plan.resource.name, relation)
        if child.children or child.counts:
            deeper = Level(child_items, child_rows, child_weights)
            await _attach_children(connection, child, deeper, budget, memo, 1)
    await _attach_counts(connection, plan, level, shape, totals, memo, array)


async def _attach_counts(
    connection: AsyncConnection,
    plan: Plan,
    level: Level,
    shape: Shape,
    totals: dict[str, dict[Any, int]],
    memo: LoaderMemo,
    array: bool,
) -> None:
    """`<relation>_count` on every parent: an included list that was not cut is counted as
    loaded, a cut one came with its totals, and a path not included runs one grouped count."""
    included = dict(plan.children)
    for relation in plan.counts:
        name = f"{relation}_count"
        if relation in included and relation not in totals:
            for item in level.items:
                item[name] = len(item[relation])
            continue
        key_at = shape.at[plan.join(relation).parent_key]
        if relation not in totals:
            keys = list({row[key_at] for row in level.rows} - {None})
            statement = memo.counts(plan.join(relation), array)
            found = await _fetch(connection, statement, memo, {PARENT_KEYS: keys})
            totals[relation] = {row[0]: row[1] for row in found}
        counts = totals[relation]
        for item, row in zip(level.items, level.rows, strict=True):
            item[name] = counts.get(row[key_at], 0)


def _owner_weights(level: Level, key_at: int) -> dict[Any, int]:
    """Per owner key, how often its parents appear in the response."""
    weights: dict[Any, int] = {}
    for position, row in enumerate(level.rows):
        weight = 1 if level.weights is None else level.weights[position]
        weights[row[key_at]] = weights.get(row[key_at], 0) + weight
    return weights


async def _fetch(
    connection: AsyncConnection,
    statement: Select[Any],
    memo: LoaderMemo,
    params: dict[str, Any] | None = None,
) -> Sequence[Sequence[Any]]:
    """The statement's rows, as the driver returned them when SQLAlchemy would convert none
    of the values (asyncpg: ints, text and timestamps come out final): building a Row per
    row is most of what fetching costs past the driver. Otherwise SQLAlchemy's rows."""
    result = await connection.execute(statement, params)
    if memo.converts(tuple(statement.selected_columns), connection.dialect):
        converted: Sequence[Sequence[Any]] = result.all()
        return converted
    rows: Sequence[Sequence[Any]] = result.cursor.fetchall()
    result.close()
    return rows


def _converts_values(columns: tuple[ColumnElement[Any], ...], dialect: Dialect) -> bool:
    # Keyed by the table columns (they live as long as the process), not the statement.
    return any(_converts(column, dialect) for column in columns)


def _converts(column: ColumnElement[Any], dialect: Dialect) -> bool:
    try:
        return column.type.dialect_impl(dialect).result_processor(dialect, None) is not None
    except (TypeError, KeyError):
        return True  # a processor that needs the driver's type code (asyncpg's numeric)


RowValues = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Shape:
    """How a level's rows become its dicts."""

    names: tuple[str, ...]  # the output keys
    values: RowValues  # a C-level getter of their values from a row
    at: dict[Any, int]  # where each loaded column sits in a row
    key_at: int  # where the primary key sits


def _shape(plan: Plan, offset: int) -> Shape:
    """`offset` is how many leading columns precede the plan's `load` in a row."""
    at = {column: index + offset for index, column in enumerate(plan.load)}
    resource = plan.resource
    positions = [at[resource.attribute(name).column] for name in plan.output]  # type: ignore[union-attr]
    values: RowValues
    if not positions:
        values = lambda row: ()  # noqa: E731
    elif len(positions) == 1:
        only = positions[0]
        values = lambda row: (row[only],)  # noqa: E731 (itemgetter of one returns no tuple)
    else:
        values = itemgetter(*positions)
    return Shape(tuple(plan.output), values, at, at[resource.key.column])


async def load_entities(
    connection: AsyncConnection,
    query: ListQuery,
    budget: EmbeddedBudget,
    _memo: LoaderMemo,
    *,
    remember: bool = True,
) -> Loaded:
    """The same page through ORM entities (`load_only` + `selectinload`, lazy loads raise),
    in a session on the caller's connection (inside its transaction, if it has one)."""
    async with AsyncSession(bind=connection, autoflush=False, expire_on_commit=False) as session:
        rows = (await session.scalars(build_list_select(query))).all()
        page = rows[: query.limit]
        items = [to_item(row, query.plan, budget) for row in page]
        last = tuple(getattr(page[-1], key.name) for key in query.sort) if page else None
        keys = [getattr(row, query.resource.key.name) for row in page]
        return Loaded(items, keys, len(rows) > query.limit, last)


def to_item(row: Any, plan: Plan, budget: EmbeddedBudget) -> Item:
    item = {name: getattr(row, name) for name in plan.output}
    for relation, child in plan.children:
        related: Any = getattr(row, relation)
        if not plan.join(relation).many:
            budget.take(related is not None, plan.resource.name, relation)
            item[relation] = None if related is None else to_item(related, child, budget)
            continue
        budget.take(len(related), plan.resource.name, relation)
        item[relation] = [to_item(other, child, budget) for other in related]
    return item


LOADERS = {"columns": load_columns, "orm": load_entities}
