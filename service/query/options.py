"""Plan -> SQLAlchemy: loader options, filter conditions, ordering and keyset conditions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import load_only, selectinload
from sqlalchemy.sql import FromClause
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.visitors import InternalTraversal

from service.db import FOLD_COLLATION_ATTRIBUTE
from service.query.params import SortKey
from service.query.plan import Condition, ListQuery, Plan
from service.query.values import Value
from service.schema import Attribute, Join, Resource
from service.schema.codecs import Scalar

# The ICU root collation folds case like Python's str.lower; an engine may name another
# (`POSTGRES_FOLD_COLLATION`) on its dialect, read when a statement is compiled.
FOLD_COLLATION = "und-x-icu"


def to_load_options(plan: Plan) -> list[Any]:
    """load_only for this level, selectinload(...).load_only for each child, recursively."""
    model = plan.resource.model
    mapper = plan.resource.model.__mapper__
    attributes = [mapper.get_property_by_column(column).class_attribute for column in plan.load]
    options: list[Any] = [load_only(*attributes, raiseload=True)]
    for relation, child in plan.children:
        options.append(selectinload(getattr(model, relation)).options(*to_load_options(child)))
    return options


def build_list_select(query: ListQuery) -> Select[Any]:
    """One page plus one row (to know whether there is a next page), fully loaded."""
    resource = query.resource
    statement = (
        select(resource.model).options(*to_load_options(query.plan)).where(*where_clause(query))
    )
    if query.after is not None:
        statement = statement.where(keyset_condition(resource, query.sort, query.after))
    return statement.order_by(*order_terms(resource, query.sort)).limit(query.limit + 1)


def build_count_select(query: ListQuery) -> Select[Any]:
    return select(func.count()).select_from(query.resource.table).where(*where_clause(query))


class ColumnWrapper(ColumnElement[Any]):
    """An SQL construct around one column, compiled per backend by `@compiles` functions.

    The column counts in SQLAlchemy's cache key, so statements using it stay cacheable and
    two columns never share compiled SQL."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, column: Any) -> None:
        self.column = column
        self.type = column.type


class FoldCase(ColumnWrapper):
    """Unicode lower-casing on both backends.

    On PostgreSQL, lower() under a "C" collation folds ASCII only, so the fold runs under
    ICU's root collation (or the engine's `POSTGRES_FOLD_COLLATION`), which folds like
    Python whatever locale the database was created with; SQLite's lower() is replaced by
    Python's on connect (service.db).
    """

    inherit_cache = True


@compiles(FoldCase)
def _compile_fold(element: FoldCase, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.column, **kw)})"


@compiles(FoldCase, "postgresql")
def _compile_fold_postgresql(element: FoldCase, compiler: SQLCompiler, **kw: Any) -> str:
    collation = getattr(compiler.dialect, FOLD_COLLATION_ATTRIBUTE, FOLD_COLLATION)
    collation = collation.replace('"', "")
    return f'lower({compiler.process(element.column, **kw)} COLLATE "{collation}")'


class Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON) <select>`: the planner's row estimate, without running the query."""

    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


def build_estimate(query: ListQuery) -> Explain:
    statement = select(literal(1)).select_from(query.resource.table).where(*where_clause(query))
    return Explain(statement)


def where_clause(query: ListQuery) -> list[ColumnElement[bool]]:
    table = query.resource.table
    clauses = [to_condition(table, condition.joins, condition) for condition in query.filters]
    if query.scope is not None:
        clauses.append(query.scope.join.scope_condition(table, query.scope.parent_id))
    return clauses


def to_condition(
    source: FromClause, joins: tuple[Join, ...], condition: Condition
) -> ColumnElement[bool]:
    """A filter as SQL; each relationship crossed is an EXISTS, so rows are never duplicated."""
    attribute, op, value = condition.attribute, condition.op, condition.value
    if not joins:
        return compare(source.c[attribute.column.key], attribute, op, value)
    join, rest = joins[0], joins[1:]
    if not rest and attribute is join.target.key:
        # The link itself holds the target's key (a junction, or a to-one foreign key).
        return join.exists_link(source, lambda key: compare(key, attribute, op, value))
    return join.exists(source, lambda target: to_condition(target, rest, condition))


def compare(column: Any, attribute: Attribute, op: str, value: Value) -> ColumnElement[bool]:
    """One comparison; ranges compare the codec's order (text by code point on both backends)."""
    codec = attribute.codec
    result: ColumnElement[bool]
    if op == "isnull":
        result = column.is_(None) if value else column.is_not(None)
    elif op in ("contains", "startswith"):
        assert isinstance(value, str)
        pattern = _escape_like(value.lower())
        pattern = f"%{pattern}%" if op == "contains" else f"{pattern}%"
        result = FoldCase(column).like(pattern, escape="\\")
    elif op == "in":
        assert isinstance(value, tuple)
        result = column.in_(value)
    elif op == "ne":
        result = or_(column != value, column.is_(None))  # NULL is "not equal" to a value too
    elif op == "eq":
        result = column == value
    else:
        key, bound = codec.order_key(column), codec.order_value(value)
        comparisons = {"lt": key.__lt__, "lte": key.__le__, "gt": key.__gt__, "gte": key.__ge__}
        result = comparisons[op](bound)
    return result


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def order_terms(
    resource: Resource, sort: tuple[SortKey, ...], source: FromClause | None = None
) -> list[Any]:
    """ORDER BY for the sort keys, NULL sorting as the largest value on both backends:
    last ascending (`AscendingNullsLast`), first descending. `source`: a subquery holding
    the resource's columns, to order by its copies of them."""
    terms: list[Any] = []
    for key in sort:
        attribute = _sorted(resource, key)
        own = attribute.column if source is None else source.c[attribute.column.key]
        column = attribute.codec.order_key(own)
        if not attribute.nullable:
            # An explicit NULLS clause would keep SQLite from using an index.
            terms.append(column.desc() if key.descending else column.asc())
        elif key.descending:
            terms.append(column.desc().nulls_first())
        else:
            terms.append(AscendingNullsLast(column))
    return terms


def _sorted(resource: Resource, key: SortKey) -> Attribute:
    attribute = resource.attribute(key.name)
    assert attribute is not None
    return attribute


class AscendingNullsLast(ColumnWrapper):
    """The ORDER BY term `col ASC NULLS LAST`.

    PostgreSQL gets `col IS NULL, col`: the same order, in the shape of the
    `(col IS NULL, col, id)` indexes a keyset cursor can then enter at its row.
    SQLite keeps the plain form: its index on `col` serves it, and it would not range over
    an expression index with a row value anyway.
    """

    inherit_cache = True


@compiles(AscendingNullsLast)
def _compile_nulls_last(element: AscendingNullsLast, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} ASC NULLS LAST"


@compiles(AscendingNullsLast, "postgresql")
def _compile_nulls_last_postgresql(
    element: AscendingNullsLast, compiler: SQLCompiler, **kw: Any
) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} IS NULL, {column}"


def keyset_condition(
    resource: Resource, sort: tuple[SortKey, ...], after: tuple[Scalar | None, ...]
) -> ColumnElement[bool]:
    """Rows strictly after `after` in the sort order, NULLs counted as the largest value."""
    row = _row_after(resource, sort, after)
    if row is not None:
        return row
    disjuncts: list[ColumnElement[bool]] = []
    equal_so_far: list[ColumnElement[bool]] = []
    for key, value in zip(sort, after, strict=True):
        attribute = _sorted(resource, key)
        column = attribute.codec.order_key(attribute.column)
        bound = None if value is None else attribute.codec.order_value(value)
        beyond = _beyond(column, bound, descending=key.descending, nullable=attribute.nullable)
        if beyond is not None:
            disjuncts.append(and_(*equal_so_far, beyond) if equal_so_far else beyond)
        equal_so_far.append(column.is_(None) if value is None else column == bound)
    if not disjuncts:
        return false()
    return and_(or_(*disjuncts), *_leading_bound(resource, sort[0], after[0]))


def _row_after(
    resource: Resource, sort: tuple[SortKey, ...], after: tuple[Scalar | None, ...]
) -> ColumnElement[bool] | None:
    """`(a IS NULL, a, ..., id) > (false, v, ..., x)` when every key is ascending and the
    cursor holds no NULL: one row comparison, which PostgreSQL turns into an index range
    starting at the cursor. The OR form below hides that range when the first key is an
    ascending nullable one (its NULLs come after every value), so that case uses this."""
    first = _sorted(resource, sort[0])
    if not first.nullable or any(key.descending for key in sort) or None in after:
        return None
    columns: list[Any] = []
    values: list[Any] = []
    for key, value in zip(sort, after, strict=True):
        attribute = _sorted(resource, key)
        column = attribute.codec.order_key(attribute.column)
        if attribute.nullable:
            columns.append(column.is_(None))
            values.append(literal(False))
        columns.append(column)
        values.append(literal(attribute.codec.order_value(value), type_=column.type))
    return tuple_(*columns) > tuple_(*values)


def _leading_bound(resource: Resource, key: SortKey, value: Scalar | None) -> list[Any]:
    """A redundant range on the first key, so PostgreSQL can start the index scan at the
    cursor instead of filtering every earlier row (the OR above hides the range from it).
    Ascending nullable keys get none: their NULLs come last and no single range holds them
    (`_row_after` serves them when it can)."""
    attribute = _sorted(resource, key)
    if value is None:
        return []
    column = attribute.codec.order_key(attribute.column)
    bound = attribute.codec.order_value(value)
    if key.descending:
        return [column <= bound]  # NULLs sort first descending: they are all behind us
    return [] if attribute.nullable else [column >= bound]


def _beyond(
    column: Any, value: Any, *, descending: bool, nullable: bool
) -> ColumnElement[bool] | None:
    """Strictly past `value` in one key's direction; None when nothing can be."""
    if value is None:
        return column.is_not(None) if descending else None
    if descending:
        result: ColumnElement[bool] = column < value
    else:
        result = or_(column > value, column.is_(None)) if nullable else column > value
    return result
