"""Rows + plan -> JSON bytes, touching only planned attributes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from service.errors import InvalidParameter
from service.query.params import Count
from service.query.plan import ListQuery, Plan
from service.query.values import Scalar
from service.repository import Page

JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


class EmbeddedBudget:
    """Counts embedded rows; past the limit the client is sent to the sub-collection endpoint."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def take(self, count: int, owner: str, relation: str) -> None:
        self.left -= count
        if self.left < 0:
            raise InvalidParameter(
                "include",
                f"the response would embed more than {self.limit} rows; page through "
                f"/{owner}/{{id}}/{relation} instead",
            )


def to_item(row: Any, plan: Plan, budget: EmbeddedBudget) -> dict[str, Any]:
    item = {name: getattr(row, name) for name in plan.output}
    for relation, child in plan.children:
        related = getattr(row, relation)
        budget.take(len(related), plan.resource, relation)
        item[relation] = [to_item(other, child, budget) for other in related]
    return item


def render_list(
    page: Page,
    query: ListQuery,
    *,
    next_cursor: str | None,
    next_link: str | None,
    max_embedded: int,
) -> bytes:
    budget = EmbeddedBudget(max_embedded)
    meta: dict[str, Any] = {"next_cursor": next_cursor}
    if page.total is not None:
        meta["total"] = page.total
    if query.count is Count.ESTIMATED:
        meta["estimated"] = page.estimated
    envelope = {
        "data": [to_item(row, query.plan, budget) for row in page.rows],
        "meta": meta,
        "links": {"next": next_link},
    }
    return orjson.dumps(envelope, option=JSON_OPTIONS)


def render_items(rows: Sequence[Any], plan: Plan, *, single: bool, max_embedded: int) -> bytes:
    """`{"data": item}` for one row asked by id, `{"data": [items]}` for a batch."""
    budget = EmbeddedBudget(max_embedded)
    items = [to_item(row, plan, budget) for row in rows]
    return orjson.dumps({"data": items[0] if single else items}, option=JSON_OPTIONS)


def sort_values(row: Any, query: ListQuery) -> tuple[Scalar | None, ...]:
    """The last row's sort key values, which the next page's cursor carries."""
    return tuple(getattr(row, key.name) for key in query.sort)
