"""Writes in bulk: rows, junction links, updates and deletes, a bounded number of statements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.schema import Attribute, Join, Resource


async def insert_rows(
    session: AsyncSession, resource: Resource, rows: list[dict[str, Any]]
) -> list[Any]:
    """One multi-row INSERT ... RETURNING the key; the keys in the order of `rows`.

    Every row must hold the same keys: a multi-row INSERT has one column list. Keys the
    client gives (or the model's default makes) come back as given; keys the database
    generates are matched by position (see `_in_input_order`)."""
    table = resource.table
    key = resource.key.column
    values = [{_column_key(resource, name): value for name, value in row.items()} for row in rows]
    if _generated_integers(session, resource):
        result = await session.execute(insert(table).returning(key), values)
        return _in_input_order(list(result.scalars()))
    statement = insert(table).returning(key, sort_by_parameter_order=True)
    return list((await session.execute(statement, values)).scalars())


def _generated_integers(session: AsyncSession, resource: Resource) -> bool:
    """SQLite hands out integer keys itself: SQLAlchemy's ordered RETURNING would send one
    INSERT per row there, so the keys are matched by position instead."""
    key = resource.key
    sqlite = session.get_bind().dialect.name == "sqlite"
    return sqlite and key.codec.name == "integer" and not key.writable


def _in_input_order(keys: list[Any]) -> list[Any]:
    """SQLite gives a multi-row INSERT's rows ascending rowids in VALUES order (it holds the
    write lock since BEGIN IMMEDIATE, so no one else inserts in between), but promises no
    order for RETURNING: sorted, the keys line up with the input."""
    return sorted(keys)


def _column_key(resource: Resource, name: str) -> str:
    attribute = resource.attribute(name) or next(s for s in resource.secrets if s.name == name)
    return str(attribute.column.key)


async def insert_links(session: AsyncSession, join: Join, pairs: Iterable[tuple[Any, Any]]) -> None:
    """(owner key, target key) pairs into the junction table, one executemany."""
    assert join.secondary is not None
    assert join.secondary_target is not None
    owner, target = join.child_key.key, join.secondary_target.key
    rows = [{owner: source, target: linked} for source, linked in pairs]
    if rows:
        await session.execute(insert(join.secondary), rows)


async def clear_links(session: AsyncSession, join: Join, owner_key: Any) -> None:
    assert join.secondary is not None
    await session.execute(delete(join.secondary).where(join.child_key == owner_key))


async def update_row(
    session: AsyncSession, resource: Resource, identifier: Any, values: dict[str, Any]
) -> bool:
    """UPDATE one row; False when there is no such row."""
    key = resource.key.column
    if not values:
        found = await session.scalar(select(key).where(key == identifier))
        return found is not None
    columns = {_column_key(resource, name): value for name, value in values.items()}
    statement = update(resource.table).where(key == identifier).values(columns).returning(key)
    return (await session.scalar(statement)) is not None


async def delete_row(session: AsyncSession, resource: Resource, identifier: Any) -> bool:
    """DELETE one row (the database cascades what its foreign keys say); False when none."""
    key = resource.key.column
    statement = delete(resource.table).where(key == identifier).returning(key)
    return (await session.scalar(statement)) is not None


async def missing_keys(session: AsyncSession, key: Attribute, wanted: set[Any]) -> set[Any]:
    """Which of `wanted` name no row by this key column (one statement)."""
    if not wanted:
        return set()
    column = key.column
    found = await session.scalars(select(column).where(column.in_(list(wanted))))
    return wanted - set(found)


async def taken_values(
    session: AsyncSession,
    resource: Resource,
    attribute: Attribute,
    values: Sequence[Any],
    *,
    excluding: Any = None,
) -> set[Any]:
    """Which of `values` another row already holds in a unique column."""
    if not values:
        return set()
    column = attribute.column
    statement = select(column).where(column.in_(list(values)))
    if excluding is not None:
        statement = statement.where(resource.key.column != excluding)
    return set(await session.scalars(statement))
