"""The canonical spelling: one query string per meaning, and what a cursor is bound to."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.query.canonical import binding, list_params, shape_params, to_query_string
from service.query.params import Path, parse_query_string
from service.query.plan import Limits, ListQuery, Scope, build_list_query
from service.schema import Attribute, Join, Resource
from service.schema.codecs import IntegerCodec, StringCodec
from tests.conftest import AUTH as RESOURCES

LIMITS = Limits()


def make_query(resource: str, raw: str, *, token: bool = False) -> ListQuery:
    return build_list_query(
        RESOURCES[resource], parse_query_string(raw), private_ok=token, limits=LIMITS
    )


def relationship(resource: str, name: str) -> Join:
    join = RESOURCES[resource].relationship(name)
    assert join is not None
    return join


def canonical(resource: str, raw: str, *, token: bool = False) -> str:
    return to_query_string(list_params(make_query(resource, raw, token=token)))


# --- one spelling per meaning --------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "raw", "token", "expected"),
    [
        # defaults are left out
        ("users", "", False, ""),
        ("users", "limit=50", False, ""),
        ("users", "sort=id", False, ""),
        ("users", "sort=%2Bid", False, ""),
        ("users", "sort=id,name", False, ""),
        ("users", "count=false", False, ""),
        ("users", "fields=id,name,display_name,created", False, ""),
        ("users", "fields=created,display_name,name,id,name", False, ""),
        ("users", "fields=id,name,display_name,created,email_address", True, ""),
        ("groups", "fields=id,name,display_name,created", True, ""),
        ("permissions", "fields=description,name,id", False, ""),
        (
            "users",
            "include=groups&fields[groups]=id,name,display_name,created",
            False,
            "include=groups",
        ),
        # what is not a default is spelled in one way
        (
            "users",
            "fields=id,name,display_name,created",
            True,
            "fields=id,name,display_name,created",
        ),
        ("users", "fields=name,id", False, "fields=id,name"),
        ("users", "fields=%20name%20,id,name", False, "fields=id,name"),
        ("users", "include=groups.permissions,groups", False, "include=groups.permissions"),
        ("users", "include=groups,groups.permissions", False, "include=groups.permissions"),
        (
            "groups",
            "include=users.groups,permissions,users",
            False,
            "include=permissions,users.groups",
        ),
        (
            "users",
            "include=groups.users&fields[groups.users]=name,id&fields[groups]=name",
            False,
            "include=groups.users&fields[groups]=name&fields[groups.users]=id,name",
        ),
        ("users", "sort=name,id", False, "sort=name"),
        ("users", "sort=name,name", False, "sort=name"),
        ("users", "sort=-created,id,name", False, "sort=-created"),
        ("users", "sort=-id", False, "sort=-id"),
        ("users", "sort=name,-id", False, "sort=name,-id"),
        ("users", "limit=2", False, "limit=2"),
        ("users", "limit=002", False, "limit=2"),
        ("users", "count=TRUE", False, "count=true"),
        ("users", "count=estimated", False, "count=estimated"),
        ("users", "filter[name][eq]=a", False, "filter[name]=a"),
        ("users", "filter[name]=a+b", False, "filter[name]=a%20b"),
        ("users", "filter[name]=a%26b%3Dc%2Bd", False, "filter[name]=a%26b%3Dc%2Bd"),
        ("users", "filter[name]=%C3%A9", False, "filter[name]=%C3%A9"),
        ("users", "filter[name]=", False, "filter[name]="),
        ("users", "filter[%20name%20][%20ne%20]=x", False, "filter[name][ne]=x"),
        ("users", "filter[id]=%2B5", False, "filter[id]=5"),
        ("users", "filter[id]=%2005", False, "filter[id]=5"),
        ("users", "filter[id][in]=1,%202,1", False, "filter[id][in]=1,2"),
        ("users", "filter[name][in]=b,a", False, "filter[name][in]=a,b"),
        ("users", "filter[id][in]=10,9,10", False, "filter[id][in]=9,10"),
        ("users", "filter[name][isnull]=TRUE", False, "filter[name][isnull]=true"),
        ("users", "filter[created]=2024-01-01", False, "filter[created]=2024-01-01T00:00:00Z"),
        (
            "users",
            "filter[created][gt]=2024-01-01T01:00:00%2B01:00",
            False,
            "filter[created][gt]=2024-01-01T00:00:00Z",
        ),
        (
            "users",
            "filter[created][lt]=2024-01-01T00:00:00.5",
            False,
            "filter[created][lt]=2024-01-01T00:00:00.500000Z",
        ),
        (
            "users",
            "filter[name]=b&filter[groups.name]=a&filter[id][gt]=1",
            False,
            "filter[id][gt]=1&filter[name]=b&filter[groups.name]=a",
        ),
        (
            "users",
            "count=true&limit=2&sort=name&filter[id][gt]=1&fields[groups]=name&include=groups&fields=name",
            False,
            "fields=name&include=groups&fields[groups]=name&filter[id][gt]=1&sort=name&limit=2&count=true",
        ),
    ],
)
def test_canonical_spelling(resource: str, raw: str, token: bool, expected: str) -> None:
    assert canonical(resource, raw, token=token) == expected
    # the canonical spelling is a fixpoint and means the same
    assert canonical(resource, expected, token=token) == expected
    assert make_query(resource, expected, token=token) == make_query(resource, raw, token=token)


def test_spec_example_round_trips() -> None:
    raw = "fields=id,name&include=groups&fields[groups]=name&limit=2"
    assert canonical("users", raw) == raw
    assert canonical("users", raw, token=True) == raw


@pytest.mark.parametrize(
    "spellings",
    [
        [
            "fields=id,name&include=groups&fields[groups]=name&limit=2",
            "limit=2&fields[groups]=name&include=groups&fields=name,id",
            "fields=%20id,name,id%20&include=groups,groups&fields[%20groups]=name,name&limit=2",
            "fields=name,id&include=groups&fields[groups]=name&limit=2&sort=id&count=false",
        ],
        [
            "include=groups.permissions",
            "include=groups,groups.permissions",
            "include=groups.permissions,groups&fields[groups.permissions]=id,name,description",
            "include=groups.permissions&fields[groups]=created,display_name,name,id&limit=50",
        ],
        [
            "filter[name]=alice&filter[created][gte]=2024-01-01T00:00:00Z",
            "filter[created][gte]=2024-01-01&filter[name][eq]=alice",
            "filter[created][gte]=2024-01-01T02:00:00%2B02:00&filter[name]=alice&sort=id",
            "filter[created][gte]=2023-12-31T19:00:00-05:00&filter[%20name]=alice",
        ],
        ["sort=-created,name", "sort=-created,name,id", "sort=%20-created%20,name,-created"],
        ["filter[id][in]=3,1,2", "filter[id][in]=1,2,3", "filter[id][in]=2,%203,1,1,"],
    ],
)
def test_equivalent_spellings_share_one_string(spellings: list[str]) -> None:
    strings = {canonical("users", raw) for raw in spellings}
    assert len(strings) == 1
    queries = {make_query("users", raw) for raw in spellings}
    assert len(queries) == 1


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("fields=id", "fields=name"),
        ("", "fields=id,name"),
        ("include=groups", ""),
        ("include=groups", "include=groups.users"),
        ("include=groups&fields[groups]=id", "include=groups"),
        ("sort=name", "sort=-name"),
        ("sort=name,created", "sort=created,name"),
        ("limit=2", "limit=3"),
        ("count=true", ""),
        ("filter[name]=a", "filter[name]=A"),
        ("filter[name]=a", "filter[name][ne]=a"),
        ("filter[name]=a", "filter[groups.name]=a"),
        ("filter[name]=a%20", "filter[name]=a"),
        ("filter[id]=1", "filter[id][in]=1"),
    ],
)
def test_different_meanings_give_different_strings(one: str, other: str) -> None:
    assert canonical("users", one) != canonical("users", other)


def test_shape_params_of_a_plan() -> None:
    plan = make_query("groups", "fields=name&include=users.groups&fields[users.groups]=id").plan
    assert shape_params(plan) == [
        ("fields", "name"),
        ("include", "users.groups"),
        ("fields[users.groups]", "id"),
    ]


# --- random valid queries round-trip ---------------------------------------------------------

_ZONES = st.none() | st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_DATETIMES = st.tuples(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1)), _ZONES
).map(lambda pair: pair[0].replace(tzinfo=pair[1]))


def _datetime_text(value: datetime) -> st.SearchStrategy[str]:
    spellings = [value.isoformat()]
    if value.utcoffset() == timedelta(0):
        spellings.append(value.replace(tzinfo=None).isoformat() + "Z")
    return st.sampled_from(spellings)


def _scalar_text(attribute: Attribute, *, in_list: bool) -> st.SearchStrategy[str]:
    codec = attribute.codec
    if isinstance(codec, IntegerCodec):
        return st.integers(codec.minimum, codec.maximum).map(str)
    if codec.name == "timestamp":
        return _DATETIMES.flatmap(_datetime_text)
    assert isinstance(codec, StringCodec), codec
    # UTF-8 has no lone surrogates; NUL is refused by the parser and ',' splits an `in` list
    alphabet = st.characters(codec="utf-8", exclude_characters="\x00" + ("," if in_list else ""))
    return st.text(alphabet, max_size=codec.length or 16)


_OPERATORS = {  # by codec name: the built-in models hold these three types only
    "integer": ("eq", "ne", "lt", "lte", "gt", "gte", "in", "isnull"),
    "timestamp": ("eq", "ne", "lt", "lte", "gt", "gte", "in", "isnull"),
    "string": ("eq", "ne", "lt", "gte", "in", "contains", "startswith", "isnull"),
}


def _relationship_paths(resource: Resource, depth: int) -> list[tuple[Path, Resource]]:
    paths: list[tuple[Path, Resource]] = [((), resource)]
    if depth > 0:
        for relationship in resource.relationships:
            target = relationship.target
            for rest, end in _relationship_paths(target, depth - 1):
                paths.append(((relationship.name, *rest), end))
    return paths


@st.composite
def filter_params(draw: st.DrawFn, resource: Resource, token: bool) -> list[str]:
    params: dict[tuple[Path, str], str] = {}
    for _ in range(draw(st.integers(0, 4))):
        path, target = draw(st.sampled_from(_relationship_paths(resource, 2)))
        visible = target.visible_attributes(private=token)
        attribute = target.attribute(draw(st.sampled_from(visible)))
        assert attribute is not None
        op = draw(st.sampled_from(_OPERATORS[attribute.codec.name]))
        if op == "isnull":
            value = draw(st.sampled_from(["true", "false", "TRUE", "False"]))
        elif op == "in":
            items = draw(st.lists(_scalar_text(attribute, in_list=True), min_size=1, max_size=4))
            value = ",".join(quote(item, safe="") for item in items)
        else:
            value = quote(draw(_scalar_text(attribute, in_list=False)), safe="")
        key = ".".join((*path, attribute.name))
        spelled = f"filter[{key}]" if op == "eq" and draw(st.booleans()) else f"filter[{key}][{op}]"
        params[((*path, attribute.name), op)] = f"{spelled}={value}"
    return list(params.values())


@st.composite
def valid_queries(draw: st.DrawFn) -> tuple[str, bool, str]:
    resource_name = draw(st.sampled_from(sorted(RESOURCES)))
    resource = RESOURCES[resource_name]
    token = draw(st.booleans())
    params: list[str] = []
    visible = resource.visible_attributes(private=token)
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(visible), min_size=1))
        params.append("fields=" + ",".join(names))
    leaves = draw(st.lists(st.sampled_from(_relationship_paths(resource, 3)[1:]), max_size=3))
    if leaves:
        params.append("include=" + ",".join(".".join(path) for path, _ in leaves))
        for path, target in draw(st.lists(st.sampled_from(leaves), unique=True)):
            names = draw(
                st.lists(st.sampled_from(target.visible_attributes(private=token)), min_size=1)
            )
            params.append(f"fields[{'.'.join(path)}]=" + ",".join(names))
    params += draw(filter_params(resource, token))
    sort = draw(st.lists(st.sampled_from(visible), unique=True, max_size=3))
    if sort:
        params.append(
            "sort=" + ",".join(("-" if draw(st.booleans()) else "") + name for name in sort)
        )
    if draw(st.booleans()):
        params.append(f"limit={draw(st.integers(1, 500))}")
    if draw(st.booleans()):
        params.append("count=" + draw(st.sampled_from(["true", "false", "estimated"])))
    return resource_name, token, "&".join(draw(st.permutations(params)))


@given(query=valid_queries())
def test_canonical_string_parses_to_the_same_query(query: tuple[str, bool, str]) -> None:
    resource, token, raw = query
    original = make_query(resource, raw, token=token)
    text = to_query_string(list_params(original))
    again = make_query(resource, text, token=token)
    assert again == original
    assert to_query_string(list_params(again)) == text
    assert binding(again) == binding(original)
    assert text == text.encode("ascii").decode()  # links are plain ASCII
    assert "cursor=" not in text


# --- binding ---------------------------------------------------------------------------------

_BASE = "filter[name][startswith]=a&filter[created][gte]=2024-01-01&sort=-created"


@pytest.mark.parametrize(
    "raw",
    [
        _BASE + "&fields=name",
        _BASE + "&include=groups.permissions&fields[groups]=name",
        _BASE + "&limit=7",
        _BASE + "&count=true",
        _BASE + ",id",
        "sort=-created&filter[created][gte]=2024-01-01T00:00:00Z&filter[name][startswith]=a",
    ],
)
def test_binding_ignores_shape_limit_and_count(raw: str) -> None:
    assert binding(make_query("users", raw)) == binding(make_query("users", _BASE))


@pytest.mark.parametrize(
    "raw",
    [
        "filter[name][startswith]=a&filter[created][gte]=2024-01-01",
        "filter[name][startswith]=a&filter[created][gte]=2024-01-01&sort=created",
        "filter[name][startswith]=a&filter[created][gte]=2024-01-01&sort=-created,name",
        "filter[name][startswith]=a&filter[created][gte]=2024-01-01&sort=-created,-id",
        "filter[name][startswith]=b&filter[created][gte]=2024-01-01&sort=-created",
        "filter[name][contains]=a&filter[created][gte]=2024-01-01&sort=-created",
        "filter[name][startswith]=a&filter[created][gt]=2024-01-01&sort=-created",
        "filter[name][startswith]=a&sort=-created",
        _BASE + "&filter[id][gt]=3",
        _BASE + "&filter[groups.name]=admins",
    ],
)
def test_binding_changes_with_filters_or_sort(raw: str) -> None:
    assert binding(make_query("users", raw)) != binding(make_query("users", _BASE))


def test_binding_changes_with_resource_and_scope() -> None:
    users = make_query("users", "sort=name")
    groups = make_query("groups", "sort=name")
    assert binding(users) != binding(groups)
    scoped = replace(groups, scope=Scope(relationship("users", "groups"), 1))
    other_parent = replace(groups, scope=Scope(relationship("users", "groups"), 2))
    other_relationship = replace(groups, scope=Scope(relationship("permissions", "groups"), 1))
    assert len({binding(q) for q in (groups, scoped, other_parent, other_relationship)}) == 4
    assert binding(scoped) == "groups|users/1/groups||name,id"  # parent/key/relationship


def test_values_cannot_forge_a_binding_separator() -> None:
    one = make_query("users", "filter[name]=a%7C&filter[display_name]=b")
    other = make_query("users", "filter[name]=a&filter[display_name]=%7Cb")
    assert binding(one) != binding(other)
