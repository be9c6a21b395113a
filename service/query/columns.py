"""Plan -> Core SELECTs of plain columns: the same SQL selectinload would run, without entities."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from service.query.options import keyset_condition, order_terms, where_clause
from service.query.plan import ListQuery, Plan
from service.schema import Join
from service.schema.joins import PARENT_KEYS

__all__ = ["PARENT_KEYS", "build_children_select", "build_page_select"]


def build_page_select(query: ListQuery) -> Select[Any]:
    """The page's own columns (`plan.load`), filtered, ordered, one row past the limit."""
    resource = query.resource
    statement = select(*query.plan.load).where(*where_clause(query))
    if query.after is not None:
        statement = statement.where(keyset_condition(resource, query.sort, query.after))
    return statement.order_by(*order_terms(resource, query.sort)).limit(query.limit + 1)


def build_children_select(join: Join, child: Plan, array_parameter: bool = False) -> Select[Any]:
    """The rows of `join` for every parent of a level, with their owner's key first, in the
    target's key order: one statement per include path, whatever the page size."""
    key = child.resource.key
    statement = join.children_select(list(child.load), array_parameter=array_parameter)
    return statement.order_by(key.codec.order_key(key.column))
