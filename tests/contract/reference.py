"""A Python model of the contract over a database's rows, derived from the registry alone.

It reads every table in full (through the Core tables, so values come back typed), and
answers what a request must return: which keys a filter keeps (SQL's NULL rules, except that
`ne` keeps NULLs; `contains`/`startswith` by `str.lower`; relationship paths as EXISTS), in
which order a sort puts them (NULL as the largest value, text by code point, enums by
declaration, false before true, the primary key as the final ascending tiebreaker), and what
a DELETE leaves behind once the foreign keys' ON DELETE rules have run.
"""

from __future__ import annotations

import copy
import enum
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import MetaData, Table, select
from sqlalchemy.ext.asyncio import create_async_engine

from service.schema import Attribute, Join, Registry, Resource

Row = dict[str, Any]  # attribute (or column) name -> stored Python value
Tables = dict[str, list[Row]]  # table name -> every row, keyed by column name
Condition = tuple[tuple[str, ...], str, Any]  # (path, operator, wanted Python value)


# --- values as the query string writes them --------------------------------------------------


def text_of(attribute: Attribute, value: Any) -> str:
    """A stored value as a filter (or a URL path segment) spells it."""
    kind = attribute.codec.name
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "number":
        return repr(float(value))
    if kind == "timestamp":
        assert isinstance(value, datetime)
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    if kind == "date":
        assert isinstance(value, date)
        return value.isoformat()
    if kind == "enum":
        return str(value.value if isinstance(value, enum.Enum) else value)
    return str(value)


def json_of(attribute: Attribute, value: Any) -> Any:
    """A stored key or foreign key as a JSON body writes it."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


# --- order and filters ----------------------------------------------------------------------


def enum_rank(attribute: Attribute, value: Any) -> int:
    """An enum value's position in the type's declaration."""
    kind: Any = attribute.column.type
    if getattr(kind, "enum_class", None) is not None:
        return list(kind.enum_class).index(value)
    return list(kind.enums).index(value)


def order_value(attribute: Attribute, value: Any) -> tuple[Any, ...]:
    """What a sort compares: NULL after every value; enums by rank; the rest as Python does
    (str by code point, False < True, UUIDs by their bytes, Decimals exactly)."""
    if value is None:
        return (1,)
    if attribute.codec.name == "enum":
        return (0, enum_rank(attribute, value))
    return (0, value)


def matches(value: Any, op: str, wanted: Any) -> bool:
    """One condition on one stored value, with SQL's NULL rules except that `ne` keeps NULLs."""
    if op == "isnull":
        return (value is None) is wanted
    if op == "ne":
        return value is None or value != wanted
    if value is None:
        return False
    if op == "contains":
        return str(wanted).lower() in str(value).lower()
    if op == "startswith":
        return str(value).lower().startswith(str(wanted).lower())
    if op == "in":
        return value in wanted
    if op == "eq":
        return bool(value == wanted)
    if op == "lt":
        return bool(value < wanted)
    if op == "lte":
        return bool(value <= wanted)
    if op == "gt":
        return bool(value > wanted)
    if op == "gte":
        return bool(value >= wanted)
    raise AssertionError(f"unknown operator {op}")


# --- the reference --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    registry: Registry
    rows: dict[str, dict[Any, Row]]  # resource -> key -> attribute values
    links: dict[tuple[str, str], dict[Any, list[Any]]]  # (resource, relationship) -> key -> keys

    def keys(self, resource: str) -> list[Any]:
        """Every key of a resource, in the primary key's order."""
        return sorted(self.rows[resource])

    def key_text(self, resource: str, key: Any) -> str:
        return text_of(self.registry[resource].key, key)

    def texts(self, resource: str, keys: Iterable[Any]) -> list[str]:
        return [self.key_text(resource, key) for key in keys]

    def related(self, resource: str, relationship: str, key: Any) -> list[Any]:
        return self.links[(resource, relationship)].get(key, [])

    def holds(self, resource: str, key: Any, path: Sequence[str], op: str, wanted: Any) -> bool:
        if len(path) == 1:
            return matches(self.rows[resource][key][path[0]], op, wanted)
        join = self.registry[resource].relationship(path[0])
        assert join is not None, path
        return any(
            self.holds(join.target.name, other, path[1:], op, wanted)
            for other in self.related(resource, path[0], key)
        )

    def select(
        self,
        resource: str,
        conditions: Sequence[Condition] = (),
        sort: Sequence[tuple[str, bool]] = (),
    ) -> list[Any]:
        """The keys a list request must return, in order."""
        keys = self.keys(resource)
        for path, op, wanted in conditions:
            keys = [k for k in keys if self.holds(resource, k, path, op, wanted)]
        return self.ordered(resource, keys, sort)

    def ordered(
        self, resource: str, keys: list[Any], sort: Sequence[tuple[str, bool]]
    ) -> list[Any]:
        """`keys` sorted by `sort` ((attribute, descending) pairs), then the key ascending."""
        served = self.registry[resource]
        keys = sorted(keys)
        for name, descending in reversed(sort):  # stable sorts, least significant first
            attribute = served.attribute(name)
            assert attribute is not None, name
            rows = self.rows[resource]
            keys.sort(key=lambda k: order_value(attribute, rows[k][name]), reverse=descending)
        return keys

    def values(self, resource: str, name: str) -> list[Any]:
        """The distinct non-NULL values an attribute holds, in sort order."""
        attribute = self.registry[resource].attribute(name)
        assert attribute is not None
        seen = {self.rows[resource][k][name] for k in self.rows[resource]} - {None}
        return sorted(seen, key=lambda v: order_value(attribute, v))


async def read_tables(url: str, metadata: MetaData) -> Tables:
    """Every row of every table of the schema, keyed by column name."""
    engine = create_async_engine(url)
    tables: Tables = {}
    try:
        async with engine.connect() as connection:
            for table in metadata.sorted_tables:
                result = await connection.execute(select(table))
                tables[table.name] = [
                    {column.name: row._mapping[column] for column in table.c} for row in result
                ]
    finally:
        await engine.dispose()
    return tables


def build_reference(registry: Registry, tables: Tables) -> Reference:
    rows: dict[str, dict[Any, Row]] = {}
    for resource in registry.values():
        rows[resource.name] = {
            raw[resource.key.column.name]: {a.name: raw[a.column.name] for a in resource.attributes}
            for raw in tables[resource.table.name]
        }
    links = {
        (resource.name, join.name): _links(resource, join, tables)
        for resource in registry.values()
        for join in resource.relationships
    }
    return Reference(registry, rows, links)


def _links(resource: Resource, join: Join, tables: Tables) -> dict[Any, list[Any]]:
    target_rows = tables[join.target.table.name]
    target_key = join.target.key.column.name
    found: dict[Any, list[Any]] = {}
    for raw in tables[resource.table.name]:
        value = raw[join.parent_key.name]
        if value is None:
            continue
        if join.secondary is None or join.secondary_target is None:
            linked = [t[target_key] for t in target_rows if t[join.child_key.name] == value]
        else:
            wanted = {
                j[join.secondary_target.name]
                for j in tables[join.secondary.name]
                if j[join.child_key.name] == value
            }
            linked = [t[target_key] for t in target_rows if t[join.target_key.name] in wanted]
        if linked:
            found[raw[resource.key.column.name]] = sorted(linked)
    return found


async def load_reference(url: str, registry: Registry, metadata: MetaData) -> Reference:
    return build_reference(registry, await read_tables(url, metadata))


# --- whole-database snapshots and the ON DELETE rules ---------------------------------------


def snapshot(tables: Tables) -> dict[str, list[str]]:
    """Every table's rows as a comparable multiset (sorted reprs)."""
    return {
        name: sorted(repr(sorted(row.items())) for row in rows) for name, rows in tables.items()
    }


class Restricted(Exception):
    """The database refuses the delete: a foreign key without ON DELETE action still refers."""


def simulate_delete(
    metadata: MetaData, tables: Tables, table: Table, key_column: str, key: Any
) -> Tables:
    """The tables after `DELETE FROM table WHERE key_column = key` and its ON DELETE rules."""
    state = copy.deepcopy(tables)

    def delete(name: str, doomed: list[Row]) -> None:
        state[name] = [row for row in state[name] if not any(row is d for d in doomed)]
        for other in metadata.sorted_tables:
            for fk in other.foreign_keys:
                if fk.column.table.name != name:
                    continue
                gone = {d[fk.column.name] for d in doomed} - {None}
                hits = [r for r in state[other.name] if r[fk.parent.name] in gone]
                if not hits:
                    continue
                action = (fk.ondelete or "").upper()
                if action == "CASCADE":
                    delete(other.name, hits)
                elif action == "SET NULL":
                    for row in hits:
                        row[fk.parent.name] = None
                else:
                    raise Restricted(f"{other.name}.{fk.parent.name} still refers")

    delete(table.name, [row for row in state[table.name] if row[key_column] == key])
    return state


def changed_rows(before: Tables, after: Tables) -> int:
    """How many rows differ between two states (a rough measure of a cascade's reach)."""
    old, new = snapshot(before), snapshot(after)
    return sum(len(set(old[name]) ^ set(new[name])) for name in old)


def decimal_of(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))
