"""Plan -> Core SELECTs of plain columns: the same SQL selectinload would run, without entities."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select

from service.query.options import keyset_condition, order_terms, where_clause
from service.query.plan import ListQuery, Plan
from service.schema import Join
from service.schema.joins import PARENT_KEYS

__all__ = ["PARENT_KEYS", "build_children_select", "build_count_select", "build_page_select"]


def build_page_select(query: ListQuery) -> Select[Any]:
    """The page's own columns (`plan.load`), filtered, ordered, one row past the limit."""
    resource = query.resource
    statement = select(*query.plan.load).where(*where_clause(query))
    if query.after is not None:
        statement = statement.where(keyset_condition(resource, query.sort, query.after))
    return statement.order_by(*order_terms(resource, query.sort)).limit(query.limit + 1)


def build_children_select(
    join: Join, child: Plan, array_parameter: bool = False, counted: bool = False
) -> Select[Any]:
    """The rows of `join` for every parent of a level, with their owner's key first, each
    parent's rows in the list's order: one statement per include path, whatever the page
    size. With `limit[path]` only each parent's first rows come back, and with `counted`
    (a cut list that is also counted) each row ends with its parent's total."""
    if child.limit is None:
        statement = join.children_select(list(child.load), array_parameter=array_parameter)
        return statement.order_by(*order_terms(child.resource, child.sort))
    return _top_per_parent(join, child, array_parameter=array_parameter, counted=counted)


def build_count_select(join: Join, array_parameter: bool = False) -> Select[Any]:
    """How many rows `join` holds for each parent of a level (a counted path not included)."""
    return join.count_select(array_parameter=array_parameter)


def _top_per_parent(
    join: Join, child: Plan, *, array_parameter: bool, counted: bool
) -> Select[Any]:
    """`row_number() OVER (PARTITION BY owner ORDER BY <sort>)`, kept while <= n; the count,
    when asked, is `count(*)` over the same partition. On both backends: it reads each
    parent's rows once, whatever the planner guesses, where PostgreSQL's LATERAL ... LIMIT n
    measured 3.3x slower, walking the sort key's index across the whole target table
    (docs/performance.md, "Embedded lists")."""
    owner = join.child_key
    resource = child.resource
    parent_at, rank_at, total_at = (_free(name, child) for name in ("parent", "rank", "total"))
    ranked_columns: list[Any] = [
        owner.label(parent_at),
        *child.load,
        func.row_number()
        .over(partition_by=owner, order_by=order_terms(resource, child.sort))
        .label(rank_at),
    ]
    if counted:
        ranked_columns.append(func.count().over(partition_by=owner).label(total_at))
    ranked = (
        select(*ranked_columns)
        .select_from(join.from_clause)
        .where(join.owned_by_parents(array_parameter=array_parameter))
        .subquery("ranked")
    )
    selected = [ranked.c[parent_at], *(ranked.c[c.key] for c in child.load)]
    if counted:
        selected.append(ranked.c[total_at])
    return (
        select(*selected)
        .where(ranked.c[rank_at] <= child.limit)
        .order_by(ranked.c[parent_at], ranked.c[rank_at])
    )


def _free(name: str, plan: Plan) -> str:
    """A label for a computed column that no column of the plan's table already uses."""
    taken = plan.resource.table.c
    while name in taken:
        name = f"_{name}"
    return name
