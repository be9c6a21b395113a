"""The resource registry, derived from a declarative base's mappers: nothing declared twice."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Table, UniqueConstraint, inspect
from sqlalchemy.orm import DeclarativeBase, Mapper

from service.schema.codecs import Codec, codec_for
from service.schema.joins import Join, Kind, Unservable, join_of

logger = logging.getLogger("service.schema")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# Paths the service itself answers: a resource may not take them.
RESERVED = frozenset({"healthz", "readyz", "metrics", "docs", "redoc", "openapi.json"})
# The OpenAPI document's own schema names, and the suffixes of a resource's schemas.
RESERVED_SCHEMAS = frozenset({"Problem", "Explain"})
SCHEMA_SUFFIXES = ("", "List", "Item", "Batch", "Create", "Update")
_KEY_TYPES = frozenset({"integer", "string", "uuid"})


class SchemaError(Exception):
    """The models cannot be served at all; the message names the reason."""


@dataclass(frozen=True, slots=True, eq=False)
class Attribute:
    """One column as the API sees it."""

    name: str  # the mapped attribute's name
    column: Column[Any]
    codec: Codec
    owner: str  # the resource's name
    nullable: bool = False
    private: bool = False  # returned, filtered and sorted only for token holders
    writable: bool = True  # False: set by the server (a generated key, `read_only`)
    unique: bool = False
    has_default: bool = False  # the database or the model fills it when not given
    references: Attribute | None = field(default=None, repr=False)  # a foreign key's target key

    @property
    def required(self) -> bool:
        """Required on create: writable, not nullable, and nothing fills it otherwise."""
        return self.writable and not self.nullable and not self.has_default


@dataclass(frozen=True, slots=True, eq=False)
class Resource:
    """One served model: its attributes, its key, its relationships as join specs."""

    name: str
    model: type[Any]
    table: Table
    key: Attribute  # the primary key
    attributes: tuple[Attribute, ...]  # what a caller may name, in mapper order
    secrets: tuple[Attribute, ...] = ()  # write-only: stored as an argon2id hash, never read
    schema_name: str = ""  # its OpenAPI schemas' name: the class name, unless that clashes
    relationships: tuple[Join, ...] = ()
    # The tables a DELETE of one row can change: its own, and every table the database
    # cascades it to (ON DELETE CASCADE / SET NULL / SET DEFAULT), transitively.
    delete_tables: frozenset[str] = frozenset()
    _by_name: dict[str, Attribute] = field(default_factory=dict, repr=False)
    _joins: dict[str, Join] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update((a.name, a) for a in self.attributes)
        self._joins.update((j.name, j) for j in self.relationships)

    def attribute(self, name: str) -> Attribute | None:
        return self._by_name.get(name)

    def relationship(self, name: str) -> Join | None:
        return self._joins.get(name)

    @property
    def id_lists(self) -> tuple[Join, ...]:
        """The relationships a body writes as a list of target keys (many-to-many ones)."""
        return tuple(join for join in self.relationships if join.ids_field is not None)

    def visible_attributes(self, *, private: bool) -> tuple[str, ...]:
        """What a caller may name: private attributes only with a token."""
        return tuple(a.name for a in self.attributes if private or not a.private)


@dataclass(frozen=True, slots=True, eq=False)
class Registry(Mapping[str, Resource]):
    """Every served resource by name, and what was left out at start-up and why."""

    resources: dict[str, Resource]
    left_out: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> Resource:
        return self.resources[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.resources)

    def __len__(self) -> int:
        return len(self.resources)

    def __contains__(self, name: object) -> bool:  # every read asks: the dict's own, not Mapping's
        return name in self.resources

    def by_table(self, table: str) -> Resource | None:
        return next((r for r in self.resources.values() if r.table.name == table), None)


def build_registry(base: type[DeclarativeBase]) -> Registry:
    """Every class mapped on `base` as a resource; what cannot be served is left out with a
    warning, and `SchemaError` when nothing remains or a named resource cannot be served."""
    left_out: list[str] = []
    resources: dict[str, Resource] = {}
    for mapper in _mappers(base):
        named = "__resource__" in mapper.class_.__dict__
        try:
            resource = _resource(mapper)
        except Unservable as exc:
            reason = f"{mapper.class_.__name__} is left out: {exc}"
            if named:
                raise SchemaError(reason) from None
            left_out.append(reason)
            continue
        if resource.name in resources:
            raise SchemaError(f"two classes are served as {resource.name!r}; set __resource__")
        resources[resource.name] = resource
    if not resources:
        raise SchemaError(f"no class mapped on {base.__name__} can be served")
    for resource in resources.values():
        joins = tuple(_relationships(resource, resources, left_out))
        object.__setattr__(resource, "relationships", joins)
        object.__setattr__(resource, "delete_tables", cascaded_tables(resource.table))
        resource._joins.update((j.name, j) for j in joins)
        for attribute in (*resource.attributes, *resource.secrets):
            object.__setattr__(attribute, "references", _referenced_key(attribute, resources))
    _name_schemas(resources.values())
    for reason in left_out:
        logger.warning(reason)
    return Registry(resources, tuple(left_out))


def _name_schemas(resources: Iterable[Resource]) -> None:
    """Each resource's OpenAPI schema name (`User`, then `UserList`, `UserCreate`, ...): its
    class name, or, where one of those would clash with the document's own schemas or with
    another resource's, its resource name in CamelCase with `Resource` (numbered if need be)."""
    taken = set(RESERVED_SCHEMAS)
    for resource in resources:
        candidates = [resource.model.__name__]
        camel = "".join(part.capitalize() for part in resource.name.split("_"))
        candidates += [f"{camel}Resource{n or ''}" for n in range(len(taken) + 1)]
        name = next(c for c in candidates if not {c + s for s in SCHEMA_SUFFIXES} & taken)
        taken.update(name + suffix for suffix in SCHEMA_SUFFIXES)
        object.__setattr__(resource, "schema_name", name)


def _mappers(base: type[DeclarativeBase]) -> list[Mapper[Any]]:
    """The base's mappers in the order their tables were defined (the registry keeps a set)."""
    order = {table.name: index for index, table in enumerate(base.metadata.tables.values())}
    mappers = [m for m in base.registry.mappers if isinstance(m.local_table, Table)]
    return sorted(mappers, key=lambda m: order.get(str(getattr(m.local_table, "name", "")), 0))


def _resource(mapper: Mapper[Any]) -> Resource:
    cls = mapper.class_
    table = mapper.local_table
    assert isinstance(table, Table)
    name = str(cls.__dict__.get("__resource__") or table.name)
    if not _NAME.match(name) or name in RESERVED:
        raise Unservable(f"{name!r} cannot be a URL path segment of its own")
    if mapper.inherits is not None or mapper.single:
        raise Unservable("mapped inheritance is not supported")
    if len(mapper.primary_key) != 1:
        raise Unservable("its primary key is not one column")
    unique = _unique_columns(table)
    attributes: list[Attribute] = []
    secrets: list[Attribute] = []
    for prop in mapper.column_attrs:
        if len(prop.columns) != 1 or not isinstance(prop.columns[0], Column):
            continue  # a column_property expression or a composite: not a stored column
        column = prop.columns[0]
        info = column.info
        if info.get("hidden"):
            continue
        codec = codec_for(column)
        if codec is None:
            if column.primary_key:
                raise Unservable(f"its primary key's type {column.type!r} is not served")
            logger.warning(
                "%s.%s is left out: its type %r is not served", name, prop.key, column.type
            )
            continue
        attribute = _attribute(name, prop.key, column, codec, unique=column in unique)
        (secrets if info.get("write_only") else attributes).append(attribute)
    key = next((a for a in attributes if a.column.primary_key), None)
    if key is None or key.codec.name not in _KEY_TYPES:
        raise Unservable("its primary key must be an integer, string or UUID attribute")
    return Resource(name, cls, table, key, tuple(attributes), tuple(secrets))


def _attribute(
    owner: str, name: str, column: Column[Any], codec: Codec, *, unique: bool
) -> Attribute:
    filled = column.default is not None or column.server_default is not None
    autoincrement = codec.name == "integer" and column.autoincrement in (True, "auto")
    # A key the service or the database makes (a sequence, a default) is not the client's.
    generated = bool(column.primary_key) and (filled or autoincrement)
    filled = filled or generated
    return Attribute(
        name,
        column,
        codec,
        owner,
        nullable=bool(column.nullable) and not column.primary_key,
        private=bool(column.info.get("private")),
        writable=not (column.info.get("read_only") or generated or column.computed is not None),
        unique=unique or bool(column.primary_key),
        has_default=filled,
    )


def _referenced_key(attribute: Attribute, resources: dict[str, Resource]) -> Attribute | None:
    """The key attribute a foreign key column points at, when that resource is served."""
    keys = [fk.column for fk in attribute.column.foreign_keys]
    if len(keys) != 1:
        return None
    return next((r.key for r in resources.values() if r.key.column is keys[0]), None)


def cascaded_tables(table: Table) -> frozenset[str]:
    """`table` and every table whose rows a DELETE on it changes through foreign keys."""
    changed = {table.name}
    pending = [table]
    while pending:
        current = pending.pop()
        for other in current.metadata.tables.values():
            for fk in other.foreign_keys:
                action = (fk.ondelete or "").upper()
                if fk.column.table is current and action in _CASCADES and other.name not in changed:
                    changed.add(other.name)
                    if action == "CASCADE":
                        pending.append(other)
    return frozenset(changed)


_CASCADES = frozenset({"CASCADE", "SET NULL", "SET DEFAULT"})


def _unique_columns(table: Table) -> set[Column[Any]]:
    columns = {c for c in table.columns if c.unique}
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and len(constraint.columns) == 1:
            columns |= set(constraint.columns)
    return columns


def _relationships(
    resource: Resource, resources: dict[str, Resource], left_out: list[str]
) -> Iterator[Join]:
    by_model = {r.model: r for r in resources.values()}
    for relationship in inspect(resource.model).relationships:
        where = f"{resource.name}.{relationship.key}"
        target = by_model.get(relationship.mapper.class_)
        if target is None:
            left_out.append(
                f"{where} is left out: {relationship.mapper.class_.__name__} is not served"
            )
            continue
        try:
            join = join_of(relationship)
        except Unservable as exc:
            left_out.append(f"{where} is left out: {exc}")
            continue
        if join.kind is Kind.MANY_TO_MANY and not (
            join.parent_key is resource.key.column and join.target_key is target.key.column
        ):
            left_out.append(f"{where} is left out: its junction does not hold both primary keys")
            continue
        object.__setattr__(join, "source", resource)
        object.__setattr__(join, "target", target)
        yield join
