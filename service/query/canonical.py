"""The canonical spelling of a query: one string per meaning, for links, cursors and cache keys."""

from __future__ import annotations

from urllib.parse import quote

from service.query.params import Count, SortKey
from service.query.plan import Condition, ListQuery, Plan, default_sort
from service.query.values import format_value
from service.schema import Resource

_SAFE = ":@-._~"


def shape_params(plan: Plan) -> list[tuple[str, str]]:
    """`fields`, `include` and `fields[path]`, leaving out what equals the default."""
    params: list[tuple[str, str]] = []
    nodes = plan.walk()
    if not plan.default_output:
        params.append(("fields", ",".join(plan.output)))
    leaves = sorted(".".join(path) for path, node in nodes if path and not node.children)
    if leaves:
        params.append(("include", ",".join(leaves)))
    ordered = sorted(nodes, key=lambda item: item[0])
    for path, node in ordered[1:]:
        if not node.default_output:
            params.append((f"fields[{'.'.join(path)}]", ",".join(node.output)))
    for path, node in ordered:
        params.extend((f"count[{'.'.join((*path, name))}]", "true") for name in node.counts)
    for path, node in ordered[1:]:
        if node.limit is not None:
            params.append((f"limit[{'.'.join(path)}]", str(node.limit)))
    for path, node in ordered[1:]:
        if node.sort and node.sort != default_sort(node.resource):
            params.append((f"sort[{'.'.join(path)}]", sort_text(node.resource, node.sort)))
    return params


def sort_text(resource: Resource, sort: tuple[SortKey, ...]) -> str:
    """The sort keys as given, less the implicit final ascending key."""
    last, key = sort[-1], resource.key.name
    shown = sort[:-1] if last.name == key and not last.descending else sort
    return ",".join(("-" if k.descending else "") + k.name for k in shown)


def filter_params(filters: tuple[Condition, ...]) -> list[tuple[str, str]]:
    params = []
    for condition in filters:
        name = ".".join((*condition.path, condition.attribute.name))
        key = f"filter[{name}]" if condition.op == "eq" else f"filter[{name}][{condition.op}]"
        attribute = condition.attribute
        if isinstance(condition.value, tuple):
            value = ",".join(quote(format_value(attribute, v), safe=_SAFE) for v in condition.value)
        else:
            value = quote(format_value(attribute, condition.value), safe=_SAFE)
        params.append((key, value))
    return params


def list_params(query: ListQuery) -> list[tuple[str, str]]:
    """Every parameter of a list request but the cursor, in canonical order."""
    params = shape_params(query.plan) + filter_params(query.filters)
    if not query.default_sort:
        params.append(("sort", sort_text(query.resource, query.sort)))
    if not query.default_limit:
        params.append(("limit", str(query.limit)))
    if query.count is not Count.NONE:
        params.append(("count", query.count.value))
    return params


def to_query_string(params: list[tuple[str, str]]) -> str:
    """Values in `params` are already escaped; names are plain identifiers."""
    return "&".join(f"{key}={value}" for key, value in params)


def binding(query: ListQuery) -> str:
    """What a cursor is bound to: the resource, the scope, the filters and the sort."""
    scope = query.scope
    scope_text = ""
    if scope is not None:
        parent_id = scope.parent.key.codec.format(scope.parent_id)
        scope_text = f"{scope.parent.name}/{parent_id}/{scope.join.name}"
    sort = ",".join(("-" if k.descending else "") + k.name for k in query.sort)
    return "|".join(
        (query.resource.name, scope_text, to_query_string(filter_params(query.filters)), sort)
    )
