"""Validate a parsed query against the registry and freeze it into a plan tree."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Column

from service.errors import InvalidParameter, PrivateAttribute, suggest
from service.query.params import Count, FilterSpec, Path, RawQuery, SortKey
from service.query.values import Value, parse_filter_value
from service.schema import Attribute, Join, Resource
from service.schema.codecs import Scalar
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class Limits:
    default_limit: int = 50
    max_limit: int = 500
    max_include_depth: int = 3
    max_include_paths: int = 10
    max_filters: int = 20
    max_in_values: int = 100
    max_embedded_rows: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            default_limit=settings.default_limit,
            max_limit=settings.max_limit,
            max_include_depth=settings.max_include_depth,
            max_include_paths=settings.max_include_paths,
            max_filters=settings.max_filters,
            max_in_values=settings.max_in_values,
            max_embedded_rows=settings.max_embedded_rows,
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """One level of the response: what to output, what to load, which relationships to embed."""

    resource: Resource
    output: tuple[str, ...]  # exactly what the client gets, in registry order
    # The columns to SELECT, in table order: the output's, the key, the sort keys, and the
    # join keys the embedded levels need (a to-one link's foreign key).
    load: tuple[Column[Any], ...]
    children: tuple[tuple[str, Plan], ...] = ()
    default_output: bool = True  # output is the caller's default selection
    # An embedded list's shape (`sort[path]`, `limit[path]`): its order, ending with the
    # key (empty above a to-many link), and how many rows each parent keeps (None: all).
    sort: tuple[SortKey, ...] = ()
    limit: int | None = None
    counts: tuple[str, ...] = ()  # this level's relationships counted (`count[path]`)

    def join(self, name: str) -> Join:
        found = self.resource.relationship(name)
        assert found is not None
        return found

    @property
    def shaped(self) -> bool:
        """Whether some level's list is sorted, cut or counted beyond the default."""
        return any(
            node.limit is not None or node.counts or not _default_order(node)
            for _, node in self.walk()
        )

    def walk(self, path: Path = ()) -> tuple[tuple[Path, Plan], ...]:
        """Every (path, node) pair below and including this one, parents first."""
        nodes: list[tuple[Path, Plan]] = [(path, self)]
        for name, child in self.children:
            nodes.extend(child.walk((*path, name)))
        return tuple(nodes)


@dataclass(frozen=True, slots=True)
class Condition:
    """A filter: relationships to cross (by existence), then an attribute compared with a value."""

    joins: tuple[Join, ...]  # the relationships crossed, from the queried resource on
    attribute: Attribute  # of the last join's target (or the queried resource)
    op: str
    value: Value

    @property
    def path(self) -> Path:
        return tuple(join.name for join in self.joins)


@dataclass(frozen=True, slots=True)
class Scope:
    """A sub-collection: the rows related to one parent row."""

    join: Join  # the parent's to-many relationship
    parent_id: Scalar  # the parent's key

    @property
    def parent(self) -> Resource:
        return self.join.source


@dataclass(frozen=True, slots=True)
class ListQuery:
    plan: Plan
    sort: tuple[SortKey, ...]  # always ends with the key
    filters: tuple[Condition, ...] = ()
    limit: int = 50
    after: tuple[Scalar | None, ...] | None = None  # the decoded cursor
    cursor: str | None = None  # as given, for the canonical key
    count: Count = Count.NONE
    scope: Scope | None = None
    private: bool = False  # the response depends on private data
    default_sort: bool = True
    default_limit: bool = True

    @property
    def resource(self) -> Resource:
        return self.plan.resource

    @property
    def sort_attributes(self) -> tuple[Attribute, ...]:
        return tuple(_attribute(self.resource, key.name) for key in self.sort)


def build_plan(
    resource: Resource, raw: RawQuery, *, private_ok: bool, limits: Limits, parents: int = 1
) -> Plan:
    """The plan tree of `fields`, `include` and the per-path parameters, checked against the
    registry; `parents` is how many rows the top level may hold (the page size)."""
    if len(raw.include) > limits.max_include_paths:
        raise InvalidParameter(
            "include", f"at most {limits.max_include_paths} include paths (counting parents)"
        )
    for path in raw.include:
        if len(path) > limits.max_include_depth:
            raise InvalidParameter(
                "include", f"include paths are at most {limits.max_include_depth} deep"
            )
    fields = dict(raw.fields)
    for family, paths in (
        ("fields", [path for path in fields if path]),
        ("sort", [path for path, _ in raw.path_sort]),
        ("limit", [path for path, _ in raw.path_limit]),
    ):
        for path in paths:
            if path not in raw.include:
                shown = f"{family}[{'.'.join(path)}]"
                raise InvalidParameter(shown, f"{shown} names a path that is not included")
    counted = {path for path, on in raw.path_count if on}
    shaping = PathShaping(dict(raw.path_sort), dict(raw.path_limit), counted, limits)
    plan = _build_node(resource, (), raw.include, fields, shaping, private_ok=private_ok)
    for path, _ in raw.path_count:  # after the include paths, which say what is unknown first
        refusal = _count_refusal(resource, path, raw.include)
        if refusal is not None:
            raise InvalidParameter(f"count[{'.'.join(path)}]", refusal)
    check_embedded_bound(plan, parents, limits.max_embedded_rows)
    return plan


@dataclass(frozen=True, slots=True)
class PathShaping:
    """The per-path parameters, checked against the include paths, while the plan is built."""

    sort: dict[Path, tuple[SortKey, ...]]
    limit: dict[Path, int]
    count: set[Path]  # the paths counted (`count[path]=true`)
    limits: Limits


def _build_node(
    resource: Resource,
    path: Path,
    include: tuple[Path, ...],
    fields: dict[Path, tuple[str, ...]],
    shaping: PathShaping,
    *,
    private_ok: bool,
    join: Join | None = None,
) -> Plan:
    parameter = f"fields[{'.'.join(path)}]" if path else "fields"
    requested = fields.get(path)
    visible = resource.visible_attributes(private=private_ok)
    if requested is None:
        output = visible
    else:
        for name in requested:
            check_attribute(resource, name, parameter=parameter, private_ok=private_ok)
        output = tuple(name for name in visible if name in requested)
    children = []
    for relationship in resource.relationships:
        child_path = (*path, relationship.name)
        if child_path in include:
            child = _build_node(
                relationship.target,
                child_path,
                include,
                fields,
                shaping,
                private_ok=private_ok,
                join=relationship,
            )
            children.append((relationship.name, child))
    counts = _counted(resource, path, shaping)
    joins = [_join(resource, name) for name, _ in children] + [
        _join(resource, name) for name in counts
    ]
    needed = {_attribute(resource, name).column for name in output}
    needed |= {resource.key.column, *(join.parent_key for join in joins)}
    load = _in_table_order(resource, needed)
    for child_path in include:
        if child_path[:-1] == path and resource.relationship(child_path[-1]) is None:
            name = child_path[-1]
            names = [r.name for r in resource.relationships]
            raise InvalidParameter(
                "include",
                f"unknown relationship {name!r} for {resource.name}{suggest(name, names)}",
            )
    sort, limit = _list_shape(resource, path, join, shaping, private_ok=private_ok)
    return Plan(
        resource,
        output,
        load,
        tuple(children),
        default_output=requested is None or output == visible,
        sort=sort,
        limit=limit,
        counts=counts,
    )


def _list_shape(
    resource: Resource, path: Path, join: Join | None, shaping: PathShaping, *, private_ok: bool
) -> tuple[tuple[SortKey, ...], int | None]:
    """The order and per-parent cut of the embedded list at `path` (none above a to-one)."""
    sort, limit = shaping.sort.get(path), shaping.limit.get(path)
    if join is None or not join.many:
        for family, given in (("sort", sort), ("limit", limit)):
            if given is not None:
                shown = f"{family}[{'.'.join(path)}]"
                raise InvalidParameter(
                    shown, f"{shown} names a to-one relationship: it embeds one object, not a list"
                )
        return (), None
    if limit is not None and not 1 <= limit <= shaping.limits.max_limit:
        shown = f"limit[{'.'.join(path)}]"
        raise InvalidParameter(shown, f"{shown} must be between 1 and {shaping.limits.max_limit}")
    parameter = f"sort[{'.'.join(path)}]"
    return build_sort(resource, sort, private_ok=private_ok, parameter=parameter), limit


def _counted(resource: Resource, path: Path, shaping: PathShaping) -> tuple[str, ...]:
    """The to-many relationships of this level that `count[path]` names, in registry order."""
    return tuple(
        relationship.name
        for relationship in resource.relationships
        if relationship.many and (*path, relationship.name) in shaping.count
    )


def _count_refusal(resource: Resource, path: Path, include: tuple[Path, ...]) -> str | None:
    """Why `count[path]` (true or false) cannot count: its parent level is not returned, or
    the name is not a to-many relationship there; None when it can."""
    refusal = f"count[{'.'.join(path)}] names no to-many relationship of a returned level"
    parent = path[:-1]
    if parent and parent not in include:
        return f"{refusal}: include {'.'.join(parent)} to count below it"
    for name in parent:
        join = resource.relationship(name)
        if join is None:
            return refusal  # the include names it too, and is refused with the reason
        resource = join.target
    name = path[-1]
    join = resource.relationship(name)
    if join is None:
        names = [r.name for r in resource.relationships if r.many]
        return f"{refusal}: {resource.name} has no relationship {name!r}{suggest(name, names)}"
    if not join.many:
        return f"{refusal}: {resource.name}.{name} is to-one (an object, not a list)"
    return None


def check_embedded_bound(plan: Plan, parents: int, max_rows: int) -> None:
    """Refuse up front what the request alone says may embed more rows than allowed: the
    paths where every list is cut (`limit` x `limit[path]` x ...), to-one links one each."""
    cuts = _bounded_rows(plan, parents)
    bound = sum(rows for rows, _, _ in cuts)
    if bound > max_rows:
        lists = [cut for cut in cuts if cut[1].relationship(cut[2]).many]  # type: ignore[union-attr]
        where = "the sub-collection endpoint"
        if lists:
            _, owner, relation = max(lists, key=lambda cut: cut[0])
            where = f"/{owner.name}/{{id}}/{relation}"
        raise InvalidParameter(
            "include",
            f"the response may embed up to {bound} rows (limit x limit[path]), more than "
            f"{max_rows}; lower the limits or page through {where} instead",
        )


def _bounded_rows(plan: Plan, parents: int) -> list[tuple[int, Resource, str]]:
    """(rows at most, owner, relationship) of each path the request bounds."""
    cuts: list[tuple[int, Resource, str]] = []
    for name, child in plan.children:
        if not plan.join(name).many:
            rows = parents
        elif child.limit is not None:
            rows = parents * child.limit
        else:
            continue  # not bounded by the request: counted as it is loaded
        cuts.append((rows, plan.resource, name))
        cuts += _bounded_rows(child, rows)
    return cuts


def check_attribute(
    resource: Resource, name: str, *, parameter: str, private_ok: bool
) -> Attribute:
    """The attribute a caller may name; private ones need a token, hidden ones do not exist."""
    attribute = resource.attribute(name)
    if attribute is not None and attribute.private and not private_ok:
        raise PrivateAttribute(
            parameter, f"{resource.name}.{name} is private: a valid bearer token is required"
        )
    if attribute is None:
        names = resource.visible_attributes(private=private_ok)
        hint = suggest(name, names)
        if resource.relationship(name) is not None:
            hint = f"; {name!r} is a relationship (use include)"
        raise InvalidParameter(parameter, f"unknown field {name!r} for {resource.name}{hint}")
    return attribute


def build_conditions(
    resource: Resource, specs: tuple[FilterSpec, ...], *, private_ok: bool, limits: Limits
) -> tuple[Condition, ...]:
    if len(specs) > limits.max_filters:
        raise InvalidParameter("filter", f"at most {limits.max_filters} filters")
    conditions = [
        _build_condition(resource, spec, private_ok=private_ok, limits=limits) for spec in specs
    ]
    return tuple(sorted(conditions, key=lambda c: (c.path, c.attribute.name, c.op)))


def _build_condition(
    root: Resource, spec: FilterSpec, *, private_ok: bool, limits: Limits
) -> Condition:
    if len(spec.path) - 1 > limits.max_include_depth:
        raise InvalidParameter(
            spec.parameter, f"filter paths cross at most {limits.max_include_depth} relationships"
        )
    resource = root
    joins: list[Join] = []
    for name in spec.path[:-1]:
        relationship = resource.relationship(name)
        if relationship is None:
            names = [r.name for r in resource.relationships]
            raise InvalidParameter(
                spec.parameter,
                f"unknown relationship {name!r} for {resource.name}{suggest(name, names)}",
            )
        joins.append(relationship)
        resource = relationship.target
    name = spec.path[-1]
    if resource.relationship(name) is not None:
        raise InvalidParameter(
            spec.parameter,
            f"{name!r} is a relationship: filter on one of its attributes, e.g. {name}.id",
        )
    attribute = check_attribute(resource, name, parameter=spec.parameter, private_ok=private_ok)
    value = parse_filter_value(
        attribute, spec.op, spec.raw, parameter=spec.parameter, max_in_values=limits.max_in_values
    )
    return Condition(tuple(joins), attribute, spec.op, value)


def default_sort(resource: Resource) -> tuple[SortKey, ...]:
    return (SortKey(resource.key.name, False),)


def build_sort(
    resource: Resource,
    sort: tuple[SortKey, ...] | None,
    *,
    private_ok: bool,
    parameter: str = "sort",
) -> tuple[SortKey, ...]:
    """The sort keys with the primary key as the final tiebreaker."""
    keys = list(sort or ())
    for key in keys:
        if resource.relationship(key.name) is not None:
            raise InvalidParameter(
                parameter, f"{key.name!r} is a relationship and cannot be a sort key"
            )
        attribute = check_attribute(resource, key.name, parameter=parameter, private_ok=private_ok)
        if not attribute.codec.sortable:
            raise InvalidParameter(
                parameter,
                f"{resource.name}.{key.name} ({attribute.codec.name}) cannot be sorted by",
            )
    ids = [i for i, key in enumerate(keys) if key.name == resource.key.name]
    if ids:
        del keys[ids[0] + 1 :]  # nothing after the unique key can change the order
    else:
        keys.append(SortKey(resource.key.name, False))
    return tuple(keys)


def build_list_query(
    resource: Resource,
    raw: RawQuery,
    *,
    private_ok: bool,
    limits: Limits,
    scope: Scope | None = None,
) -> ListQuery:
    """The validated list request: plan, filters, sort and page (the cursor is attached after)."""
    sort = build_sort(resource, raw.sort, private_ok=private_ok)
    limit = limits.default_limit if raw.limit is None else raw.limit
    if not 1 <= limit <= limits.max_limit:
        raise InvalidParameter("limit", f"limit must be between 1 and {limits.max_limit}")
    plan = build_plan(resource, raw, private_ok=private_ok, limits=limits, parents=limit)
    sorted_by = {_attribute(resource, key.name).column for key in sort}
    plan = replace(plan, load=_in_table_order(resource, {*plan.load, *sorted_by}))
    filters = build_conditions(resource, raw.filters, private_ok=private_ok, limits=limits)
    return ListQuery(
        plan=plan,
        filters=filters,
        sort=sort,
        limit=limit,
        count=raw.count,
        scope=scope,
        private=_touches_private(plan, filters, sort),
        default_sort=sort == default_sort(resource),
        default_limit=limit == limits.default_limit,
    )


def _attribute(resource: Resource, name: str) -> Attribute:
    attribute = resource.attribute(name)
    assert attribute is not None
    return attribute


def _join(resource: Resource, name: str) -> Join:
    join = resource.relationship(name)
    assert join is not None
    return join


def _in_table_order(resource: Resource, columns: set[Column[Any]]) -> tuple[Column[Any], ...]:
    """One spelling per set of columns (plans key caches), in the table's own order."""
    return tuple(column for column in resource.table.columns if column in columns)


def plan_is_private(plan: Plan) -> bool:
    """Whether any level of the plan outputs, or orders its list by, a private attribute."""
    for _, node in plan.walk():
        names = (*node.output, *(key.name for key in node.sort))
        if any(_attribute(node.resource, name).private for name in names):
            return True
    return False


def _default_order(plan: Plan) -> bool:
    return not plan.sort or plan.sort == default_sort(plan.resource)


def _touches_private(plan: Plan, filters: tuple[Condition, ...], sort: tuple[SortKey, ...]) -> bool:
    """Whether the response holds or depends on a private attribute."""
    if plan_is_private(plan):
        return True
    if any(_attribute(plan.resource, key.name).private for key in sort):
        return True
    return any(condition.attribute.private for condition in filters)
