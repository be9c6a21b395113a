"""Writes in bulk: rows, junction links, updates and deletes, a bounded number of statements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.resources import RESOURCES, Relationship, Resource


def table_of(resource: Resource) -> Table:
    table: Table = resource.model.__table__  # type: ignore[assignment]
    return table


async def insert_rows(
    session: AsyncSession, resource: Resource, rows: list[dict[str, Any]]
) -> list[int]:
    """Multi-row INSERT ... RETURNING id, name; ids in the order of `rows`.

    Rows come back in any order (SQLite promises none), so they are matched to the input by
    the unique, required `name`; asking SQLAlchemy to sort them instead would cost one
    INSERT per row on SQLite. Every row must hold the same keys: a multi-row INSERT has one
    column list.
    """
    table = table_of(resource)
    statement = insert(table).returning(table.c.id, table.c.name)
    result = await session.execute(statement, rows)
    ids = {name: int(identifier) for identifier, name in result.all()}
    return [ids[row["name"]] for row in rows]


async def insert_links(
    session: AsyncSession, relationship: Relationship, pairs: Iterable[tuple[int, int]]
) -> None:
    """(owner id, target id) pairs into the junction table, one executemany."""
    rows = [
        {relationship.local_key: owner, relationship.remote_key: target} for owner, target in pairs
    ]
    if rows:
        await session.execute(insert(relationship.junction), rows)


async def clear_links(session: AsyncSession, relationship: Relationship, owner_id: int) -> None:
    junction = relationship.junction
    await session.execute(delete(junction).where(junction.c[relationship.local_key] == owner_id))


async def update_row(
    session: AsyncSession, resource: Resource, identifier: int, values: dict[str, Any]
) -> bool:
    """UPDATE one row; False when there is no such row."""
    table = table_of(resource)
    if not values:
        found = await session.scalar(select(table.c.id).where(table.c.id == identifier))
        return found is not None
    statement = update(table).where(table.c.id == identifier).values(values).returning(table.c.id)
    return (await session.scalar(statement)) is not None


async def delete_row(session: AsyncSession, resource: Resource, identifier: int) -> bool:
    """DELETE one row (its links go by ON DELETE CASCADE); False when there is no such row."""
    table = table_of(resource)
    statement = delete(table).where(table.c.id == identifier).returning(table.c.id)
    return (await session.scalar(statement)) is not None


async def missing_ids(session: AsyncSession, resource_name: str, ids: set[int]) -> set[int]:
    """Which of `ids` name no row of the resource (one statement)."""
    if not ids:
        return set()
    table = table_of(RESOURCES[resource_name])
    found = await session.scalars(select(table.c.id).where(table.c.id.in_(sorted(ids))))
    return ids - set(found)


async def taken_values(
    session: AsyncSession,
    resource: Resource,
    attribute: str,
    values: Sequence[str],
    *,
    excluding_id: int | None = None,
) -> set[str]:
    """Which of `values` another row already holds in a unique column."""
    if not values:
        return set()
    table = table_of(resource)
    column = table.c[attribute]
    statement = select(column).where(column.in_(list(values)))
    if excluding_id is not None:
        statement = statement.where(table.c.id != excluding_id)
    return {str(value) for value in await session.scalars(statement)}
