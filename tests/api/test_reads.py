"""GET lists, items and sub-collections: exact keys, exact SQL, data equal to the junctions."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import AUTH as RESOURCES
from tests.conftest import StatementLog

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]

Shape = tuple[str, ...]


def include_shapes(resource: str) -> list[Shape]:
    """None, each relationship, and each nested pair, as include paths (parents included)."""
    shapes: list[Shape] = [()]
    for relationship in RESOURCES[resource].relationships:
        shapes.append((relationship.name,))
        for nested in relationship.target.relationships:
            shapes.append((relationship.name, f"{relationship.name}.{nested.name}"))
    return shapes


SHAPES = [(resource, shape) for resource in RESOURCES for shape in include_shapes(resource)]


def server_timing_queries(response: httpx.Response) -> int:
    match = re.search(r'db;dur=[\d.]+;desc="(\d+) queries"', response.headers["server-timing"])
    assert match, response.headers["server-timing"]
    return int(match.group(1))


def selected_columns(statement: str) -> set[str]:
    """`SELECT a.x, b.y AS z FROM ...` -> {'a.x', 'b.y'}."""
    head = re.split(r"\s+FROM\s+", statement, maxsplit=1)[0]
    head = re.sub(r"^\s*SELECT\s+", "", head)
    return {re.sub(r"\s+AS\s+\w+$", "", part.strip()) for part in head.split(",")}


def levels_with_rows(body: dict[str, Any], paths: Shape) -> int:
    """How many include levels had parent rows to load for (SQLAlchemy skips empty levels)."""
    count = 0
    for path in paths:
        parents = body["data"]
        for name in path.split(".")[:-1]:
            parents = [child for parent in parents for child in parent[name]]
        count += bool(parents)
    return count


@pytest.mark.parametrize("limit", [1, 10, 100])
@pytest.mark.parametrize(
    ("resource", "shape"), SHAPES, ids=lambda v: ",".join(v) if isinstance(v, tuple) else v
)
async def test_list_runs_one_statement_per_include_level(
    client: httpx.AsyncClient, statements: StatementLog, resource: str, shape: Shape, limit: int
) -> None:
    params = {"limit": str(limit)}
    if shape:
        params["include"] = ",".join(shape)
    response = await client.get(f"/{resource}", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"], "the seeded data must fill the first page"
    expected = 1 + len(shape)  # every level runs, even one whose parents found nothing
    assert len(statements.selects()) == expected
    assert len(statements) == expected
    assert server_timing_queries(response) == expected


async def test_nested_include_is_three_statements_whatever_the_page(
    client: httpx.AsyncClient, statements: StatementLog
) -> None:
    for limit in (5, 50, 500):
        statements.clear()
        response = await client.get(
            "/users", params={"include": "groups.permissions", "limit": limit}
        )
        assert response.status_code == 200
        assert len(statements) == 3


async def test_each_statement_selects_only_requested_columns_and_join_keys(
    client: httpx.AsyncClient, statements: StatementLog
) -> None:
    response = await client.get(
        "/users",
        params={
            "fields": "name",
            "include": "groups.permissions",
            "fields[groups]": "display_name",
            "fields[groups.permissions]": "name",
            "limit": "20",
        },
    )
    assert response.status_code == 200
    users, groups, permissions = statements.statements
    assert selected_columns(users) == {"auth_user.id", "auth_user.name"}
    assert selected_columns(groups) == {
        "auth_user_group.user_id",
        "auth_group.id",
        "auth_group.display_name",
    }
    assert selected_columns(permissions) == {
        "auth_group_permission.group_id",
        "auth_permission.id",
        "auth_permission.name",
    }
    for statement in statements.statements:
        assert "password" not in statement
        assert "email_address" not in statement


async def test_default_selection_never_loads_private_or_write_only_columns(
    client: httpx.AsyncClient, statements: StatementLog
) -> None:
    response = await client.get("/users", params={"limit": "3"})
    assert response.status_code == 200
    (users,) = statements.statements
    assert selected_columns(users) == {
        "auth_user.id",
        "auth_user.name",
        "auth_user.display_name",
        "auth_user.created",
    }


EXACT_KEYS = [
    ("/users", {}, False, {"id", "name", "display_name", "created"}),
    ("/users", {}, True, {"id", "name", "display_name", "created", "email_address"}),
    ("/users", {"fields": "name"}, False, {"name"}),
    ("/users", {"fields": " name , id,name "}, False, {"id", "name"}),
    ("/users", {"fields": "email_address"}, True, {"email_address"}),
    ("/users", {"fields": "name", "include": "groups"}, False, {"name", "groups"}),
    ("/groups", {}, False, {"id", "name", "display_name", "created"}),
    (
        "/groups",
        {"include": "users,permissions"},
        False,
        {"id", "name", "display_name", "created", "users", "permissions"},
    ),
    ("/permissions", {}, False, {"id", "name", "description"}),
    ("/permissions", {"fields": "description"}, False, {"description"}),
]


@pytest.mark.parametrize(("path", "params", "with_token", "keys"), EXACT_KEYS)
async def test_objects_hold_exactly_the_requested_keys(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    path: str,
    params: dict[str, str],
    with_token: bool,
    keys: set[str],
) -> None:
    response = await client.get(
        path, params={**params, "limit": "20"}, headers=auth if with_token else {}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data
    assert all(set(item) == keys for item in data)


async def test_nested_objects_hold_exactly_their_requested_keys(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/users",
        params={
            "fields": "id",
            "include": "groups.permissions",
            "fields[groups]": "name",
            "fields[groups.permissions]": "name,description",
            "limit": "100",
        },
    )
    assert response.status_code == 200
    groups = [group for user in response.json()["data"] for group in user["groups"]]
    permissions = [p for group in groups for p in group["permissions"]]
    assert groups
    assert permissions
    assert all(set(group) == {"name", "permissions"} for group in groups)
    assert all(set(p) == {"name", "description"} for p in permissions)


async def test_included_data_equals_the_junction_tables(
    seeded_url: str, client: httpx.AsyncClient
) -> None:
    response = await client.get(
        "/users",
        params={
            "fields": "id",
            "include": "groups.permissions",
            "fields[groups]": "id",
            "fields[groups.permissions]": "id",
            "limit": "500",
        },
    )
    assert response.status_code == 200
    engine = create_async_engine(seeded_url)
    try:
        async with engine.connect() as connection:
            memberships = (
                await connection.execute(
                    text("SELECT user_id, group_id FROM auth_user_group ORDER BY user_id, group_id")
                )
            ).all()
            grants = (
                await connection.execute(
                    text(
                        "SELECT group_id, permission_id FROM auth_group_permission"
                        " ORDER BY group_id, permission_id"
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    groups_of: dict[int, list[int]] = {}
    for user_id, group_id in memberships:
        groups_of.setdefault(user_id, []).append(group_id)
    permissions_of: dict[int, list[int]] = {}
    for group_id, permission_id in grants:
        permissions_of.setdefault(group_id, []).append(permission_id)
    for user in response.json()["data"]:
        assert [g["id"] for g in user["groups"]] == groups_of.get(user["id"], [])
        for group in user["groups"]:
            assert [p["id"] for p in group["permissions"]] == permissions_of.get(group["id"], [])


@pytest.mark.parametrize(
    ("parent", "relation"),
    [(r.name, rel.name) for r in RESOURCES.values() for rel in r.relationships],
)
async def test_item_and_sub_collection_agree_with_include(
    client: httpx.AsyncClient, statements: StatementLog, parent: str, relation: str
) -> None:
    listing = await client.get(f"/{parent}", params={"include": relation, "limit": "500"})
    assert listing.status_code == 200
    for row in listing.json()["data"][:8]:
        item = await client.get(f"/{parent}/{row['id']}", params={"include": relation})
        assert item.status_code == 200
        assert item.json()["data"] == row
        statements.clear()
        related = await client.get(f"/{parent}/{row['id']}/{relation}", params={"limit": "500"})
        assert related.status_code == 200
        assert related.json()["data"] == row[relation]
        assert related.json()["meta"]["next_cursor"] is None
        assert len(statements) == 2  # the parent's existence, then the page


@pytest.mark.parametrize(
    "path", ["/users/999999", "/groups/999999/users", "/permissions/2147483647/groups", "/nowhere"]
)
async def test_missing_things_are_problem_404s(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 404
    assert {"type", "title", "status", "detail"} <= set(problem)


async def test_keyset_pages_by_id_visit_every_row_once(client: httpx.AsyncClient) -> None:
    seen: list[int] = []
    url: str | None = "/users?fields=id&limit=7"
    while url is not None:
        response = await client.get(url)
        assert response.status_code == 200
        body = response.json()
        seen.extend(item["id"] for item in body["data"])
        assert (body["links"]["next"] is None) == (body["meta"]["next_cursor"] is None)
        url = body["links"]["next"]
    everything = await client.get("/users", params={"fields": "id", "limit": "500"})
    assert seen == [item["id"] for item in everything.json()["data"]]
    assert seen == sorted(seen)


async def test_spec_example_shape_and_links(client: httpx.AsyncClient) -> None:
    response = await client.get("/users?fields=id,name&include=groups&fields[groups]=name&limit=2")
    assert response.status_code == 200
    body = response.json()
    assert len(body["data"]) == 2
    assert all(set(user) == {"id", "name", "groups"} for user in body["data"])
    cursor = body["meta"]["next_cursor"]
    assert (
        body["links"]["next"]
        == f"/users?fields=id,name&include=groups&fields[groups]=name&limit=2&cursor={cursor}"
    )


async def test_item_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/users/1?fields=name")
    assert response.status_code == 200
    assert response.json() == {"data": {"name": "alice"}}


@pytest.mark.parametrize(
    "query",
    [
        "include=groups.users.groups.permissions",  # depth 4
        "include="
        + ",".join(["groups.users.groups", "groups.permissions.groups"] * 1)
        + ",groups.users,groups.permissions,groups.users.groups,groups.permissions.groups.users",
        "limit=501",
        "limit=0",
        "fields=password",
        "filter[password]=x",
        "sort=password",
        "fields[groups]=name",
    ],
)
async def test_bad_requests_are_rejected_before_any_statement(
    client: httpx.AsyncClient, statements: StatementLog, query: str
) -> None:
    response = await client.get(f"/users?{query}")
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["parameter"]
    assert len(statements) == 0
    assert server_timing_queries(response) == 0


async def test_a_url_over_the_limit_is_414(
    client: httpx.AsyncClient, statements: StatementLog
) -> None:
    response = await client.get("/users", params={"fields": "id," * 3000})
    assert response.status_code == 414
    assert response.headers["content-type"] == "application/problem+json"
    assert len(statements) == 0


async def test_server_timing_and_request_id_on_every_response(client: httpx.AsyncClient) -> None:
    for path in ("/users?limit=1", "/users/999999", "/healthz", "/nowhere"):
        response = await client.get(path, headers={"X-Request-ID": "abc-123"})
        assert "total;dur=" in response.headers["server-timing"]
        assert "db;dur=" in response.headers["server-timing"]
        assert response.headers["x-request-id"] == "abc-123"
    generated = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["x-request-id"])


async def test_method_not_allowed_and_validation_errors_are_problems(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put("/users")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == "GET, HEAD, POST"
    item = await client.put("/users/1")
    assert item.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    response = await client.get("/users/not-a-number")
    assert response.status_code == 404  # no id is spelt that way
    assert response.headers["content-type"] == "application/problem+json"


READ_CASES = [
    ("/users?fields=id,name&include=groups.permissions&limit=7", {}),
    ("/users?include=groups&sort=-created&limit=5&count=true", {}),
    ("/users?fields=id,email_address&filter[groups.name][startswith]=g&limit=4", "token"),
    ("/groups/3?include=users&fields[users]=name", {}),
    ("/groups/3/users?fields=id&limit=3", {}),
    ("/groups/999999/users", {}),  # a missing parent: 404
    ("/permissions/999999", {}),  # a missing item: 404
    ("/users?include=groups&limit=2", {"Cache-Control": "no-cache"}),
]


@pytest.mark.parametrize(("path", "headers"), READ_CASES)
async def test_the_fast_case_answers_exactly_as_the_slow_case(
    seeded_url: str, make_client: MakeClient, auth: dict[str, str], path: str, headers: Any
) -> None:
    """serve_read answers a current entry early (a hit), everything else in the request
    context: the two must not differ in anything but `X-Cache` and the timing."""
    sent = auth if headers == "token" else headers
    client = await make_client(seeded_url)
    first = await client.get(path, headers=sent)  # a miss (or a problem), the slow case
    assert first.status_code in (200, 404)
    second = await client.get(path, headers=sent)  # a hit where the first was stored
    assert_same_answer(first, second)
    etag = first.headers.get("etag")
    if etag:
        revalidated = [
            await client.get(path, headers={**sent, "If-None-Match": etag}),
            await client.get(
                path, headers={**sent, "If-None-Match": etag, "Cache-Control": "no-cache"}
            ),
        ]
        assert [r.status_code for r in revalidated] == [304, 304]
        assert_same_answer(*revalidated)


def assert_same_answer(fast: httpx.Response, routed: httpx.Response) -> None:
    kept = ("content-type", "content-length", "etag", "cache-control", "vary")
    assert fast.status_code == routed.status_code
    assert fast.content == routed.content
    assert [fast.headers.get(k) for k in kept] == [routed.headers.get(k) for k in kept]
    for response in (fast, routed):
        assert response.headers["x-request-id"]
        assert response.headers["server-timing"].endswith(tuple("0123456789"))


async def test_a_url_over_the_limit_is_414_even_when_an_entry_with_its_meaning_is_cached(
    seeded_url: str, make_client: MakeClient
) -> None:
    client = await make_client(seeded_url)
    assert (await client.get("/users?fields=id,name&limit=3")).status_code == 200
    hit = await client.get("/users?fields=id,name&limit=3")
    assert hit.headers["x-cache"] == "HIT"
    padded = "/users?fields=id," + " " * 8200 + "name&limit=3"  # spaces do not change meaning
    response = await client.get(padded)
    assert response.status_code == 414
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_hit_answered_ahead_of_the_stack_keeps_the_request_id_and_is_timed(
    seeded_url: str, make_client: MakeClient
) -> None:
    client = await make_client(seeded_url)
    path = "/groups?fields=id&limit=2"
    assert (await client.get(path)).headers["x-cache"] == "MISS"
    hit = await client.get(path, headers={"X-Request-ID": "trace-42"})
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["x-request-id"] == "trace-42"
    timing = hit.headers["server-timing"]
    assert re.fullmatch(r'db;dur=0\.00;desc="0 queries", total;dur=\d+\.\d\d', timing), timing
