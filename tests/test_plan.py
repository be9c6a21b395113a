"""The planner: a parsed query checked against the registry and frozen into a plan tree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import InvalidParameter, PrivateAttribute, ServiceError
from service.query.canonical import list_params, to_query_string
from service.query.params import Count, Path, SortKey, parse_query_string
from service.query.plan import (
    Condition,
    Limits,
    ListQuery,
    Plan,
    build_conditions,
    build_list_query,
    build_plan,
    build_sort,
)
from service.query.values import Value
from service.schema import Join, Resource
from tests.conftest import AUTH as RESOURCES

LIMITS = Limits()


def make_query(
    resource: str, raw: str, *, token: bool = False, limits: Limits = LIMITS
) -> ListQuery:
    return build_list_query(
        RESOURCES[resource], parse_query_string(raw), private_ok=token, limits=limits
    )


def loaded(plan: Plan) -> tuple[str, ...]:
    """The attributes a plan level SELECTs, by name: every loaded column is one of the
    resource's own attributes (nothing hidden, nothing write-only, no other table's)."""
    by_column = {attribute.column: attribute.name for attribute in plan.resource.attributes}
    assert all(column in by_column for column in plan.load), plan.load
    return tuple(by_column[column] for column in plan.load)


def condition(resource: str, dotted: str, op: str, value: Any) -> Condition:
    """The condition on `dotted` (`groups.users.id`) from `resource`, from the registry."""
    *path, name = dotted.split(".")
    target = RESOURCES[resource]
    joins: list[Join] = []
    for step in path:
        join = target.relationship(step)
        assert join is not None
        joins.append(join)
        target = join.target
    attribute = target.attribute(name)
    assert attribute is not None
    return Condition(tuple(joins), attribute, op, value)


def refuse(
    resource: str, raw: str, *, token: bool = False, limits: Limits = LIMITS
) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        make_query(resource, raw, token=token, limits=limits)
    assert isinstance(info.value, InvalidParameter | PrivateAttribute)
    assert len(info.value.errors) == 1
    return info.value


def parameter_of(error: ServiceError) -> str | None:
    return error.errors[0].parameter


# --- output and load -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "token", "expected"),
    [
        ("users", False, ("id", "name", "display_name", "created")),
        ("users", True, ("id", "name", "display_name", "created", "email_address")),
        ("groups", False, ("id", "name", "display_name", "created")),
        ("groups", True, ("id", "name", "display_name", "created")),
        ("permissions", False, ("id", "name", "description")),
        ("permissions", True, ("id", "name", "description")),
    ],
)
def test_default_output_is_every_visible_attribute(
    resource: str, token: bool, expected: tuple[str, ...]
) -> None:
    plan = make_query(resource, "", token=token).plan
    assert plan.output == expected
    assert loaded(plan) == expected
    assert plan.default_output
    raw = parse_query_string("")
    assert build_plan(RESOURCES[resource], raw, private_ok=token, limits=LIMITS) == plan


@pytest.mark.parametrize(
    ("resource", "fields", "token", "expected"),
    [
        ("users", "name,id", False, ("id", "name")),
        ("users", "created,display_name,name", False, ("name", "display_name", "created")),
        ("users", "email_address,id", True, ("id", "email_address")),
        ("users", "email_address", True, ("email_address",)),
        ("users", "created, name ,created", False, ("name", "created")),
        ("groups", "display_name,name", False, ("name", "display_name")),
        ("permissions", "description,name,id", False, ("id", "name", "description")),
    ],
)
def test_explicit_fields_in_registry_order(
    resource: str, fields: str, token: bool, expected: tuple[str, ...]
) -> None:
    plan = make_query(resource, f"fields={fields}", token=token).plan
    assert plan.output == expected


@pytest.mark.parametrize(
    ("resource", "raw", "output", "load"),
    [
        ("users", "fields=name", ("name",), ("id", "name")),
        ("users", "fields=id", ("id",), ("id",)),
        ("users", "fields=name&sort=-created", ("name",), ("id", "name", "created")),
        (
            "users",
            "fields=display_name&sort=created,name",
            ("display_name",),
            ("id", "name", "display_name", "created"),
        ),
        ("users", "fields=name&sort=-id", ("name",), ("id", "name")),
        (
            "users",
            "fields=name&sort=email_address",
            ("name",),
            ("id", "name", "email_address"),
        ),
        ("groups", "fields=created&sort=name", ("created",), ("id", "name", "created")),
        ("permissions", "fields=description", ("description",), ("id", "description")),
    ],
)
def test_load_adds_id_and_sort_keys_but_output_does_not(
    resource: str, raw: str, output: tuple[str, ...], load: tuple[str, ...]
) -> None:
    plan = make_query(resource, raw, token=True).plan
    assert plan.output == output
    assert loaded(plan) == load


def test_children_load_their_id() -> None:
    plan = make_query("users", "fields=name&include=groups.permissions&fields[groups]=name").plan
    groups = dict(plan.children)["groups"]
    permissions = dict(groups.children)["permissions"]
    assert (groups.output, loaded(groups)) == (("name",), ("id", "name"))
    assert (permissions.output, loaded(permissions)) == (
        ("id", "name", "description"),
        ("id", "name", "description"),
    )


@pytest.mark.parametrize(
    ("resource", "include", "paths"),
    [
        ("users", "groups", [(), ("groups",)]),
        (
            "users",
            "groups.permissions,groups.users",
            [(), ("groups",), ("groups", "users"), ("groups", "permissions")],
        ),
        ("groups", "permissions,users", [(), ("users",), ("permissions",)]),
        (
            "groups",
            "permissions.groups,users.groups.permissions",
            [
                (),
                ("users",),
                ("users", "groups"),
                ("users", "groups", "permissions"),
                ("permissions",),
                ("permissions", "groups"),
            ],
        ),
        (
            "permissions",
            "groups.users,groups.permissions",
            [(), ("groups",), ("groups", "users"), ("groups", "permissions")],
        ),
    ],
)
def test_nested_include_builds_children_in_registry_order(
    resource: str, include: str, paths: list[Path]
) -> None:
    plan = make_query(resource, f"include={include}").plan
    assert [path for path, _ in plan.walk()] == paths
    for path, node in plan.walk():
        target = RESOURCES[resource]
        for name in path:
            relationship = target.relationship(name)
            assert relationship is not None
            target = relationship.target
        assert node.resource is target


def test_fields_of_included_paths() -> None:
    plan = make_query(
        "groups",
        "fields=name&include=users.groups&fields[users]=email_address,name&fields[users.groups]=id",
        token=True,
    ).plan
    users = dict(plan.children)["users"]
    assert users.output == ("name", "email_address")
    assert dict(users.children)["groups"].output == ("id",)


# --- include limits and fields[path] ---------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "include", "limits"),
    [
        ("users", "groups.users.groups.users", LIMITS),
        ("groups", "users.groups.users.groups", LIMITS),
        ("users", "groups.users", Limits(max_include_depth=1)),
        ("users", "groups.permissions", Limits(max_include_paths=1)),
        ("groups", "users.groups,permissions.groups", Limits(max_include_paths=3)),
    ],
)
def test_include_limits(resource: str, include: str, limits: Limits) -> None:
    error = refuse(resource, f"include={include}", limits=limits)
    assert isinstance(error, InvalidParameter)
    assert parameter_of(error) == "include"


@pytest.mark.parametrize(
    ("resource", "include", "limits"),
    [
        ("users", "groups.users.groups", LIMITS),
        ("users", "groups.users", Limits(max_include_depth=2)),
        ("groups", "users.groups,permissions", Limits(max_include_paths=3)),
    ],
)
def test_include_at_the_limits(resource: str, include: str, limits: Limits) -> None:
    make_query(resource, f"include={include}", limits=limits)


@pytest.mark.parametrize(
    ("resource", "raw", "parameter"),
    [
        ("users", "fields[groups]=name", "fields[groups]"),
        ("users", "include=groups&fields[groups.users]=name", "fields[groups.users]"),
        ("users", "include=groups&fields[grups]=name", "fields[grups]"),
        ("groups", "include=users&fields[permissions]=name", "fields[permissions]"),
    ],
)
def test_fields_for_a_path_not_included(resource: str, raw: str, parameter: str) -> None:
    assert parameter_of(refuse(resource, raw)) == parameter


@pytest.mark.parametrize(
    ("resource", "include", "suggestion"),
    [
        ("users", "grups", "groups"),
        ("users", "groups.permision", "permissions"),
        ("groups", "user", "users"),
        ("permissions", "groups.user", "users"),
        ("users", "email_address", None),
        ("users", "xyz", None),
    ],
)
def test_unknown_relationship(resource: str, include: str, suggestion: str | None) -> None:
    error = refuse(resource, f"include={include}", token=True)
    assert parameter_of(error) == "include"
    assert "unknown relationship" in error.detail
    if suggestion is None:
        assert "did you mean" not in error.detail
    else:
        assert error.detail.endswith(f"did you mean {suggestion!r}?")


# --- unknown, private and hidden names ------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "raw", "token", "parameter", "suggestion"),
    [
        ("users", "fields=nmae", False, "fields", "name"),
        ("users", "fields=emial_address", True, "fields", "email_address"),
        ("users", "fields=emial_address", False, "fields", None),
        ("users", "fields=email", False, "fields", None),
        ("users", "filter[emial_address]=x", False, "filter[emial_address]", None),
        ("users", "filter[emial_address]=x", True, "filter[emial_address]", "email_address"),
        ("users", "sort=emial_address", False, "sort", None),
        ("users", "sort=-emial_address", True, "sort", "email_address"),
        (
            "groups",
            "include=users&fields[users]=email_adress",
            False,
            "fields[users]",
            None,
        ),
        (
            "groups",
            "include=users&fields[users]=email_adress",
            True,
            "fields[users]",
            "email_address",
        ),
        (
            "permissions",
            "filter[groups.users.emailaddress]=x",
            False,
            "filter[groups.users.emailaddress]",
            None,
        ),
        ("groups", "fields=displayname", False, "fields", "display_name"),
        ("permissions", "fields=descripton", False, "fields", "description"),
    ],
)
def test_unknown_field_suggestions_never_name_hidden_attributes(
    resource: str, raw: str, token: bool, parameter: str, suggestion: str | None
) -> None:
    error = refuse(resource, raw, token=token)
    assert isinstance(error, InvalidParameter)
    assert parameter_of(error) == parameter
    assert "unknown field" in error.detail
    if suggestion is None:
        assert "did you mean" not in error.detail
    else:
        assert error.detail.endswith(f"did you mean {suggestion!r}?")
    if not token:
        assert "email_address" not in str(error.to_problem())


@pytest.mark.parametrize(
    ("resource", "raw", "parameter"),
    [
        ("users", "fields=email_address", "fields"),
        ("users", "fields=id,email_address", "fields"),
        ("groups", "include=users&fields[users]=email_address", "fields[users]"),
        (
            "users",
            "include=groups.users&fields[groups.users]=name,email_address",
            "fields[groups.users]",
        ),
        ("users", "filter[email_address]=a@b.c", "filter[email_address]"),
        (
            "users",
            "filter[email_address][isnull]=true",
            "filter[email_address][isnull]",
        ),
        ("groups", "filter[users.email_address]=x", "filter[users.email_address]"),
        (
            "users",
            "filter[groups.users.email_address]=x",
            "filter[groups.users.email_address]",
        ),
        ("users", "sort=email_address", "sort"),
        ("users", "sort=-email_address", "sort"),
        ("users", "sort=name,email_address", "sort"),
    ],
)
def test_private_attribute_without_token_is_403(resource: str, raw: str, parameter: str) -> None:
    error = refuse(resource, raw)
    assert isinstance(error, PrivateAttribute)
    assert error.status == 403
    assert parameter_of(error) == parameter
    make_query(resource, raw, token=True)  # the same request is fine with a token


@pytest.mark.parametrize(
    ("resource", "raw", "parameter"),
    [
        ("users", "fields=password", "fields"),
        ("users", "fields=id,password", "fields"),
        ("groups", "include=users&fields[users]=password", "fields[users]"),
        ("users", "filter[password]=x", "filter[password]"),
        ("users", "filter[password][isnull]=true", "filter[password][isnull]"),
        ("groups", "filter[users.password]=x", "filter[users.password]"),
        ("users", "sort=password", "sort"),
        ("users", "sort=-password", "sort"),
        ("users", "fields=passwd", "fields"),
    ],
)
@pytest.mark.parametrize("token", [False, True])
def test_password_is_unknown_everywhere(
    resource: str, raw: str, parameter: str, token: bool
) -> None:
    error = refuse(resource, raw, token=token)
    assert type(error) is InvalidParameter
    assert parameter_of(error) == parameter
    assert "unknown field" in error.detail
    assert "did you mean 'password'" not in error.detail


@pytest.mark.parametrize(
    ("resource", "sort"),
    [
        ("users", "groups"),
        ("users", "-groups"),
        ("groups", "users"),
        ("groups", "name,permissions"),
    ],
)
def test_relationship_as_sort_key_is_400(resource: str, sort: str) -> None:
    error = refuse(resource, f"sort={sort}")
    assert type(error) is InvalidParameter
    assert parameter_of(error) == "sort"
    assert "relationship" in error.detail


def test_relationship_as_field_points_at_include() -> None:
    error = refuse("users", "fields=groups")
    assert parameter_of(error) == "fields"
    assert "use include" in error.detail


@pytest.mark.parametrize(
    ("resource", "raw"),
    [
        ("users", "filter[groups]=1"),
        ("users", "filter[groups.users]=1"),
        ("users", "filter[grups.name]=a"),
        ("users", "filter[name.groups]=a"),
        ("users", "filter[groups.users.groups.users.name]=a"),
    ],
)
def test_bad_filter_paths(resource: str, raw: str) -> None:
    error = refuse(resource, raw)
    assert type(error) is InvalidParameter
    assert parameter_of(error) == raw.split("=")[0]


# --- sort ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        (None, (SortKey("id", False),)),
        ((SortKey("name", False),), (SortKey("name", False), SortKey("id", False))),
        ((SortKey("id", True),), (SortKey("id", True),)),
        (
            (SortKey("created", True), SortKey("id", False), SortKey("name", False)),
            (SortKey("created", True), SortKey("id", False)),
        ),
        ((SortKey("id", False), SortKey("name", True)), (SortKey("id", False),)),
    ],
)
def test_sort_ends_with_id(sort: tuple[SortKey, ...] | None, expected: tuple[SortKey, ...]) -> None:
    assert build_sort(RESOURCES["users"], sort, private_ok=False) == expected


# --- filter values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "raw", "expected"),
    [
        ("users", "filter[id]=5", condition("users", "id", "eq", 5)),
        ("users", "filter[id]=%2B5", condition("users", "id", "eq", 5)),
        ("users", "filter[id][ne]=-7", condition("users", "id", "ne", -7)),
        ("users", "filter[id]=%205%20", condition("users", "id", "eq", 5)),
        ("users", "filter[id]=2147483647", condition("users", "id", "eq", 2**31 - 1)),
        ("users", "filter[id]=-2147483648", condition("users", "id", "eq", -(2**31))),
        ("users", "filter[id][in]=3,1,%201,2", condition("users", "id", "in", (1, 2, 3))),
        ("users", "filter[id][in]=4,", condition("users", "id", "in", (4,))),
        ("users", "filter[name]=alice", condition("users", "name", "eq", "alice")),
        ("users", "filter[name]=%20al%20", condition("users", "name", "eq", " al ")),
        ("users", "filter[name]=", condition("users", "name", "eq", "")),
        ("users", "filter[name][in]=a,b,a", condition("users", "name", "in", ("a", "b"))),
        ("users", "filter[name][in]=b,,a,b", condition("users", "name", "in", ("", "a", "b"))),
        (
            "users",
            "filter[created][in]=2024-02-01,2024-01-01T01:00:00%2B01:00",
            condition("users", "created", "in", (datetime(2024, 1, 1), datetime(2024, 2, 1))),
        ),
        ("users", "filter[name][contains]=LI", condition("users", "name", "contains", "LI")),
        (
            "users",
            "filter[name][startswith]=%C3%A9",
            condition("users", "name", "startswith", "é"),
        ),
        (
            "users",
            "filter[created][gte]=2024-01-01T00:00:00Z",
            condition("users", "created", "gte", datetime(2024, 1, 1)),
        ),
        (
            "users",
            "filter[created][lt]=2024-01-01T02:30:00%2B02:00",
            condition("users", "created", "lt", datetime(2024, 1, 1, 0, 30)),
        ),
        (
            "users",
            "filter[created]=2023-12-31T20:00:00-05:00",
            condition("users", "created", "eq", datetime(2024, 1, 1, 1)),
        ),
        (
            "users",
            "filter[created]=2024-01-01T00:00:00",
            condition("users", "created", "eq", datetime(2024, 1, 1)),
        ),
        (
            "users",
            "filter[created]=2024-01-01",
            condition("users", "created", "eq", datetime(2024, 1, 1)),
        ),
        (
            "users",
            "filter[created]=2024-01-01T00:00:00.250000Z",
            condition("users", "created", "eq", datetime(2024, 1, 1, 0, 0, 0, 250000)),
        ),
        (
            "users",
            "filter[created][isnull]=true",
            condition("users", "created", "isnull", True),
        ),
        ("users", "filter[id][isnull]=FALSE", condition("users", "id", "isnull", False)),
        ("users", "filter[name][isnull]=%20true", condition("users", "name", "isnull", True)),
        (
            "users",
            "filter[groups.name]=admins",
            condition("users", "groups.name", "eq", "admins"),
        ),
        (
            "permissions",
            "filter[groups.users.id][in]=1,2",
            condition("permissions", "groups.users.id", "in", (1, 2)),
        ),
    ],
)
def test_filter_values_are_typed(resource: str, raw: str, expected: Condition) -> None:
    assert make_query(resource, raw).filters == (expected,)


@pytest.mark.parametrize(
    "raw",
    [
        "filter[id]=2147483648",
        "filter[id]=-2147483649",
        "filter[id]=99999999999999999999",
        "filter[id]=1.0",
        "filter[id]=abc",
        "filter[id]=",
        "filter[id]=%D9%A3",  # an Arabic-Indic digit
        "filter[id]=1_000",
        "filter[id][in]=1,x",
        "filter[id][in]=,",
        "filter[id][in]=1,2147483648",
        "filter[id][contains]=1",
        "filter[id][startswith]=1",
        "filter[created][contains]=2024",
        "filter[created]=yesterday",
        "filter[created]=2024-13-01",
        "filter[created]=",
        "filter[created]=0001-01-01T00:00:00%2B01:00",
        "filter[created]=9999-12-31T23:59:59-01:00",
        "filter[created][in]=2024-01-01,never",
        "filter[name][isnull]=yes",
        "filter[name][isnull]=1",
        "filter[name][isnull]=",
        "filter[name]=" + "x" * 65,
    ],
)
def test_bad_filter_values(raw: str) -> None:
    error = refuse("users", raw)
    assert type(error) is InvalidParameter
    assert parameter_of(error) == raw.split("=")[0]


def test_in_takes_at_most_max_in_values() -> None:
    limits = Limits(max_in_values=3)
    make_query("users", "filter[id][in]=1,2,3", limits=limits)
    assert parameter_of(refuse("users", "filter[id][in]=1,2,3,4", limits=limits)) == (
        "filter[id][in]"
    )


_FILTER_KEYS = [
    f"filter[{attribute}][{op}]"
    for attribute in ("name", "display_name")
    for op in ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith")
] + [f"filter[id][{op}]" for op in ("eq", "ne", "lt", "lte", "gt", "gte")]


@pytest.mark.parametrize(("count", "accepted"), [(1, True), (20, True), (21, False), (24, False)])
def test_at_most_max_filters(count: int, accepted: bool) -> None:
    raw = "&".join(f"{key}=1" for key in _FILTER_KEYS[:count])
    if accepted:
        assert len(make_query("users", raw).filters) == count
    else:
        assert parameter_of(refuse("users", raw)) == "filter"


def test_conditions_are_in_canonical_order() -> None:
    specs = parse_query_string("filter[name]=a&filter[groups.name]=b&filter[id][gt]=1").filters
    conditions = build_conditions(RESOURCES["users"], specs, private_ok=False, limits=LIMITS)
    assert [(c.path, c.attribute.owner, c.attribute.name, c.op) for c in conditions] == [
        ((), "users", "id", "gt"),
        ((), "users", "name", "eq"),
        (("groups",), "groups", "name", "eq"),
    ]


# --- private ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "raw", "private"),
    [
        ("users", "", True),
        ("users", "fields=id,name", False),
        ("users", "fields=email_address", True),
        ("users", "fields=id&filter[email_address][contains]=x", True),
        ("users", "fields=id&sort=email_address", True),
        ("users", "fields=id&include=groups", False),
        ("users", "fields=id&include=groups.users&fields[groups.users]=name", False),
        ("users", "fields=id&include=groups.users", True),
        ("users", "fields=id&filter[groups.users.email_address]=x", True),
        ("groups", "", False),
        ("groups", "include=users", True),
        ("groups", "include=users&fields[users]=id,name", False),
        ("groups", "filter[users.name]=a", False),
        ("permissions", "include=groups.users", True),
        ("permissions", "include=groups.users&fields[groups.users]=created", False),
    ],
)
def test_private_iff_private_data_is_touched(resource: str, raw: str, private: bool) -> None:
    assert make_query(resource, raw, token=True).private is private
    if not private:
        assert make_query(resource, raw, token=False).private is False


@pytest.mark.parametrize("resource", sorted(RESOURCES))
def test_anonymous_queries_are_never_private(resource: str) -> None:
    assert make_query(resource, "include=" + RESOURCES[resource].relationships[0].name).private is (
        False
    )


# --- limit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "limits", "expected"),
    [
        ("", LIMITS, 50),
        ("limit=1", LIMITS, 1),
        ("limit=500", LIMITS, 500),
        ("limit=50", LIMITS, 50),
        ("", Limits(default_limit=7, max_limit=10), 7),
        ("limit=10", Limits(default_limit=7, max_limit=10), 10),
    ],
)
def test_limit_within_range(raw: str, limits: Limits, expected: int) -> None:
    assert make_query("users", raw, limits=limits).limit == expected


@pytest.mark.parametrize(
    ("raw", "limits"),
    [
        ("limit=0", LIMITS),
        ("limit=501", LIMITS),
        ("limit=999999999", LIMITS),
        ("limit=11", Limits(default_limit=7, max_limit=10)),
    ],
)
def test_limit_out_of_range_is_an_error_not_clamped(raw: str, limits: Limits) -> None:
    assert parameter_of(refuse("users", raw, limits=limits)) == "limit"


def test_count_is_carried() -> None:
    assert make_query("users", "count=true").count is Count.EXACT
    assert make_query("users", "").count is Count.NONE


# --- equivalent spellings give equal plans -------------------------------------------------


def _include_paths(resource: Resource, depth: int = 3) -> list[Path]:
    if depth == 0:
        return []
    paths: list[Path] = []
    for relationship in resource.relationships:
        paths.append((relationship.name,))
        for rest in _include_paths(relationship.target, depth - 1):
            paths.append((relationship.name, *rest))
    return paths


def _resource_at(resource: str, path: Path) -> Resource:
    target = RESOURCES[resource]
    for name in path:
        relationship = target.relationship(name)
        assert relationship is not None
        target = relationship.target
    return target


@dataclass(frozen=True)
class Meaning:
    resource: str
    token: bool
    fields: dict[Path, tuple[str, ...]]  # () for the primary resource
    leaves: tuple[Path, ...]
    sort: tuple[SortKey, ...]
    limit: int | None
    filters: tuple[tuple[str, Value], ...]  # (key, raw value)

    @property
    def closure(self) -> list[Path]:
        return sorted({leaf[:i] for leaf in self.leaves for i in range(1, len(leaf) + 1)})


@st.composite
def meanings(draw: st.DrawFn) -> Meaning:
    resource = draw(st.sampled_from(sorted(RESOURCES)))
    token = draw(st.booleans())
    leaves = tuple(draw(st.lists(st.sampled_from(_include_paths(RESOURCES[resource])), max_size=3)))
    closure = {leaf[:i] for leaf in leaves for i in range(1, len(leaf) + 1)}
    fields: dict[Path, tuple[str, ...]] = {}
    for path in [(), *sorted(closure)]:
        visible = _resource_at(resource, path).visible_attributes(private=token)
        names = draw(st.none() | st.lists(st.sampled_from(visible), min_size=1, unique=True))
        if names is not None:
            fields[path] = tuple(names)
    visible = RESOURCES[resource].visible_attributes(private=token)
    names = draw(st.lists(st.sampled_from([n for n in visible if n != "id"]), unique=True))
    sort = tuple(SortKey(name, draw(st.booleans())) for name in names)
    limit = draw(st.none() | st.integers(1, 500))
    filters = tuple(
        draw(
            st.lists(
                st.sampled_from([("filter[id][gte]", "3"), ("filter[name][in]", "a,b")]),
                unique=True,
            )
        )
    )
    return Meaning(resource, token, fields, leaves, sort, limit, filters)


def _padded(draw: st.DrawFn, name: str) -> str:
    return draw(st.sampled_from(["", "%20", "+"])) + name + draw(st.sampled_from(["", "%20"]))


def _name_list(draw: st.DrawFn, names: tuple[str, ...]) -> str:
    spelled = list(draw(st.permutations(names)))
    spelled += draw(st.lists(st.sampled_from(names), max_size=2))  # repeats do not matter
    return ",".join(_padded(draw, name) for name in spelled)


@st.composite
def spellings(draw: st.DrawFn, meaning: Meaning) -> str:
    """One of the many query strings that mean `meaning`."""
    params: list[str] = []
    for path in [(), *meaning.closure]:
        key = f"fields[{'.'.join(path)}]" if path else "fields"
        names = meaning.fields.get(path)
        if names is None and draw(st.booleans()):
            # spelling out the default selection is the same as leaving it out
            names = _resource_at(meaning.resource, path).visible_attributes(private=meaning.token)
        if names is not None:
            params.append(f"{key}={_name_list(draw, names)}")
    if meaning.leaves:
        paths = meaning.closure if draw(st.booleans()) else list(meaning.leaves)
        dotted = tuple(".".join(path) for path in paths)
        params.append(f"include={_name_list(draw, dotted)}")
    sort = [("-" if key.descending else "") + key.name for key in meaning.sort]
    if draw(st.booleans()):
        sort.append("id")  # the implicit tiebreaker, spelled out
    if sort:
        params.append("sort=" + ",".join(sort))
    limit = meaning.limit
    if limit is None and draw(st.booleans()):
        limit = LIMITS.default_limit
    if limit is not None:
        params.append(f"limit={limit}")
    if draw(st.booleans()):
        params.append("count=false")
    params += [f"{key}={value}" for key, value in meaning.filters]
    return "&".join(draw(st.permutations(params)))


@given(data=st.data())
def test_equivalent_spellings_give_equal_plans(data: st.DataObject) -> None:
    meaning = data.draw(meanings())
    first = data.draw(spellings(meaning))
    second = data.draw(spellings(meaning))
    one = make_query(meaning.resource, first, token=meaning.token)
    two = make_query(meaning.resource, second, token=meaning.token)
    assert one == two
    assert hash(one) == hash(two)
    assert one.plan == two.plan
    assert hash(one.plan) == hash(two.plan)
    assert to_query_string(list_params(one)) == to_query_string(list_params(two))
    assert len({one, two}) == 1


@given(meaning=meanings())
def test_plans_hold_what_was_asked(meaning: Meaning) -> None:
    raw = "&".join(
        [
            *(
                f"fields[{'.'.join(path)}]={','.join(names)}"
                if path
                else f"fields={','.join(names)}"
                for path, names in meaning.fields.items()
            ),
            *(
                ["include=" + ",".join(".".join(p) for p in meaning.leaves)]
                if meaning.leaves
                else []
            ),
        ]
    )
    plan: Plan = make_query(meaning.resource, raw, token=meaning.token).plan
    walked = dict(plan.walk())
    assert sorted(walked) == [(), *meaning.closure]
    for path, node in walked.items():
        resource = _resource_at(meaning.resource, path)
        visible = resource.visible_attributes(private=meaning.token)
        expected = meaning.fields.get(path, visible)
        assert node.output == tuple(name for name in visible if name in expected)
        assert "id" in loaded(node)
        assert set(node.output) <= set(loaded(node))
        assert [name for name, _ in node.children] == [
            r.name for r in resource.relationships if (*path, r.name) in walked
        ]
