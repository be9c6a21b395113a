"""The canonical spelling of a query: one string per meaning, for links, cursors and cache keys."""

from __future__ import annotations

from urllib.parse import quote

from service.query.params import Count
from service.query.plan import Condition, ListQuery, Plan
from service.query.values import format_value

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
    for path, node in sorted(nodes[1:], key=lambda item: item[0]):
        if not node.default_output:
            params.append((f"fields[{'.'.join(path)}]", ",".join(node.output)))
    return params


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
        last, key = query.sort[-1], query.resource.key.name
        sort = query.sort[:-1] if last.name == key and not last.descending else query.sort
        params.append(("sort", ",".join(("-" if k.descending else "") + k.name for k in sort)))
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
