"""Plan -> Core SELECTs of plain columns: the same SQL selectinload would run, without entities."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import ARRAY, Integer, Select, Table, any_, bindparam, select

from service.query.options import keyset_condition, order_terms, where_clause
from service.query.plan import ListQuery, Plan
from service.resources import RESOURCES

PARENT_IDS = "parent_ids"


def table_of(resource_name: str) -> Table:
    table: Table = RESOURCES[resource_name].model.__table__  # type: ignore[assignment]
    return table


# Statements are immutable, so one per distinct query is shared by every request that asks
# it: building costs ~25-50 us, and SQLAlchemy computes a statement's cache key only once.
# Kept for the hot queries only: each holds ~6 KB, and cursors make most pages distinct.
_STATEMENTS = 512


@lru_cache(maxsize=_STATEMENTS)
def page_select(query: ListQuery) -> Select[Any]:
    return build_page_select(query)


@lru_cache(maxsize=_STATEMENTS)
def children_select(
    parent: str, relation: str, child: Plan, *, array_parameter: bool
) -> Select[Any]:
    return build_children_select(parent, relation, child, array_parameter=array_parameter)


def build_page_select(query: ListQuery) -> Select[Any]:
    """The page's own columns (`plan.load`), filtered, ordered, one row past the limit."""
    resource = RESOURCES[query.resource]
    table = table_of(query.resource)
    statement = select(*(table.c[name] for name in query.plan.load)).where(*where_clause(query))
    if query.after is not None:
        model = resource.model
        statement = statement.where(keyset_condition(resource, model, query.sort, query.after))
    order = order_terms(resource, resource.model, query.sort)
    return statement.order_by(*order).limit(query.limit + 1)


def build_children_select(
    parent: str, relation: str, child: Plan, *, array_parameter: bool = False
) -> Select[Any]:
    """`SELECT junction.owner, target.<load> FROM junction JOIN target ... WHERE owner IN (...)`,
    ordered by the target's id: one statement for every parent of the level.

    With `array_parameter` (PostgreSQL) the keys travel as one array, `owner = ANY($1)`: the
    SQL text then no longer depends on how many parents there are, so the driver prepares
    it once instead of once per distinct count.
    """
    relationship = RESOURCES[parent].relationship(relation)
    assert relationship is not None
    junction = relationship.junction
    target = table_of(child.resource)
    owner = junction.c[relationship.local_key]
    return (
        select(owner, *(target.c[name] for name in child.load))
        .select_from(junction.join(target, target.c.id == junction.c[relationship.remote_key]))
        .where(
            owner == any_(bindparam(PARENT_IDS, type_=ARRAY(Integer)))
            if array_parameter
            else owner.in_(bindparam(PARENT_IDS, expanding=True))
        )
        .order_by(target.c.id)
    )
