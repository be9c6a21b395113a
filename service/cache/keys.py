"""What a cached response depends on: its canonical key and every table it read."""

from __future__ import annotations

from service.query.canonical import list_params, shape_params, to_query_string
from service.query.plan import ListQuery, Plan, plan_is_private


def plan_tables(plan: Plan) -> frozenset[str]:
    """The primary table, the tables of every include's link and target, and the tables
    each counted relationship is counted from."""
    tables = {plan.resource.table.name}
    for name, child in plan.children:
        tables |= plan.join(name).tables | plan_tables(child)
    for name in plan.counts:
        tables |= plan.join(name).count_tables
    return frozenset(tables)


def query_tables(query: ListQuery) -> tuple[str, ...]:
    """Every table a list response depends on, filters and sub-collection scope included."""
    tables = set(plan_tables(query.plan))
    for condition in query.filters:
        for join in condition.joins:
            tables |= join.tables
    if query.scope is not None:
        tables |= {query.scope.parent.table.name, *query.scope.join.tables}
    return tuple(sorted(tables))


def list_key(query: ListQuery, *, path: str, access: str) -> str:
    """The canonical request, plus the caller's access class when the response is private."""
    params = list_params(query)
    if query.cursor is not None:
        params.append(("cursor", query.cursor))
    key = f"{path}?{to_query_string(params)}"
    return f"{key}|{access}" if query.private else key


def item_key(plan: Plan, *, path: str, access: str) -> str:
    key = f"{path}?{to_query_string(shape_params(plan))}"
    return f"{key}|{access}" if plan_is_private(plan) else key
