"""The write pipeline: check, write, read back and tell the cache, all before COMMIT."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from service.errors import Conflict, ErrorItem, InvalidBody
from service.passwords import PasswordHasher
from service.query.plan import Condition, ListQuery, Plan, default_sort
from service.reading import Reader, not_found
from service.render import render_items
from service.repository import Database
from service.repository.database import write_transaction
from service.repository.writes import (
    clear_links,
    delete_row,
    insert_links,
    insert_rows,
    missing_keys,
    taken_values,
    update_row,
)
from service.schema import Attribute, Resource
from service.timing import stage

Pointer = Callable[[int], str]  # item index -> JSON pointer prefix ("" for a single object)
Links = dict[str, list[Any]]  # ids field -> the target keys it sets


class ChangeListener(Protocol):
    """Told which tables a write changes: before it commits, and again once it has."""

    def check_writable(self) -> None:
        """Raise `Unavailable` when a write could not be made known now (nothing is begun)."""

    async def tables_changing(self, tables: frozenset[str]) -> None:
        """Inside the transaction, last before COMMIT; raising `Unavailable` rolls it back."""

    async def tables_changed(self, tables: frozenset[str], position: int) -> None:
        """After COMMIT, before the response is sent, with where the primary's WAL stood
        after it (what a replica must replay to hold the write); never raises."""


class Writer:
    def __init__(
        self, db: Database, reader: Reader, hasher: PasswordHasher, listener: ChangeListener
    ) -> None:
        self.db = db
        self.reader = reader
        self.hasher = hasher
        self.listener = listener

    async def create(
        self, resource: Resource, items: list[BaseModel], *, single: bool, plan: Plan
    ) -> tuple[bytes, list[Any]]:
        """Insert the items and their links in one transaction; the body shapes them by `plan`."""
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
                    await _check_references(session, resource, rows, links, prefix)
                    with stage("write"):
                        keys = await _insert_grouped(session, resource, rows)
                        for join in resource.id_lists:
                            pairs = [
                                (owner, target)
                                for owner, link in zip(keys, links, strict=True)
                                for target in link.get(join.ids_field or "", [])
                            ]
                            await insert_links(session, join, pairs)
                    body = await self._read_back(session, plan, keys, single=single)
                    await self.listener.tables_changing(changed)
            except sa_exc.IntegrityError:
                raise await self._explain_clash(session, resource, rows, prefix) from None
        await self.listener.tables_changed(changed, await self.db.written_position())
        return body, keys

    async def update(
        self, resource: Resource, identifier: Any, patch: BaseModel, *, plan: Plan
    ) -> bytes:
        """Change the given attributes; an id list replaces that relationship's links."""
        values = _attribute_values(resource, patch)
        await self._hash_secrets(resource, [values])
        link = _link_values(resource, patch)
        changed = _changed_tables(resource, [link]) if values else _link_tables(resource, [link])
        self.listener.check_writable()
        async with self.db.session() as session:
            try:
                async with write_transaction(session):
                    # Before the UPDATE: a dangling foreign key is the client's 422, not
                    # the database's constraint error.
                    await _check_references(session, resource, [values], [link], _no_index)
                    if not await update_row(session, resource, identifier, values):
                        raise not_found(resource, identifier)
                    for join in resource.id_lists:
                        if join.ids_field in link:
                            await clear_links(session, join, identifier)
                            pairs = [(identifier, t) for t in link[join.ids_field or ""]]
                            await insert_links(session, join, pairs)
                    body = await self._read_back(session, plan, [identifier], single=True)
                    await self.listener.tables_changing(changed)
            except sa_exc.IntegrityError:
                raise await self._explain_clash(
                    session, resource, [values], _no_index, excluding=identifier
                ) from None
        await self.listener.tables_changed(changed, await self.db.written_position())
        return body

    async def delete(self, resource: Resource, identifier: Any) -> None:
        """The row and what the database cascades from it; every table that can touch counts."""
        junctions = {j.secondary.name for j in resource.id_lists if j.secondary is not None}
        changed = resource.delete_tables | junctions
        self.listener.check_writable()
        async with self.db.session() as session:
            try:
                async with write_transaction(session):
                    if not await delete_row(session, resource, identifier):
                        raise not_found(resource, identifier)
                    await self.listener.tables_changing(changed)
            except sa_exc.IntegrityError:
                raise Conflict(
                    f"other rows still refer to this {resource.name} row; nothing was deleted"
                ) from None
        await self.listener.tables_changed(changed, await self.db.written_position())

    async def _hash_secrets(self, resource: Resource, rows: list[dict[str, Any]]) -> None:
        for secret in resource.secrets:
            positions = [i for i, row in enumerate(rows) if row.get(secret.name) is not None]
            if positions:
                with stage("hash"):
                    hashes = await self.hasher.hash_many([rows[i][secret.name] for i in positions])
                for position, hashed in zip(positions, hashes, strict=True):
                    rows[position][secret.name] = hashed

    async def _read_back(
        self, session: AsyncSession, plan: Plan, keys: list[Any], *, single: bool
    ) -> bytes:
        resource = plan.resource
        wanted = Condition((), resource.key, "in", tuple(keys))
        query = ListQuery(plan, default_sort(resource), filters=(wanted,), limit=len(keys))
        page = await self.reader.load(await session.connection(), query, remember=False)
        by_key = dict(zip(page.ids, page.items, strict=True))
        with stage("render"):
            return render_items([by_key[key] for key in keys], single=single)

    async def _explain_clash(
        self,
        session: AsyncSession,
        resource: Resource,
        rows: list[dict[str, Any]],
        prefix: Pointer,
        *,
        excluding: Any = None,
    ) -> Conflict:
        """Which unique value clashed, found after the rollback (drivers word it differently)."""
        await session.rollback()
        for attribute in resource.attributes:
            if not attribute.unique:
                continue
            values = [row[attribute.name] for row in rows if row.get(attribute.name) is not None]
            taken = await taken_values(session, resource, attribute, values, excluding=excluding)
            for index, row in enumerate(rows):
                if row.get(attribute.name) in taken:
                    return _clash(resource, attribute.name, f"{prefix(index)}/{attribute.name}")
        return Conflict("the write clashed with a concurrent change; nothing was written, retry")


async def _insert_grouped(
    session: AsyncSession, resource: Resource, rows: list[dict[str, Any]]
) -> list[Any]:
    """One INSERT per distinct set of given columns (one, as a rule): a column left out of
    a row keeps its default, which a multi-row INSERT's single column list could not."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(tuple(row), []).append(index)
    keys: list[Any] = [None] * len(rows)
    for positions in groups.values():
        inserted = await insert_rows(session, resource, [rows[i] for i in positions])
        for position, key in zip(positions, inserted, strict=True):
            keys[position] = key
    return keys


def _no_index(_index: int) -> str:
    return ""


def _index(index: int) -> str:
    return f"/{index}"


def _attribute_values(resource: Resource, item: BaseModel) -> dict[str, Any]:
    links = {j.ids_field for j in resource.id_lists}
    return {k: v for k, v in item.model_dump(exclude_unset=True).items() if k not in links}


def _same_keys(resource: Resource, rows: list[dict[str, Any]]) -> None:
    """Give every row every writable column that nothing else would fill (NULL where not
    given), so a batch is one INSERT with one column list."""
    attributes = (*resource.attributes, *resource.secrets)
    names = [a.name for a in attributes if a.writable and not a.has_default]
    for row in rows:
        for name in names:
            row.setdefault(name, None)


def _link_values(resource: Resource, item: BaseModel) -> Links:
    """The id lists the item sets (None means "not given"), without repeats."""
    values = item.model_dump(exclude_unset=True)
    return {
        j.ids_field: list(dict.fromkeys(values[j.ids_field] or []))
        for j in resource.id_lists
        if j.ids_field in values
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


async def _check_references(
    session: AsyncSession,
    resource: Resource,
    rows: Sequence[dict[str, Any]],
    links: Sequence[Links],
    prefix: Pointer,
) -> None:
    """Every foreign key and every id in every list names a row: one SELECT per field used,
    in the write's transaction; a dangling one is a 422 naming the field."""
    problems: list[ErrorItem] = []
    for attribute in resource.attributes:
        target = attribute.references
        if target is None:
            continue
        wanted = {row[attribute.name] for row in rows if row.get(attribute.name) is not None}
        missing = await missing_keys(session, target, wanted)
        problems += [
            _dangling(target, row[attribute.name], f"{prefix(index)}/{attribute.name}")
            for index, row in enumerate(rows)
            if row.get(attribute.name) in missing
        ]
    for join in resource.id_lists:
        field = join.ids_field or ""
        wanted = {t for link in links for t in link.get(field, [])}
        missing = await missing_keys(session, join.target.key, wanted)
        problems += [
            _dangling(join.target.key, target, f"{prefix(index)}/{field}/{position}")
            for index, link in enumerate(links)
            for position, target in enumerate(link.get(field, []))
            if target in missing
        ]
    if problems:
        raise InvalidBody(f"{problems[0].pointer}: {problems[0].detail}", tuple(problems[:20]))


def _dangling(key: Attribute, value: Any, pointer: str) -> ErrorItem:
    return ErrorItem(f"no {key.owner} with {key.name} {key.codec.format(value)}", pointer=pointer)


def _clash(resource: Resource, field: str, pointer: str, *, also: str | None = None) -> Conflict:
    """A unique value taken by a stored row, or (`also`) by an earlier item of the batch."""
    if also:
        detail = f"{resource.name}.{field} must be unique: {pointer} repeats {also}"
        item = f"{field} repeats {also}"
    else:
        detail = f"{resource.name}.{field} must be unique: the value at {pointer} is already taken"
        item = f"{field} is already taken"
    return Conflict(detail, (ErrorItem(item, pointer=pointer),))


def _link_tables(resource: Resource, links: Sequence[Links]) -> frozenset[str]:
    used = {field for link in links for field in link}
    return frozenset(
        j.secondary.name
        for j in resource.id_lists
        if j.ids_field in used and j.secondary is not None
    )


def _changed_tables(resource: Resource, links: Sequence[Links]) -> frozenset[str]:
    return _link_tables(resource, links) | {resource.table.name}
