"""Plan -> SQLAlchemy: loader options, filter conditions, ordering and keyset conditions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased, load_only, selectinload
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.expression import Executable
from sqlalchemy.sql.visitors import InternalTraversal

from service.query.params import SortKey
from service.query.plan import Condition, ListQuery, Plan, Scope
from service.query.values import Scalar, Value
from service.resources import RESOURCES, Resource


def to_load_options(plan: Plan) -> list[Any]:
    """load_only for this level, selectinload(...).load_only for each child, recursively."""
    model = RESOURCES[plan.resource].model
    options: list[Any] = [load_only(*(getattr(model, name) for name in plan.load), raiseload=True)]
    for relation, child in plan.children:
        options.append(selectinload(getattr(model, relation)).options(*to_load_options(child)))
    return options


def build_list_select(query: ListQuery) -> Select[Any]:
    """One page plus one row (to know whether there is a next page), fully loaded."""
    resource = RESOURCES[query.resource]
    model: Any = resource.model
    statement = select(model).options(*to_load_options(query.plan)).where(*where_clause(query))
    if query.after is not None:
        statement = statement.where(keyset_condition(resource, model, query.sort, query.after))
    return statement.order_by(*order_terms(resource, model, query.sort)).limit(query.limit + 1)


def build_count_select(query: ListQuery) -> Select[Any]:
    model = RESOURCES[query.resource].model
    return select(func.count()).select_from(model).where(*where_clause(query))


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

    On PostgreSQL the text columns are COLLATE "C", whose lower() folds ASCII only, so
    the fold runs under ICU's root collation (`POSTGRES_FOLD_COLLATION`), which folds like
    Python whatever locale the database was created with; SQLite's lower() is replaced by
    Python's on connect (service.db).
    """

    inherit_cache = True


@compiles(FoldCase)
def _compile_fold(element: FoldCase, compiler: SQLCompiler, **kw: Any) -> str:
    return f"lower({compiler.process(element.column, **kw)})"


FOLD_COLLATION = {"postgresql": "und-x-icu"}


def configure_case_folding(collation: str) -> None:
    """The PostgreSQL collation whose lower() matches Python's str.lower (ICU's root locale)."""
    FOLD_COLLATION["postgresql"] = collation


@compiles(FoldCase, "postgresql")
def _compile_fold_postgresql(element: FoldCase, compiler: SQLCompiler, **kw: Any) -> str:
    collation = FOLD_COLLATION["postgresql"].replace('"', "")
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
    model = RESOURCES[query.resource].model
    return Explain(select(literal(1)).select_from(model).where(*where_clause(query)))


def where_clause(query: ListQuery) -> list[ColumnElement[bool]]:
    resource = RESOURCES[query.resource]
    clauses = [to_condition(resource, resource.model, c) for c in query.filters]
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


def to_condition(resource: Resource, model: Any, condition: Condition) -> ColumnElement[bool]:
    """A filter as SQL; each relationship step is an EXISTS, so rows are never duplicated."""
    if not condition.path:
        return compare(getattr(model, condition.attribute), condition.op, condition.value)
    relationship = resource.relationship(condition.path[0])
    assert relationship is not None
    target = RESOURCES[relationship.target]
    # Aliases keep a nested EXISTS from correlating with an outer use of the same table.
    junction = relationship.junction.alias()
    inner = Condition(
        target.name, condition.path[1:], condition.attribute, condition.op, condition.value
    )
    link = junction.c[relationship.local_key] == model.id
    if not inner.path and inner.attribute == "id":
        # The junction already holds the target's id: no join needed.
        return exists().where(
            link, compare(junction.c[relationship.remote_key], inner.op, inner.value)
        )
    target_model: Any = aliased(target.model)
    test = to_condition(target, target_model, inner)
    return exists().where(link, junction.c[relationship.remote_key] == target_model.id, test)


def compare(column: Any, op: str, value: Value) -> ColumnElement[bool]:
    """One comparison; text compares by code point because the columns are binary-collated."""
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
    else:
        result = {
            "eq": column.__eq__,
            "lt": column.__lt__,
            "lte": column.__le__,
            "gt": column.__gt__,
            "gte": column.__ge__,
        }[op](value)
    return result


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def order_terms(resource: Resource, model: Any, sort: tuple[SortKey, ...]) -> list[Any]:
    """ORDER BY for the sort keys, NULL sorting as the largest value on both backends:
    last ascending (`AscendingNullsLast`), first descending."""
    terms: list[Any] = []
    for key in sort:
        attribute = resource.attribute(key.name)
        assert attribute is not None
        column = getattr(model, key.name)
        if not attribute.nullable:
            # An explicit NULLS clause would keep SQLite from using an index.
            terms.append(column.desc() if key.descending else column.asc())
        elif key.descending:
            terms.append(column.desc().nulls_first())
        else:
            terms.append(AscendingNullsLast(column))
    return terms


class AscendingNullsLast(ColumnWrapper):
    """The ORDER BY term `col ASC NULLS LAST`.

    PostgreSQL gets `col IS NULL, col`: the same order, in the shape of its
    `(col IS NULL, col, id)` indexes, which a keyset cursor then enters at its row.
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
    resource: Resource, model: Any, sort: tuple[SortKey, ...], after: tuple[Scalar | None, ...]
) -> ColumnElement[bool]:
    """Rows strictly after `after` in the sort order, NULLs counted as the largest value."""
    row = _row_after(resource, model, sort, after)
    if row is not None:
        return row
    disjuncts: list[ColumnElement[bool]] = []
    equal_so_far: list[ColumnElement[bool]] = []
    for key, value in zip(sort, after, strict=True):
        attribute = resource.attribute(key.name)
        assert attribute is not None
        column = getattr(model, key.name)
        beyond = _beyond(column, value, descending=key.descending, nullable=attribute.nullable)
        if beyond is not None:
            disjuncts.append(and_(*equal_so_far, beyond) if equal_so_far else beyond)
        equal_so_far.append(column.is_(None) if value is None else column == value)
    if not disjuncts:
        return false()
    return and_(or_(*disjuncts), *_leading_bound(resource, model, sort[0], after[0]))


def _row_after(
    resource: Resource, model: Any, sort: tuple[SortKey, ...], after: tuple[Scalar | None, ...]
) -> ColumnElement[bool] | None:
    """`(a IS NULL, a, ..., id) > (false, v, ..., x)` when every key is ascending and the
    cursor holds no NULL: one row comparison, which PostgreSQL turns into an index range
    starting at the cursor. The OR form below hides that range when the first key is an
    ascending nullable one (its NULLs come after every value), so that case uses this."""
    first = resource.attribute(sort[0].name)
    assert first is not None
    if not first.nullable or any(key.descending for key in sort) or None in after:
        return None
    columns: list[Any] = []
    values: list[Any] = []
    for key, value in zip(sort, after, strict=True):
        attribute = resource.attribute(key.name)
        assert attribute is not None
        column = getattr(model, key.name)
        if attribute.nullable:
            columns.append(column.is_(None))
            values.append(literal(False))
        columns.append(column)
        values.append(literal(value, type_=column.type))
    return tuple_(*columns) > tuple_(*values)


def _leading_bound(
    resource: Resource, model: Any, key: SortKey, value: Scalar | None
) -> list[ColumnElement[bool]]:
    """A redundant range on the first key, so PostgreSQL can start the index scan at the
    cursor instead of filtering every earlier row (the OR above hides the range from it).
    Ascending nullable keys get none: their NULLs come last and no single range holds them
    (`_row_after` serves them when it can)."""
    attribute = resource.attribute(key.name)
    assert attribute is not None
    if value is None:
        return []
    column = getattr(model, key.name)
    if key.descending:
        return [column <= value]  # NULLs sort first descending: they are all behind us
    return [] if attribute.nullable else [column >= value]


def _beyond(
    column: Any, value: Scalar | None, *, descending: bool, nullable: bool
) -> ColumnElement[bool] | None:
    """Strictly past `value` in one key's direction; None when nothing can be."""
    if value is None:
        return column.is_not(None) if descending else None
    if descending:
        result: ColumnElement[bool] = column < value
    else:
        result = or_(column > value, column.is_(None)) if nullable else column > value
    return result


def allow_large_selectin_batches(size: int) -> None:
    """Let one selectinload statement take every parent of a level (the contract is 1 + k).

    SQLAlchemy splits the parents' keys into IN lists of 500; a response is bounded by
    `max_embedded_rows`, so one statement per level holds them all (a test guards this).
    """
    from sqlalchemy.orm import strategies

    strategies._SelectInLoader._chunksize = size
