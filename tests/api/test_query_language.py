"""Filters, sort, keyset cursors and counts, checked against a Python model of the contract.

The reference reads the seeded tables once per backend and applies SPEC.md's reading rules
in plain Python: eq/ne/lt/lte/gt/gte/in/contains/startswith/isnull with SQL's NULL rules
(`ne` keeps NULLs), Unicode `str.lower()` for the case-insensitive operators, `%` and `_`
as literal characters, relationship paths as independent EXISTS, code-point ordering with
NULL as the largest value and `id` as the final tiebreaker.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from service.app import create_app
from service.models import Group, Permission, User, group_permission, user_group
from service.query.columns import build_page_select
from service.query.memo import plan_list
from tests.api.test_reads import levels_with_rows, server_timing_queries
from tests.conftest import AUTH as RESOURCES
from tests.conftest import TOKEN, StatementLog, make_test_settings
from tests.contract.reference import matches

Row = dict[str, Any]
Kind = str  # an attribute's codec name: "integer", "string" or "timestamp" here
Filter = tuple[str, str, str]  # ("groups.name", "contains", "adm")
Params = list[tuple[str, Any]]  # httpx's query value types

PROBLEM = "application/problem+json"
NO_CACHE = {"Cache-Control": "no-cache"}


# --- the reference model ------------------------------------------------------------------


def attribute_type(resource: str, path: Sequence[str]) -> tuple[str, Kind]:
    """The resource a dotted path ends on, and the type of its final attribute."""
    for name in path[:-1]:
        relationship = RESOURCES[resource].relationship(name)
        assert relationship is not None, path
        resource = relationship.target.name
    attribute = RESOURCES[resource].attribute(path[-1])
    assert attribute is not None, path
    return resource, attribute.codec.name


def parse_scalar(kind: Kind, raw: str) -> Any:
    if kind == "integer":
        return int(raw)
    if kind == "timestamp":
        moment = datetime.fromisoformat(raw)
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    return raw


def parse_value(kind: Kind, op: str, raw: str) -> Any:
    if op == "isnull":
        return raw.lower() == "true"
    if op == "in":
        return {parse_scalar(kind, item) for item in raw.split(",")}
    return parse_scalar(kind, raw)


def sort_key(value: Any) -> tuple[Any, ...]:
    """NULL is the largest value."""
    return (1,) if value is None else (0, value)


@dataclass(frozen=True)
class Reference:
    rows: dict[str, dict[int, Row]]  # resource -> id -> row
    links: dict[tuple[str, str], dict[int, frozenset[int]]]  # (resource, relationship) -> ...

    def related(self, resource: str, relationship: str, row_id: int) -> frozenset[int]:
        return self.links[(resource, relationship)].get(row_id, frozenset())

    def holds(self, resource: str, row_id: int, path: Sequence[str], op: str, wanted: Any) -> bool:
        if len(path) == 1:
            return matches(self.rows[resource][row_id][path[0]], op, wanted)
        relationship = RESOURCES[resource].relationship(path[0])
        assert relationship is not None
        return any(
            self.holds(relationship.target.name, other, path[1:], op, wanted)
            for other in self.related(resource, path[0], row_id)
        )

    def select(
        self,
        resource: str,
        filters: Sequence[Filter] = (),
        sort: str | None = None,
        among: frozenset[int] | None = None,
    ) -> list[int]:
        """The ids a list request must return, in order."""
        ids = sorted(self.rows[resource] if among is None else among)
        for dotted, op, raw in filters:
            path = dotted.split(".")
            _, kind = attribute_type(resource, path)
            wanted = parse_value(kind, op, raw)
            ids = [i for i in ids if self.holds(resource, i, path, op, wanted)]
        keys = [(k.lstrip("-"), k.startswith("-")) for k in (sort or "id").split(",")]
        for name, descending in reversed(keys):  # stable sorts, least significant key first
            values = {i: sort_key(self.rows[resource][i][name]) for i in ids}
            ids.sort(key=values.__getitem__, reverse=descending)
        return ids


async def load_reference(url: str) -> Reference:
    """Every row of the five tables, read through the Core tables so types are converted."""
    engine = create_async_engine(url)
    tables = {
        "users": User.__table__,
        "groups": Group.__table__,
        "permissions": Permission.__table__,
    }
    try:
        async with engine.connect() as connection:
            rows: dict[str, dict[int, Row]] = {}
            for resource, table in tables.items():
                result = await connection.execute(select(table))
                rows[resource] = {row["id"]: dict(row) for row in result.mappings()}
            memberships = (await connection.execute(select(user_group))).all()
            grants = (await connection.execute(select(group_permission))).all()
    finally:
        await engine.dispose()
    links: dict[tuple[str, str], dict[int, set[int]]] = {
        key: {} for key in (("users", "groups"), ("groups", "users"), ("groups", "permissions"))
    }
    links[("permissions", "groups")] = {}
    for user_id, group_id in memberships:
        links[("users", "groups")].setdefault(user_id, set()).add(group_id)
        links[("groups", "users")].setdefault(group_id, set()).add(user_id)
    for group_id, permission_id in grants:
        links[("groups", "permissions")].setdefault(group_id, set()).add(permission_id)
        links[("permissions", "groups")].setdefault(permission_id, set()).add(group_id)
    frozen = {key: {k: frozenset(v) for k, v in value.items()} for key, value in links.items()}
    return Reference(rows, frozen)


@pytest.fixture(scope="module")
async def reference(seeded_url: str) -> Reference:
    return await load_reference(seeded_url)


def test_the_reference_model_sees_the_seeded_oddities(reference: Reference) -> None:
    users = reference.rows["users"]
    assert len(users) == 60
    assert any(row["display_name"] is None for row in users.values())
    assert any(
        isinstance(row["created"], datetime) and row["created"].microsecond
        for row in users.values()
    )
    assert reference.select("users", [("display_name", "contains", "ö")])  # finds 'Öskar'
    assert reference.select("users", [("display_name", "contains", "%")]) == [49, 54]


# --- HTTP helpers -------------------------------------------------------------------------


def filter_params(filters: Sequence[Filter]) -> Params:
    return [
        (f"filter[{path}]" if op == "eq" else f"filter[{path}][{op}]", raw)
        for path, op, raw in filters
    ]


def list_params(
    filters: Sequence[Filter] = (), sort: str | None = None, limit: int | None = None, **extra: str
) -> Params:
    params = [("fields", "id"), *filter_params(filters)]
    if sort is not None:
        params.append(("sort", sort))
    if limit is not None:
        params.append(("limit", str(limit)))
    params.extend(extra.items())
    return params


@dataclass
class Walk:
    ids: list[int]
    pages: list[dict[str, Any]]


async def walk(
    client: httpx.AsyncClient, path: str, params: Params, headers: dict[str, str] | None = None
) -> Walk:
    """Follow links.next from the first page to the last, checking each page's envelope."""
    limit = int(dict(params).get("limit", "50"))
    response = await client.get(path, params=params, headers=headers)
    ids: list[int] = []
    pages: list[dict[str, Any]] = []
    while True:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        pages.append(body)
        assert len(body["data"]) <= limit
        ids.extend(item["id"] for item in body["data"])
        next_link = body["links"]["next"]
        assert (next_link is None) == (body["meta"]["next_cursor"] is None)
        if next_link is None:
            return Walk(ids, pages)
        assert body["data"], "a page with a next link must hold rows"
        assert len(pages) <= 500, "the walk does not end"
        response = await client.get(next_link, headers=headers)


def assert_problem(response: httpx.Response, status: int, parameter: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["errors"][0]["parameter"] == parameter, problem
    return problem


# --- each operator on each attribute type ---------------------------------------------------


@dataclass(frozen=True)
class Case:
    resource: str
    filters: tuple[Filter, ...]
    empty: bool = False  # the reference result is expected to be empty

    def __str__(self) -> str:
        return f"{self.resource}?" + "&".join(f"{k}={v}" for k, v in filter_params(self.filters))


OPERATOR_CASES = [
    # integers
    Case("users", (("id", "eq", "5"),)),
    Case("users", (("id", "eq", "-1"),), empty=True),
    Case("users", (("id", "ne", "5"),)),
    Case("users", (("id", "lt", "10"),)),
    Case("users", (("id", "lte", "10"),)),
    Case("users", (("id", "gt", "50"),)),
    Case("users", (("id", "gte", "50"),)),
    Case("users", (("id", "in", "1,3,5,999"),)),
    Case("users", (("id", "isnull", "true"),), empty=True),
    Case("users", (("id", "isnull", "false"),)),
    Case("permissions", (("id", "in", "15,2"),)),
    # strings: plain comparisons, code-point order, NULLs
    Case("users", (("name", "eq", "alice"),)),
    Case("users", (("name", "eq", "ALICE"),), empty=True),  # eq is case-sensitive
    Case("users", (("name", "ne", "alice"),)),
    Case("users", (("name", "lt", "user00010"),)),
    Case("users", (("name", "gte", "user0005"),)),
    Case("users", (("name", "in", "alice,bob,nobody"),)),
    Case("users", (("display_name", "eq", "Zoë Lee"),)),
    Case("users", (("display_name", "ne", "Zoë Lee"),)),  # keeps the NULLs
    Case("users", (("display_name", "lt", "B"),)),  # 'ANNA' < 'Alice' < 'B' by code point
    Case("users", (("display_name", "gt", "Z"),)),  # 'Zoë', 'snake', 'Ö...' but no NULLs
    Case("users", (("display_name", "lte", "Emma Smith"),)),
    Case("users", (("display_name", "in", "Zoë Lee,Mr. %,nobody"),)),
    Case("users", (("display_name", "isnull", "true"),)),
    Case("users", (("display_name", "isnull", "false"),)),
    Case("users", (("display_name", "isnull", "TRUE"),)),
    Case("groups", (("display_name", "ne", "Editors"),)),
    Case("permissions", (("description", "isnull", "true"),)),
    Case("permissions", (("description", "gte", "Read"),)),
    # case-insensitive text operators, with LIKE's wildcards as literals
    Case("users", (("name", "contains", "LIC"),)),
    Case("users", (("name", "startswith", "USER0001"),)),
    Case("users", (("display_name", "contains", "anna"),)),  # Anna, anna and ANNA
    Case("users", (("display_name", "startswith", "AnNa "),)),
    Case("users", (("display_name", "contains", "%"),)),
    Case("users", (("display_name", "contains", "100%"),)),
    Case("users", (("display_name", "contains", "_"),)),
    Case("users", (("display_name", "contains", "E_C"),)),
    Case("users", (("display_name", "startswith", "m_"),), empty=True),
    Case("users", (("display_name", "startswith", "%"),), empty=True),
    Case("users", (("display_name", "startswith", "_"),), empty=True),
    Case("permissions", (("name", "startswith", "perm_"),)),
    Case("permissions", (("name", "startswith", "perm%"),), empty=True),
    Case("permissions", (("name", "contains", "m_0001"),)),
    Case("users", (("display_name", "contains", "renée"),)),
    Case("users", (("display_name", "contains", "RENÉE"),)),  # 'É' lowers to the stored 'é'
    Case("users", (("display_name", "contains", "weiß"),)),
    Case("users", (("display_name", "contains", "ö"),)),
    Case("users", (("display_name", "contains", "Ö"),)),
    Case("users", (("display_name", "startswith", "ö"),)),
    Case("users", (("display_name", "contains", "ÍÑIGUEZ"),)),
    Case("users", (("display_name", "contains", "íñiguez"),)),
    Case("permissions", (("description", "contains", "MÜLLER"),)),  # stored 'ü' is lower already
    # datetimes, naive (UTC) and zoned, with ties and microseconds
    Case("users", (("created", "eq", "2023-07-01T00:00:00"),)),
    Case("users", (("created", "eq", "2023-07-01T02:00:00+02:00"),)),
    Case("users", (("created", "eq", "2023-06-30T19:00:00-05:00"),)),
    Case("users", (("created", "ne", "2023-07-01T00:00:00Z"),)),
    Case("users", (("created", "gte", "2025-01-01T00:00:00Z"),)),
    Case("users", (("created", "lt", "2024-01-01T01:00:00+01:00"),)),
    Case("users", (("created", "gt", "2023-12-16T01:19:26.022056"),)),  # excludes that row
    Case("users", (("created", "gte", "2023-12-16T01:19:26.022056"),)),  # includes it
    Case("users", (("created", "lte", "2023-12-16T02:19:26.022056+01:00"),)),
    Case("users", (("created", "in", "2023-07-01T00:00:00Z,2024-02-05T00:00:00"),)),
    Case("users", (("created", "isnull", "false"),)),
    Case("users", (("created", "isnull", "true"),), empty=True),
    Case("groups", (("created", "lt", "2023-01-04"),)),
    # several filters are ANDed
    Case(
        "users", (("id", "gt", "10"), ("display_name", "contains", "e"), ("name", "lt", "user0004"))
    ),
    Case(
        "groups", (("created", "gte", "2024-01-01T00:00:00Z"), ("display_name", "isnull", "false"))
    ),
]


@pytest.mark.parametrize("case", OPERATOR_CASES, ids=str)
async def test_each_operator_matches_the_reference(
    client: httpx.AsyncClient, reference: Reference, case: Case
) -> None:
    expected = reference.select(case.resource, case.filters)
    assert (not expected) == case.empty, "the case must test what it says"
    result = await walk(client, f"/{case.resource}", list_params(case.filters, limit=500))
    assert result.ids == expected


# Capital dotted I, and a word-final capital sigma: str.lower maps them with context or
# to two code points, where simple per-character case mappings do not.
FOLDING_NAMES = (
    "\u0130pek",
    "ipek",
    "\u039f\u0394\u039f\u03a3",
    "Stra\u00dfe",
    "STRASSE",
    "\u00d6z",
)


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("contains", "\u0130"),
        ("contains", "ipek"),
        ("startswith", "i\u0307p"),
        ("contains", "\u03bf\u03c2"),
    ],
)
async def test_case_folding_follows_python_lower_beyond_simple_mappings(
    request: pytest.FixtureRequest,
    backend: str,
    database_url: str,
    make_client: Callable[..., Awaitable[httpx.AsyncClient]],
    op: str,
    value: str,
) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(User),
                [
                    {"id": i, "name": f"u{i}", "email_address": f"u{i}@x.org", "display_name": n}
                    for i, n in enumerate(FOLDING_NAMES, start=1)
                ],
            )
    finally:
        await engine.dispose()
    rows = dict(enumerate(FOLDING_NAMES, start=1))
    expected = [i for i, name in rows.items() if matches(name, op, value)]
    assert expected
    client = await make_client(database_url)
    result = await walk(client, "/users", list_params([("display_name", op, value)]))
    assert result.ids == expected


async def test_private_attribute_filters_and_sorts_with_a_token(
    client: httpx.AsyncClient, auth: dict[str, str], reference: Reference
) -> None:
    filters = [("email_address", "contains", "EXAMPLE.ORG")]
    result = await walk(client, "/users", list_params(filters, "-email_address", 9), auth)
    assert result.ids == reference.select("users", filters, "-email_address")
    assert result.ids
    by_address = [("users.email_address", "startswith", "ALICE@")]
    result = await walk(client, "/groups", list_params(by_address), auth)
    assert result.ids == reference.select("groups", by_address) == [1]


# --- relationship paths ---------------------------------------------------------------------


RELATIONSHIP_CASES = [
    Case("users", (("groups.name", "eq", "admins"),)),
    Case("users", (("groups.id", "gt", "3"),)),  # most users match through several groups
    Case("users", (("groups.display_name", "isnull", "true"),)),
    Case("users", (("groups.display_name", "ne", "Viewers"),)),
    Case("users", (("groups.permissions.name", "eq", "edit"),)),
    Case("users", (("groups.permissions.id", "in", "3,4"),)),
    Case("users", (("groups.users.name", "eq", "bob"),)),  # bob's fellow editors, and bob
    Case("groups", (("users.name", "in", "alice,carol"),)),
    Case("groups", (("permissions.description", "contains", "resource"),)),
    Case("groups", (("users.groups.name", "eq", "viewers"),)),
    Case("permissions", (("groups.users.name", "eq", "alice"),)),
    Case("permissions", (("groups.created", "gte", "2025-01-01T00:00:00Z"),)),
]


@pytest.mark.parametrize("case", RELATIONSHIP_CASES, ids=str)
async def test_relationship_filters_are_exists_without_duplicates(
    client: httpx.AsyncClient, reference: Reference, case: Case
) -> None:
    expected = reference.select(case.resource, case.filters)
    assert expected
    result = await walk(client, f"/{case.resource}", list_params(case.filters, limit=7))
    assert len(result.ids) == len(set(result.ids))
    assert result.ids == expected


async def test_two_filters_on_one_relationship_are_independent_exists(
    client: httpx.AsyncClient, reference: Reference
) -> None:
    memberships = reference.links[("users", "groups")]
    in_both = [u for u, groups in memberships.items() if {5, 9} <= groups]
    assert in_both, "the seed must have users in both groups"
    filters = [("groups.name", "eq", "group0005"), ("groups.id", "eq", "9")]
    result = await walk(client, "/users", list_params(filters))
    assert result.ids == sorted(in_both) == reference.select("users", filters)
    # The same group cannot hold both names: one EXISTS for both filters would find nobody.
    two_names = [("groups.name", "eq", "group0005"), ("groups.name", "ne", "group0005")]
    result = await walk(client, "/users", list_params(two_names))
    assert result.ids == reference.select("users", two_names)
    assert result.ids


# --- hypothesis: random filters and sorts, every page walked ----------------------------------


@dataclass(frozen=True)
class Query:
    resource: str
    filters: tuple[Filter, ...]
    sort: str
    limit: int
    count: bool


def filter_paths(resource: str, depth: int = 2) -> Iterator[tuple[str, ...]]:
    """Every attribute path from `resource` crossing at most `depth` relationships."""
    for attribute in RESOURCES[resource].attributes:
        yield (attribute.name,)
    if depth:
        for relationship in RESOURCES[resource].relationships:
            for rest in filter_paths(relationship.target.name, depth - 1):
                yield (relationship.name, *rest)


# Letters whose case differs beyond ASCII, and LIKE's wildcards, which must stay literal.
MADE_UP_TEXT = string.ascii_letters + string.digits + " %_.'-öÖüÜßéÉíÍñÑëËøØ"
COMPARISONS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "isnull")
OPS: dict[Kind, tuple[str, ...]] = {
    "integer": COMPARISONS,
    "timestamp": COMPARISONS,
    "string": (*COMPARISONS, "contains", "startswith"),
}
ZONES = (None, timedelta(0), timedelta(hours=2), timedelta(hours=-5, minutes=-30))


def format_datetime(moment: datetime, zone: timedelta | None, z_suffix: bool) -> str:
    if zone is None:
        return moment.isoformat()
    if zone == timedelta(0) and z_suffix:
        return moment.isoformat() + "Z"
    return moment.replace(tzinfo=UTC).astimezone(timezone(zone)).isoformat()


def scalar_values(reference: Reference, resource: str, name: str) -> Any:
    """Values from the data (exact, cut, recased) and made-up ones, as raw filter text."""
    attribute = RESOURCES[resource].attribute(name)
    assert attribute is not None
    seen = sorted({row[name] for row in reference.rows[resource].values() if row[name] is not None})
    if attribute.codec.name == "integer":
        return st.one_of(st.sampled_from(seen), st.integers(-3, 80)).map(str)
    if attribute.codec.name == "timestamp":
        moments = st.one_of(
            st.sampled_from(seen),
            st.datetimes(datetime(2022, 6, 1), datetime(2026, 6, 1)),
        )
        return st.builds(format_datetime, moments, st.sampled_from(ZONES), st.booleans())

    @st.composite
    def cut(draw: st.DrawFn) -> str:
        text: str = draw(st.sampled_from(seen))
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, len(text)))
        recasings: list[Callable[[str], str]] = [str, str.lower, str.upper, str.swapcase]
        recase = draw(st.sampled_from(recasings))
        return recase(text[start:end])

    made_up = st.text(alphabet=MADE_UP_TEXT, min_size=1, max_size=5)
    return st.one_of(st.sampled_from(seen), cut(), made_up)


@st.composite
def filters_strategy(draw: st.DrawFn, reference: Reference, resource: str) -> Filter:
    path = draw(st.sampled_from(list(filter_paths(resource))))
    target, kind = attribute_type(resource, path)
    op = draw(st.sampled_from(OPS[kind]))
    if op == "isnull":
        raw = draw(st.sampled_from(["true", "false"]))
    elif op == "in":
        values = scalar_values(reference, target, path[-1])
        items = draw(st.lists(values.map(lambda v: v.replace(",", "")), min_size=1, max_size=4))
        raw = ",".join(items)
    else:
        raw = draw(scalar_values(reference, target, path[-1]))
    return (".".join(path), op, raw)


def query_strategy(reference: Reference, resource: str) -> st.SearchStrategy[Query]:
    names = [a.name for a in RESOURCES[resource].attributes]
    sort_keys = st.lists(
        st.tuples(st.sampled_from(names), st.booleans()),
        min_size=1,
        max_size=2,
        unique_by=lambda key: key[0],
    ).map(lambda keys: ",".join(("-" if desc else "") + name for name, desc in keys))
    return st.builds(
        Query,
        resource=st.just(resource),
        filters=st.lists(
            filters_strategy(reference, resource),
            min_size=1,
            max_size=3,
            unique_by=lambda f: (f[0], f[1]),
        ).map(tuple),
        sort=sort_keys,
        limit=st.integers(1, 25),
        count=st.booleans(),
    )


@pytest.mark.parametrize("resource", ["users", "groups"])
def test_random_filters_and_sorts_walk_exactly_the_reference(
    seeded_url: str, reference: Reference, resource: str
) -> None:
    # A known regression first: PostgreSQL's lower() on COLLATE "C" folds ASCII only.
    path_to_users = "display_name" if resource == "users" else "users.display_name"
    known = Query(resource, ((path_to_users, "contains", "ö"),), "-display_name", 4, True)
    with asyncio.Runner() as runner:
        app = create_app(make_test_settings(seeded_url))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

        def check(query: Query) -> None:
            expected = reference.select(query.resource, query.filters, query.sort)
            params = list_params(query.filters, query.sort, query.limit)
            if query.count:
                params.append(("count", "true"))
            result = runner.run(walk(client, f"/{query.resource}", params))
            assert result.ids == expected, (query, params)
            if query.count:
                assert {page["meta"]["total"] for page in result.pages} == {len(expected)}

        property_test = settings(
            max_examples=60, deadline=None, suppress_health_check=list(HealthCheck)
        )(given(query=query_strategy(reference, resource))(example(query=known)(check)))
        try:
            property_test()
        finally:
            runner.run(client.aclose())
            runner.run(app.state.services.db.engine.dispose())


# --- keyset walks ---------------------------------------------------------------------------


KEYSET_SORTS = (
    "display_name",
    "-display_name",
    "-created,name",
    "created",
    "display_name,name",  # all ascending: one row comparison
    "created,display_name",  # two nullable keys: a row comparison until a cursor holds NULL
    "-created",
    "display_name,-created",
    "-display_name,-id",
    "-name",
    "-id",
)


@pytest.mark.parametrize(
    ("sort", "limit"),
    [(sort, limit) for sort in KEYSET_SORTS for limit in (4, 13)]
    + [(sort, 1) for sort in KEYSET_SORTS[:3]],  # a cursor after every single row
)
async def test_keyset_walks_visit_every_row_once_in_reference_order(
    client: httpx.AsyncClient, reference: Reference, sort: str, limit: int
) -> None:
    for resource in ("users", "groups"):
        result = await walk(client, f"/{resource}", list_params(sort=sort, limit=limit))
        assert result.ids == reference.select(resource, sort=sort)
        assert len(result.pages) == -(-len(result.ids) // limit)


async def test_keyset_walk_with_filters_and_null_sort_values(
    client: httpx.AsyncClient, reference: Reference
) -> None:
    filters = [("display_name", "ne", "Zoë Lee"), ("groups.id", "gte", "4")]
    for sort in ("display_name", "-display_name", "-created,name"):
        result = await walk(client, "/users", list_params(filters, sort, 3))
        expected = reference.select("users", filters, sort)
        assert result.ids == expected
        assert any(reference.rows["users"][i]["display_name"] is None for i in expected)


async def test_a_deep_ascending_page_on_a_nullable_key_starts_at_its_cursor(
    backend: str, seeded_url: str, client: httpx.AsyncClient, statements: StatementLog
) -> None:
    """NULLs sort last ascending, so "after the cursor" is the larger values and then every
    NULL: one row comparison over `(col IS NULL, col, id)`, which an index of that shape
    answers as a range (a plain index on `col` was walked from its start)."""
    params = {"sort": "display_name", "fields": "id", "limit": "5"}
    cursor = await first_cursor(client, "/users", params)
    statements.clear()
    response = await client.get("/users", params={**params, "cursor": cursor})
    assert response.status_code == 200
    (page,) = statements.selects()
    assert "IS NULL, auth_user.display_name, auth_user.id) >" in page, page
    if backend != "postgres":
        return
    # The plan of that page with sequential scans ruled out: the comparison must be an index
    # condition on the `(display_name IS NULL, display_name, id)` index, not a filter.
    app = create_app(make_test_settings(seeded_url, cache_url="none"))
    query = plan_list(
        app.state.services.registry["users"],
        f"sort=display_name&fields=id&limit=5&cursor={cursor}".encode(),
        private_ok=False, limits=app.state.services.limits, scope=None,
        codec=app.state.services.reader.codec,
    )  # fmt: skip
    engine = create_async_engine(seeded_url)
    try:
        sql = str(build_page_select(query).compile(engine, compile_kwargs={"literal_binds": True}))
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SET enable_seqscan = off")
            rows = await connection.exec_driver_sql(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in rows)
    finally:
        await engine.dispose()
        await app.state.services.db.engine.dispose()
    assert "ix_auth_user_display_name_nulls_last" in plan, plan
    assert "Index Cond: (ROW(" in plan, plan


async def first_cursor(client: httpx.AsyncClient, path: str, params: Params) -> str:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    cursor: str = response.json()["meta"]["next_cursor"]
    assert cursor
    return cursor


BASE_FILTERS: list[Filter] = [("display_name", "isnull", "false")]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/users", list_params(BASE_FILTERS, "-display_name")),  # another direction
        ("/users", list_params(BASE_FILTERS, "display_name,name")),  # another key
        ("/users", list_params(BASE_FILTERS, "created")),
        ("/users", list_params((), "display_name")),  # a filter dropped
        ("/users", list_params([("display_name", "isnull", "true")], "display_name")),
        ("/users", list_params([*BASE_FILTERS, ("id", "gt", "0")], "display_name")),
        ("/groups", list_params(BASE_FILTERS, "display_name")),  # another resource
        ("/groups/5/users", list_params(BASE_FILTERS, "display_name")),  # a sub-collection
    ],
)
async def test_a_cursor_is_bound_to_its_filters_and_sort(
    client: httpx.AsyncClient, statements: StatementLog, path: str, params: Params
) -> None:
    cursor = await first_cursor(client, "/users", list_params(BASE_FILTERS, "display_name", 3))
    statements.clear()
    response = await client.get(path, params=[*params, ("cursor", cursor)])
    assert_problem(response, 400, "cursor")
    assert len(statements) == 0


def tampered(cursor: str) -> Iterator[str]:
    payload, mac = cursor.split(".")
    flip = {"A": "B"}.get(payload[0], "A")
    yield flip + payload[1:] + "." + mac
    yield payload + "." + ("A" if mac[-1] != "A" else "B") + mac[:-1]
    yield payload
    yield payload + "." + mac + ".x"
    yield "not-a-cursor"
    yield "%%%."
    yield "." + mac


async def test_an_altered_cursor_is_rejected(
    client: httpx.AsyncClient, statements: StatementLog
) -> None:
    cursor = await first_cursor(client, "/users", list_params(sort="-created,name", limit=5))
    for bad in tampered(cursor):
        statements.clear()
        response = await client.get(
            "/users", params=[*list_params(sort="-created,name", limit=5), ("cursor", bad)]
        )
        assert_problem(response, 400, "cursor")
        assert len(statements) == 0


async def test_a_cursor_survives_changes_to_fields_include_and_limit(
    client: httpx.AsyncClient, reference: Reference
) -> None:
    filters: list[Filter] = [("groups.permissions.name", "ne", "manage")]
    sort = "-created,name"
    expected = reference.select("users", filters, sort)
    response = await client.get("/users", params=list_params(filters, sort, 5))
    cursor = response.json()["meta"]["next_cursor"]
    seen = [item["id"] for item in response.json()["data"]]
    params = [
        ("fields", "name,id"),
        ("include", "groups.permissions"),
        ("fields[groups]", "name"),
        *filter_params(filters),
        ("sort", sort),
        ("limit", "9"),
        ("cursor", cursor),
    ]
    result = await walk(client, "/users", params)
    assert seen + result.ids == expected
    assert len(result.pages[0]["data"]) == 9
    first = result.pages[0]["data"][0]
    assert set(first) == {"id", "name", "groups"}
    assert first["name"] == reference.rows["users"][first["id"]]["name"]


# --- statements and counts -------------------------------------------------------------------


async def test_filtered_sorted_pages_with_nested_include_run_three_statements(
    client: httpx.AsyncClient, statements: StatementLog
) -> None:
    params = [
        *filter_params([("groups.permissions.name", "eq", "read"), ("display_name", "ne", "x")]),
        ("sort", "-created,name"),
        ("include", "groups.permissions"),
        ("limit", "4"),
    ]
    url: str | None = None
    for page in range(3):
        statements.clear()
        response = await (
            client.get(url, headers=NO_CACHE)
            if url
            else client.get("/users", params=params, headers=NO_CACHE)
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["data"], page
        assert levels_with_rows(body, ("groups", "groups.permissions")) == 2
        assert len(statements) == len(statements.selects()) == 3
        assert server_timing_queries(response) == 3
        url = body["links"]["next"]
    statements.clear()
    response = await client.get("/users", params=[*params, ("count", "true")], headers=NO_CACHE)
    assert response.status_code == 200
    assert len(statements) == 4
    assert server_timing_queries(response) == 4


@pytest.mark.parametrize(
    ("names", "expected_names"),
    [("erin,frank", ["frank", "erin"]), ("erin", ["erin"]), ("nobody", [])],
)
async def test_statement_count_holds_when_levels_are_empty(
    client: httpx.AsyncClient, statements: StatementLog, names: str, expected_names: list[str]
) -> None:
    # erin has no groups, nobody does not exist: every level still runs (and finds nothing).
    params = [
        *filter_params([("name", "in", names)]),
        ("include", "groups.permissions"),
        ("sort", "-name"),
    ]
    response = await client.get("/users", params=params, headers=NO_CACHE)
    assert response.status_code == 200
    assert [u["name"] for u in response.json()["data"]] == expected_names
    assert len(statements) == len(statements.selects()) == 3
    assert server_timing_queries(response) == 3


@pytest.mark.parametrize(
    ("resource", "filters"),
    [
        ("users", []),
        ("users", [("display_name", "contains", "ANNA")]),
        ("users", [("groups.permissions.name", "eq", "edit"), ("created", "lt", "2024-01-01")]),
        ("groups", [("users.display_name", "isnull", "true")]),
        ("permissions", [("groups.users.name", "eq", "nobody")]),
    ],
)
async def test_count_true_is_exact_and_independent_of_the_cursor(
    client: httpx.AsyncClient, reference: Reference, resource: str, filters: list[Filter]
) -> None:
    expected = len(reference.select(resource, filters))
    sort = "-name" if resource == "permissions" else "-created"
    params = list_params(filters, sort, 3, count="true")
    result = await walk(client, f"/{resource}", params)
    assert len(result.ids) == expected
    assert [page["meta"]["total"] for page in result.pages] == [expected] * len(result.pages)
    assert all("count=true" in page["links"]["next"] for page in result.pages[:-1])


async def test_count_false_adds_no_total(client: httpx.AsyncClient) -> None:
    response = await client.get("/users", params={"count": "false", "limit": "2"})
    assert response.status_code == 200
    assert "total" not in response.json()["meta"]


async def test_count_estimated_per_backend(
    backend: str, client: httpx.AsyncClient, statements: StatementLog, reference: Reference
) -> None:
    filters = [("display_name", "contains", "e")]
    response = await client.get(
        "/users", params=list_params(filters, limit=2, count="estimated"), headers=NO_CACHE
    )
    assert response.status_code == 200, response.text
    meta = response.json()["meta"]
    assert isinstance(meta["total"], int)
    assert meta["total"] >= 0
    assert len(statements) == 2
    if backend == "postgres":
        assert meta["estimated"] is True
        assert any(s.lstrip().upper().startswith("EXPLAIN") for s in statements.statements)
    else:
        assert meta["estimated"] is False
        assert meta["total"] == len(reference.select("users", filters))


# --- sub-collections -------------------------------------------------------------------------

SUB_COLLECTIONS = [
    ("users", "groups", [("display_name", "isnull", "false")], "-created"),
    ("groups", "users", [("display_name", "ne", "Zoë Lee")], "display_name,-created"),
    ("groups", "users", [("groups.name", "ne", "group0011")], "-display_name"),
    ("groups", "permissions", [("description", "contains", "A")], "-description"),
    ("permissions", "groups", [("created", "gte", "2023-01-02T12:00:00+02:00")], "-name"),
    ("groups", "users", [], "display_name"),  # ascending nullable: the row comparison
    ("groups", "permissions", [], "description,name"),
]


def busiest_parent(reference: Reference, parent: str, relationship: str) -> int:
    links = reference.links[(parent, relationship)]
    return max(links, key=lambda i: (len(links[i]), -i))


@pytest.mark.parametrize(("parent", "relationship", "filters", "sort"), SUB_COLLECTIONS)
async def test_sub_collections_take_the_target_list_parameters(
    client: httpx.AsyncClient,
    reference: Reference,
    parent: str,
    relationship: str,
    filters: list[Filter],
    sort: str,
) -> None:
    target = RESOURCES[parent].relationship(relationship)
    assert target is not None
    parent_id = busiest_parent(reference, parent, relationship)
    among = reference.related(parent, relationship, parent_id)
    expected = reference.select(target.target.name, filters, sort, among=among)
    assert len(expected) > 2, "the case must span several pages"
    path = f"/{parent}/{parent_id}/{relationship}"
    result = await walk(client, path, list_params(filters, sort, 2, count="true"))
    assert result.ids == expected
    assert {page["meta"]["total"] for page in result.pages} == {len(expected)}
    assert result.pages[0]["links"]["next"].startswith(path + "?")
    # The cursor is bound to this parent too.
    cursor = result.pages[0]["meta"]["next_cursor"]
    other = next(i for i in sorted(reference.links[(parent, relationship)]) if i != parent_id)
    response = await client.get(
        f"/{parent}/{other}/{relationship}",
        params=[*list_params(filters, sort, 2), ("cursor", cursor)],
    )
    assert_problem(response, 400, "cursor")


# --- bad input -------------------------------------------------------------------------------


def too_many_filters() -> str:
    keys = [f"filter[id][{op}]=1" for op in ("eq", "ne", "lt", "lte", "gt", "gte", "in")]
    keys += [
        f"filter[name][{op}]=a" for op in ("ne", "lt", "lte", "gt", "gte", "contains", "startswith")
    ]
    keys += [
        f"filter[display_name][{op}]=a" for op in ("eq", "ne", "lt", "lte", "gt", "gte", "contains")
    ]
    assert len(keys) == 21
    return "&".join(keys)


BAD_INPUT = [
    # (path, query, with token, status, parameter, a piece of the detail)
    ("/users", "filter[nmae]=x", False, 400, "filter[nmae]", "did you mean 'name'"),
    ("/users", "filter[name][like]=x", False, 400, "filter[name][like]", "like"),
    ("/users", "filter[name][]=x", False, 400, "filter[name][]", ""),
    ("/users", "filter[id]=abc", False, 400, "filter[id]", "abc"),
    ("/users", "filter[id]=1.5", False, 400, "filter[id]", ""),
    ("/users", "filter[id][in]=1,x", False, 400, "filter[id][in]", ""),
    ("/users", "filter[id]=99999999999", False, 400, "filter[id]", ""),
    ("/users", "filter[created][gte]=notadate", False, 400, "filter[created][gte]", ""),
    ("/users", "filter[id][contains]=1", False, 400, "filter[id][contains]", ""),
    ("/users", "filter[created][startswith]=2024", False, 400, "filter[created][startswith]", ""),
    (
        "/users",
        "filter[display_name][isnull]=maybe",
        False,
        400,
        "filter[display_name][isnull]",
        "",
    ),
    ("/users", "filter[groups]=1", False, 400, "filter[groups]", "relationship"),
    ("/users", "filter[grups.name]=x", False, 400, "filter[grups.name]", "did you mean 'groups'"),
    ("/users", "filter[groups.nmae]=x", False, 400, "filter[groups.nmae]", "did you mean 'name'"),
    ("/users", "sort=groups", False, 400, "sort", "relationship"),
    ("/users", "sort=nmae", False, 400, "sort", "did you mean 'name'"),
    ("/users", "sort=name,-name", False, 400, "sort", ""),
    ("/users", "filter[password]=x", False, 400, "filter[password]", ""),
    ("/users", "filter[password]=x", True, 400, "filter[password]", ""),
    ("/users", "sort=password", False, 400, "sort", ""),
    ("/users", "sort=-password", True, 400, "sort", ""),
    (
        "/groups",
        "filter[users.password][isnull]=true",
        True,
        400,
        "filter[users.password][isnull]",
        "",
    ),
    ("/users", "filter[email_address]=alice@example.com", False, 403, "filter[email_address]", ""),
    ("/users", "sort=email_address", False, 403, "sort", ""),
    (
        "/groups",
        "filter[users.email_address][contains]=a",
        False,
        403,
        "filter[users.email_address][contains]",
        "",
    ),
    ("/users", too_many_filters(), False, 400, "filter", "20"),
    ("/users", "filter[name]=a&filter[name]=b", False, 400, "filter[name]", ""),
    ("/users/1/groups", "filter[nmae]=x", False, 400, "filter[nmae]", "did you mean 'name'"),
    ("/groups/1/permissions", "sort=groups", False, 400, "sort", ""),
    ("/users", "count=maybe", False, 400, "count", ""),
]


@pytest.mark.parametrize(
    ("path", "query", "with_token", "status", "parameter", "detail"), BAD_INPUT
)
async def test_bad_query_input_is_a_problem_before_any_statement(
    client: httpx.AsyncClient,
    statements: StatementLog,
    auth: dict[str, str],
    path: str,
    query: str,
    with_token: bool,
    status: int,
    parameter: str,
    detail: str,
) -> None:
    response = await client.get(f"{path}?{query}", headers=auth if with_token else {})
    problem = assert_problem(response, status, parameter)
    assert detail in problem["detail"]
    assert "email_address" not in problem["detail"] or "email_address" in query
    assert len(statements) == 0
    assert server_timing_queries(response) == 0


async def test_suggestions_never_point_at_private_attributes(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    anonymous = await client.get("/users?filter[email_adress]=x")
    problem = assert_problem(anonymous, 400, "filter[email_adress]")
    assert "email_address" not in problem["detail"]
    with_token = await client.get("/users?filter[email_adress]=x", headers=auth)
    problem = assert_problem(with_token, 400, "filter[email_adress]")
    assert "email_address" in problem["detail"]
