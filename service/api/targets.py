"""What the cache needs to know about a read: its key, the tables it reads, its classes."""

from __future__ import annotations

from dataclasses import dataclass

from service.cache.keys import item_key, list_key, plan_tables, query_tables
from service.query.params import Count
from service.query.plan import ListQuery, Plan, plan_is_private


@dataclass(frozen=True, slots=True)
class CacheTarget:
    key: str
    tables: tuple[str, ...]
    classes: frozenset[str]  # matched against CACHE_SKIP


def list_target(query: ListQuery, *, path: str, access: str, kind: str) -> CacheTarget:
    """`kind` is "list" or "related"; `path` is canonical, so equal requests share a key."""
    classes = {kind}
    if query.count is not Count.NONE:
        classes.add("count")
    if query.private:
        classes.add("private")
    return CacheTarget(
        list_key(query, path=path, access=access), query_tables(query), frozenset(classes)
    )


def item_target(plan: Plan, *, path: str, access: str) -> CacheTarget:
    classes = {"item", "private"} if plan_is_private(plan) else {"item"}
    tables = tuple(sorted(plan_tables(plan)))
    return CacheTarget(item_key(plan, path=path, access=access), tables, frozenset(classes))
