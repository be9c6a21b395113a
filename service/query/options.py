"""Plan -> SQLAlchemy: loader options, filter conditions, ordering and keyset conditions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select
from sqlalchemy.orm import aliased, load_only, selectinload
from sqlalchemy.sql.elements import UnaryExpression

from service.query.params import SortKey
from service.query.plan import Condition, ListQuery, Plan, Scope
from service.query.values import Scalar, Value
from service.resources import RESOURCES, AttrType, Resource


def to_load_options(plan: Plan) -> list[Any]:
    """load_only for this level, selectinload(...).load_only for each child, recursively."""
    model = RESOURCES[plan.resource].model
    options: list[Any] = [load_only(*(getattr(model, name) for name in plan.load), raiseload=True)]
    for relation, child in plan.children:
        options.append(selectinload(getattr(model, relation)).options(*to_load_options(child)))
    return options


def build_list_select(query: ListQuery, *, dialect: str) -> Select[Any]:
    """One page plus one row (to know whether there is a next page), fully loaded."""
    resource = RESOURCES[query.resource]
    model: Any = resource.model
    statement = (
        select(model)
        .options(*to_load_options(query.plan))
        .where(*where_clause(query, dialect=dialect))
    )
    if query.after is not None:
        statement = statement.where(
            keyset_condition(resource, model, query.sort, query.after, dialect=dialect)
        )
    order = [_order_term(resource, model, key, dialect=dialect) for key in query.sort]
    return statement.order_by(*order).limit(query.limit + 1)


def build_count_select(query: ListQuery, *, dialect: str) -> Select[Any]:
    model = RESOURCES[query.resource].model
    return select(func.count()).select_from(model).where(*where_clause(query, dialect=dialect))


def where_clause(query: ListQuery, *, dialect: str) -> list[ColumnElement[bool]]:
    resource = RESOURCES[query.resource]
    clauses = [to_condition(resource, resource.model, c, dialect=dialect) for c in query.filters]
    if query.scope is not None:
        clauses.append(scope_condition(resource, query.scope))
    return clauses


def scope_condition(resource: Resource, scope: Scope) -> ColumnElement[bool]:
    """Rows linked to the parent, straight through the junction table (its keys are indexed)."""
    relationship = RESOURCES[scope.parent].relationship(scope.relationship)
    assert relationship is not None
    junction = relationship.junction
    model: Any = resource.model
    return exists().where(
        junction.c[relationship.local_key] == scope.parent_id,
        junction.c[relationship.remote_key] == model.id,
    )


def to_condition(
    resource: Resource, model: Any, condition: Condition, *, dialect: str
) -> ColumnElement[bool]:
    """A filter as SQL; each relationship step is an EXISTS, so rows are never duplicated."""
    if not condition.path:
        attribute = resource.attribute(condition.attribute)
        assert attribute is not None
        column = getattr(model, condition.attribute)
        return compare(column, attribute.type, condition.op, condition.value, dialect=dialect)
    relationship = resource.relationship(condition.path[0])
    assert relationship is not None
    target = RESOURCES[relationship.target]
    junction = relationship.junction.alias()
    inner = Condition(
        target.name, condition.path[1:], condition.attribute, condition.op, condition.value
    )
    link = junction.c[relationship.local_key] == model.id
    if not inner.path and inner.attribute == "id":
        # The junction already holds the target's id: no join needed.
        test = compare(
            junction.c[relationship.remote_key],
            AttrType.INTEGER,
            inner.op,
            inner.value,
            dialect=dialect,
        )
        return exists().where(link, test)
    target_model: Any = aliased(target.model)
    test = to_condition(target, target_model, inner, dialect=dialect)
    return exists().where(link, junction.c[relationship.remote_key] == target_model.id, test)


def compare(
    column: Any, kind: AttrType, op: str, value: Value, *, dialect: str
) -> ColumnElement[bool]:
    if op == "isnull":
        is_null: ColumnElement[bool] = column.is_(None) if value else column.is_not(None)
        return is_null
    if op in ("contains", "startswith"):
        assert isinstance(value, str)
        pattern = _escape_like(value.lower())
        pattern = f"%{pattern}%" if op == "contains" else f"{pattern}%"
        matched: ColumnElement[bool] = func.lower(column).like(pattern, escape="\\")
        return matched
    if op == "in":
        assert isinstance(value, tuple)
        return column.in_(value)  # type: ignore[no-any-return]
    if op == "ne":
        return or_(column != value, column.is_(None))
    ordered = _collated(column, kind, dialect)
    operations = {
        "eq": lambda: column == value,
        "lt": lambda: ordered < value,
        "lte": lambda: ordered <= value,
        "gt": lambda: ordered > value,
        "gte": lambda: ordered >= value,
    }
    return operations[op]()  # type: ignore[no-any-return]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _collated(column: Any, kind: AttrType, dialect: str) -> Any:
    """Text compares by code point on both backends (SQLite's default is already binary)."""
    if kind is AttrType.STRING and dialect == "postgresql":
        return column.collate("C")
    return column


def _order_term(
    resource: Resource, model: Any, key: SortKey, *, dialect: str
) -> UnaryExpression[Any]:
    attribute = resource.attribute(key.name)
    assert attribute is not None
    column = _collated(getattr(model, key.name), attribute.type, dialect)
    term = column.desc() if key.descending else column.asc()
    if not attribute.nullable:
        return term  # type: ignore[no-any-return]  # an explicit NULLS clause would stop SQLite using an index
    # NULL sorts as the largest value: last ascending, first descending, on both backends.
    return term.nulls_first() if key.descending else term.nulls_last()  # type: ignore[no-any-return]


def keyset_condition(
    resource: Resource,
    model: Any,
    sort: tuple[SortKey, ...],
    after: tuple[Scalar | None, ...],
    *,
    dialect: str,
) -> ColumnElement[bool]:
    """Rows strictly after `after` in the sort order, NULLs counted as the largest value."""
    disjuncts: list[ColumnElement[bool]] = []
    equal_so_far: list[ColumnElement[bool]] = []
    for key, value in zip(sort, after, strict=True):
        attribute = resource.attribute(key.name)
        assert attribute is not None
        column = _collated(getattr(model, key.name), attribute.type, dialect)
        beyond = _beyond(column, value, descending=key.descending, nullable=attribute.nullable)
        if beyond is not None:
            disjuncts.append(and_(*equal_so_far, beyond) if equal_so_far else beyond)
        equal_so_far.append(column.is_(None) if value is None else column == value)
    return or_(*disjuncts) if disjuncts else false()


def _beyond(
    column: Any, value: Scalar | None, *, descending: bool, nullable: bool
) -> ColumnElement[bool] | None:
    if value is None:
        return column.is_not(None) if descending else None
    if descending:
        return column < value  # type: ignore[no-any-return]
    return or_(column > value, column.is_(None)) if nullable else column > value


def allow_large_selectin_batches(size: int) -> None:
    """Let one selectinload statement take every parent of a level (the contract is 1 + k).

    SQLAlchemy splits the parents' keys into IN lists of 500; a response is bounded by
    `max_embedded_rows`, so one statement per level holds them all (a test guards this).
    """
    from sqlalchemy.orm import strategies

    strategies._SelectInLoader._chunksize = size
