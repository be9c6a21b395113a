"""The write pipeline: check, write, read back and tell the cache, all before COMMIT."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import Conflict, ErrorItem, InvalidBody
from service.passwords import PasswordHasher
from service.query.plan import Condition, ListQuery, Plan
from service.reading import Reader, not_found
from service.render import render_items
from service.repository import Database
from service.repository.database import write_transaction
from service.repository.writes import (
    clear_links,
    delete_row,
    insert_links,
    insert_rows,
    missing_ids,
    taken_values,
    update_row,
)
from service.resources import RESOURCES, Resource
from service.timing import stage

Pointer = Callable[[int], str]  # item index -> JSON pointer prefix ("" for a single object)


class ChangeListener(Protocol):
    """Told which tables a write changes: before it commits, and again once it has."""

    def check_writable(self) -> None:
        """Raise `Unavailable` when a write could not be made known now (nothing is begun)."""

    async def tables_changing(self, tables: frozenset[str]) -> None:
        """Inside the transaction, last before COMMIT; raising `Unavailable` rolls it back."""

    async def tables_changed(self, tables: frozenset[str]) -> None:
        """After COMMIT, before the response is sent; never raises."""


class Writer:
    def __init__(
        self, db: Database, reader: Reader, hasher: PasswordHasher, listener: ChangeListener
    ) -> None:
        self.db = db
        self.reader = reader
        self.hasher = hasher
        self.listener = listener

    async def create(
        self, resource_name: str, items: list[BaseModel], *, single: bool, plan: Plan
    ) -> tuple[bytes, list[int]]:
        """Insert the items and their links in one transaction; the body shapes them by `plan`."""
        resource = RESOURCES[resource_name]
        prefix: Pointer = _no_index if single else _index
        rows = [_attribute_values(resource, item) for item in items]
        _same_keys(resource, rows)
        await self._hash_secrets(resource, rows)
        _check_unique_within(resource, rows, prefix)
        links = [_link_values(resource, item) for item in items]
        changed = _changed_tables(resource, links)
        self.listener.check_writable()
        async with self.db.session() as session:
            try:
                async with write_transaction(session):
                    await _check_targets_exist(session, resource, links, prefix)
                    with stage("write"):
                        ids = await insert_rows(session, resource, rows)
                        for relationship in resource.relationships:
                            pairs = [
                                (owner, target)
                                for owner, link in zip(ids, links, strict=True)
                                for target in link.get(relationship.ids_field, [])
                            ]
                            await insert_links(session, relationship, pairs)
                    body = await self._read_back(session, plan, ids, single=single)
                    await self.listener.tables_changing(changed)
            except sa_exc.IntegrityError:
                raise await self._explain_clash(session, resource, rows, prefix) from None
        await self.listener.tables_changed(changed)
        return body, ids

    async def update(
        self, resource_name: str, identifier: int, patch: BaseModel, *, plan: Plan
    ) -> bytes:
        """Change the given attributes; an id list replaces that relationship's links."""
        resource = RESOURCES[resource_name]
        values = _attribute_values(resource, patch)
        await self._hash_secrets(resource, [values])
        link = _link_values(resource, patch)
        changed = _changed_tables(resource, [link]) if values else _link_tables(resource, [link])
        self.listener.check_writable()
        async with self.db.session() as session:
            try:
                async with write_transaction(session):
                    if not await update_row(session, resource, identifier, values):
                        raise not_found(resource.name, identifier)
                    await _check_targets_exist(session, resource, [link], _no_index)
                    for relationship in resource.relationships:
                        if relationship.ids_field in link:
                            await clear_links(session, relationship, identifier)
                            pairs = [(identifier, t) for t in link[relationship.ids_field]]
                            await insert_links(session, relationship, pairs)
                    body = await self._read_back(session, plan, [identifier], single=True)
                    await self.listener.tables_changing(changed)
            except sa_exc.IntegrityError:
                raise await self._explain_clash(
                    session, resource, [values], _no_index, excluding_id=identifier
                ) from None
        await self.listener.tables_changed(changed)
        return body

    async def delete(self, resource_name: str, identifier: int) -> None:
        resource = RESOURCES[resource_name]
        changed = frozenset(r.junction.name for r in resource.relationships) | {resource.table}
        self.listener.check_writable()
        async with self.db.session() as session, write_transaction(session):
            if not await delete_row(session, resource, identifier):
                raise not_found(resource.name, identifier)
            await self.listener.tables_changing(changed)
        await self.listener.tables_changed(changed)

    async def _hash_secrets(self, resource: Resource, rows: list[dict[str, Any]]) -> None:
        for secret in resource.secrets:
            positions = [i for i, row in enumerate(rows) if row.get(secret.name) is not None]
            if positions:
                with stage("hash"):
                    hashes = await self.hasher.hash_many([rows[i][secret.name] for i in positions])
                for position, hashed in zip(positions, hashes, strict=True):
                    rows[position][secret.name] = hashed

    async def _read_back(
        self, session: AsyncSession, plan: Plan, ids: list[int], *, single: bool
    ) -> bytes:
        wanted = Condition(plan.resource, (), "id", "in", tuple(ids))
        query = ListQuery(plan=plan, filters=(wanted,), limit=len(ids))
        page = await self.reader.load(await session.connection(), query, remember=False)
        by_id = dict(zip(page.ids, page.items, strict=True))
        with stage("render"):
            return render_items([by_id[i] for i in ids], single=single)

    async def _explain_clash(
        self,
        session: AsyncSession,
        resource: Resource,
        rows: list[dict[str, Any]],
        prefix: Pointer,
        *,
        excluding_id: int | None = None,
    ) -> Conflict:
        """Which unique value clashed, found after the rollback (drivers word it differently)."""
        await session.rollback()
        for attribute in resource.attributes:
            if not attribute.unique:
                continue
            values = [
                str(row[attribute.name]) for row in rows if row.get(attribute.name) is not None
            ]
            taken = await taken_values(
                session, resource, attribute.name, values, excluding_id=excluding_id
            )
            for index, row in enumerate(rows):
                if row.get(attribute.name) in taken:
                    return _clash(resource, attribute.name, f"{prefix(index)}/{attribute.name}")
        return Conflict("the write clashed with a concurrent change; nothing was written, retry")


def _no_index(_index: int) -> str:
    return ""


def _index(index: int) -> str:
    return f"/{index}"


def _attribute_values(resource: Resource, item: BaseModel) -> dict[str, Any]:
    links = {r.ids_field for r in resource.relationships}
    return {k: v for k, v in item.model_dump(exclude_unset=True).items() if k not in links}


def _same_keys(resource: Resource, rows: list[dict[str, Any]]) -> None:
    """Give every row every writable column (NULL where not given): one INSERT, one column list."""
    names = [a.name for a in (*resource.attributes, *resource.secrets) if a.writable]
    for row in rows:
        for name in names:
            row.setdefault(name, None)


def _link_values(resource: Resource, item: BaseModel) -> dict[str, list[int]]:
    """The id lists the item sets (None means "not given"), without repeats."""
    values = item.model_dump(exclude_unset=True)
    return {
        r.ids_field: list(dict.fromkeys(values[r.ids_field] or []))
        for r in resource.relationships
        if r.ids_field in values
    }


def _check_unique_within(
    resource: Resource, rows: Sequence[dict[str, Any]], prefix: Pointer
) -> None:
    for attribute in resource.attributes:
        if not attribute.unique:
            continue
        seen: dict[Any, int] = {}
        for index, row in enumerate(rows):
            value = row.get(attribute.name)
            if value is None:
                continue
            if value in seen:
                raise _clash(
                    resource,
                    attribute.name,
                    f"{prefix(index)}/{attribute.name}",
                    also=f"{prefix(seen[value])}/{attribute.name}",
                )
            seen[value] = index


async def _check_targets_exist(
    session: AsyncSession,
    resource: Resource,
    links: Sequence[dict[str, list[int]]],
    prefix: Pointer,
) -> None:
    """Every id in every list names a row: one SELECT per relationship used."""
    for relationship in resource.relationships:
        wanted = {t for link in links for t in link.get(relationship.ids_field, [])}
        missing = await missing_ids(session, relationship.target, wanted)
        if not missing:
            continue
        problems = [
            ErrorItem(
                f"no {relationship.target} with id {target}",
                pointer=f"{prefix(index)}/{relationship.ids_field}/{position}",
            )
            for index, link in enumerate(links)
            for position, target in enumerate(link.get(relationship.ids_field, []))
            if target in missing
        ]
        raise InvalidBody(f"{problems[0].pointer}: {problems[0].detail}", tuple(problems[:20]))


def _clash(resource: Resource, field: str, pointer: str, *, also: str | None = None) -> Conflict:
    """A unique value taken by a stored row, or (`also`) by an earlier item of the batch."""
    if also:
        detail = f"{resource.name}.{field} must be unique: {pointer} repeats {also}"
        item = f"{field} repeats {also}"
    else:
        detail = f"{resource.name}.{field} must be unique: the value at {pointer} is already taken"
        item = f"{field} is already taken"
    return Conflict(detail, (ErrorItem(item, pointer=pointer),))


def _link_tables(resource: Resource, links: Sequence[dict[str, list[int]]]) -> frozenset[str]:
    used = {field for link in links for field in link}
    return frozenset(r.junction.name for r in resource.relationships if r.ids_field in used)


def _changed_tables(resource: Resource, links: Sequence[dict[str, list[int]]]) -> frozenset[str]:
    return _link_tables(resource, links) | {resource.table}
