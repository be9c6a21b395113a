"""A relationship as a join spec: the one place that knows how two resources link."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ARRAY,
    Column,
    ColumnElement,
    Select,
    Table,
    any_,
    bindparam,
    exists,
    func,
    select,
)
from sqlalchemy.orm import RelationshipDirection, RelationshipProperty
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.elements import BindParameter

Test = Callable[[Any], ColumnElement[bool]]
PARENT_KEYS = "parent_keys"

if TYPE_CHECKING:
    from service.schema.registry import Resource


class Kind(Enum):
    TO_ONE = "to-one"  # many-to-one or one-to-one: the source row holds the foreign key
    ONE_TO_MANY = "one-to-many"  # the target rows hold the foreign key
    MANY_TO_MANY = "many-to-many"  # a junction table holds both


class Unservable(Exception):
    """A relationship the engine cannot serve; the message says why (a start-up warning)."""


@dataclass(frozen=True, slots=True, eq=False)
class Join:
    """How the rows of `target` relate to a row of `source`, in the terms every stage needs.

    Reading children of many parents is always the same statement shape:
    `SELECT child_key, <target columns> FROM from_clause WHERE child_key IN (parent keys)`,
    where a parent's key is the value of its `parent_key` column; a filter across the
    relationship is `EXISTS (SELECT 1 FROM from_clause WHERE child_key = source.parent_key
    AND ...)`. Only a one-to-one-column link is served (composite keys are left out).
    """

    name: str
    kind: Kind
    many: bool  # a list in responses; otherwise an object or null
    parent_key: Column[Any]  # on the source table: its value identifies the link
    child_key: Column[Any]  # matched against parent keys (on the target or the junction)
    target_key: Column[Any]  # the target's column the link reaches (its primary key, as a rule)
    secondary: Table | None = None  # the junction table of a many-to-many link
    secondary_target: Column[Any] | None = None  # the junction column pointing at target_key
    ids_field: str | None = None  # the body field that writes the link (many-to-many only)
    source: Resource = field(default=None, repr=False)  # type: ignore[assignment]
    target: Resource = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def from_clause(self) -> FromClause:
        """Where a child row comes from: the target, joined through the junction if any."""
        target = self.target.table
        if self.secondary is None or self.secondary_target is None:
            return target
        return self.secondary.join(target, self.target_key == self.secondary_target)

    def children_select(self, columns: list[Any], *, array_parameter: bool) -> Select[Any]:
        """`SELECT child_key, <columns> FROM from_clause WHERE child_key IN (:parent_keys)`:
        the rows of this link for every parent of a level, in one statement.

        With `array_parameter` (PostgreSQL) the keys travel as one array, `= ANY($1)`: the
        SQL text no longer depends on how many parents there are, so the driver prepares it
        once instead of once per distinct count."""
        matches = self.owned_by_parents(array_parameter=array_parameter)
        return select(self.child_key, *columns).select_from(self.from_clause).where(matches)

    def owned_by_parents(self, *, array_parameter: bool) -> ColumnElement[bool]:
        """`child_key` among the bound parent keys (`= ANY(array)` or an expanding `IN`)."""
        owner = self.child_key
        if array_parameter:
            return owner == any_(self.parent_keys_parameter(array_parameter=True))
        return owner.in_(self.parent_keys_parameter(array_parameter=False))

    def parent_keys_parameter(self, *, array_parameter: bool) -> BindParameter[Any]:
        """The parent keys as one array parameter, or as an expanding list."""
        if array_parameter:
            return bindparam(PARENT_KEYS, type_=ARRAY(self.child_key.type))
        return bindparam(PARENT_KEYS, expanding=True)

    def count_select(self, *, array_parameter: bool) -> Select[Any]:
        """`SELECT child_key, count(*) ... GROUP BY child_key` for the bound parent keys: how
        many rows the link holds per parent, read from the junction alone when there is one."""
        owner = self.child_key
        matches = self.owned_by_parents(array_parameter=array_parameter)
        return select(owner, func.count()).where(matches).group_by(owner)

    @property
    def count_tables(self) -> frozenset[str]:
        """The tables a count of this link reads: the junction, else the target."""
        return frozenset({self.child_key.table.name})

    def exists(self, source: FromClause, test: Test) -> ColumnElement[bool]:
        """Whether a row of `source` has a linked target row passing `test(target)`; the
        target (and the junction) are aliased so nested and self-links never correlate."""
        target = self.target.table.alias()
        link, from_clause = self._linked(source, target)
        return exists(select(1).select_from(from_clause).where(link, test(target)))

    def exists_link(self, source: FromClause, test: Test) -> ColumnElement[bool]:
        """Like `exists` for a test on the target's key, which the link itself holds: a
        to-one link's foreign key is in `source`, a junction holds it; no target row read."""
        if self.kind is Kind.TO_ONE and self.parent_key.table is self.source.table:
            own: ColumnElement[bool] = test(source.c[self.parent_key.key])
            return own
        if self.secondary is None or self.secondary_target is None:
            return self.exists(source, lambda target: test(target.c[self.target_key.key]))
        junction = self.secondary.alias()
        link = junction.c[self.child_key.key] == source.c[self.parent_key.key]
        key = junction.c[self.secondary_target.key]
        return exists(select(1).select_from(junction).where(link, test(key)))

    def scope_condition(self, target: FromClause, parent_id: Any) -> ColumnElement[bool]:
        """The target rows linked to the source row whose primary key is `parent_id`."""
        parent_value: Any = parent_id  # the link's key is the parent's own key, as a rule
        if self.parent_key is not self.source.key.column:
            parent = self.source.table.alias()
            by_id = parent.c[self.source.key.column.key] == parent_id
            parent_value = select(parent.c[self.parent_key.key]).where(by_id).scalar_subquery()
        if self.secondary is None or self.secondary_target is None:
            matches: ColumnElement[bool] = target.c[self.child_key.key] == parent_value
            return matches
        junction = self.secondary
        return exists(
            select(1)
            .select_from(junction)
            .where(
                junction.c[self.child_key.key] == parent_value,
                junction.c[self.secondary_target.key] == target.c[self.target_key.key],
            )
        )

    def _linked(self, source: FromClause, target: FromClause) -> tuple[Any, FromClause]:
        """The condition tying `source` to `target`, and what to select from."""
        if self.secondary is None or self.secondary_target is None:
            return target.c[self.child_key.key] == source.c[self.parent_key.key], target
        junction = self.secondary.alias()
        from_clause = junction.join(
            target, target.c[self.target_key.key] == junction.c[self.secondary_target.key]
        )
        return junction.c[self.child_key.key] == source.c[self.parent_key.key], from_clause

    @property
    def tables(self) -> frozenset[str]:
        """The tables whose rows this link's content depends on (beyond the source's own)."""
        names = {self.target.table.name}
        if self.secondary is not None:
            names.add(self.secondary.name)
        return frozenset(names)


def join_of(relationship: RelationshipProperty[Any]) -> Join:
    """The join spec of a mapped relationship; `Unservable` when it cannot be one."""
    pairs = list(relationship.synchronize_pairs)  # (referenced column, referencing column)
    if len(pairs) != 1:
        raise Unservable("it joins on more or fewer than one column pair")
    referenced, referencing = (_column(c) for c in pairs[0])
    direction = relationship.direction
    if direction is RelationshipDirection.MANYTOONE:
        return Join(
            relationship.key,
            Kind.TO_ONE,
            many=False,
            parent_key=referencing,
            child_key=referenced,
            target_key=referenced,
        )
    if direction is RelationshipDirection.ONETOMANY:
        return Join(
            relationship.key,
            Kind.ONE_TO_MANY if relationship.uselist else Kind.TO_ONE,
            many=bool(relationship.uselist),
            parent_key=referenced,
            child_key=referencing,
            target_key=_column(relationship.mapper.primary_key[0]),
        )
    secondary_pairs = list(relationship.secondary_synchronize_pairs or ())
    if relationship.secondary is None or len(secondary_pairs) != 1:
        raise Unservable("its junction does not link one column to each side")
    target_key, secondary_target = (_column(c) for c in secondary_pairs[0])
    return Join(
        relationship.key,
        Kind.MANY_TO_MANY,
        many=True,
        parent_key=referenced,
        child_key=referencing,
        target_key=target_key,
        secondary=_table(relationship.secondary),
        secondary_target=secondary_target,
        ids_field=relationship.info.get("ids_field") or relationship.key.removesuffix("s") + "_ids",
    )


def _column(element: Any) -> Column[Any]:
    if not isinstance(element, Column):
        raise Unservable("it joins on an expression, not a column")
    return element


def _table(element: Any) -> Table:
    if not isinstance(element, Table):
        raise Unservable("its junction is not a table")
    return element
