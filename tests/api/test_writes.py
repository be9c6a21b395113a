"""POST, PATCH and DELETE: shapes, strict bodies, all-or-nothing, bounded SQL, password hashes."""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.app import create_app
from tests.conftest import (
    TOKEN,
    DatabaseFactory,
    app_of,
    make_test_settings,
    quiet_collector,
    record_statements,
)

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBLEM = "application/problem+json"
USER_AND_GROUP_KEYS = {"id", "name", "display_name", "created"}
TABLES = ("auth_user", "auth_group", "auth_permission", "auth_user_group", "auth_group_permission")


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"]
    assert problem["title"]
    assert problem["detail"]
    return problem


def pointers(problem: dict[str, Any]) -> list[str]:
    return [item["pointer"] for item in problem.get("errors", []) if "pointer" in item]


def user(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "email_address": f"{name}@example.com", **extra}


async def row_counts(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as connection:
        counts = {}
        for table in TABLES:
            result = await connection.execute(text(f"SELECT count(*) FROM {table}"))
            counts[table] = int(result.scalar_one())
        return counts


async def pairs(engine: AsyncEngine, table: str) -> set[tuple[int, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(text(f"SELECT * FROM {table}"))
        return {(int(a), int(b)) for a, b in rows}


async def scalar(engine: AsyncEngine, sql: str, **params: object) -> Any:
    async with engine.connect() as connection:
        return (await connection.execute(text(sql), params)).scalar_one_or_none()


@pytest.fixture
async def api(database_url: str, make_client: MakeClient) -> httpx.AsyncClient:
    return await make_client(database_url)


@dataclass(frozen=True, slots=True)
class World:
    url: str
    api: httpx.AsyncClient
    engine: AsyncEngine


@pytest.fixture(scope="module")
async def world(databases: DatabaseFactory) -> AsyncIterator[World]:
    """make_world's rows, shared by the tests that only get refusals in this module.

    Each of them asserts that every table is as it found it, so none can hide a write
    from the next (and a fresh PostgreSQL database per refusal test costs seconds).
    """
    url = await databases.migrated()
    app = create_app(make_test_settings(url))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    direct = create_async_engine(url)
    await make_world(client)
    yield World(url, client, direct)
    await client.aclose()
    await direct.dispose()
    await app.state.services.db.engine.dispose()
    app.state.services.writer.hasher.close()


async def post(client: httpx.AsyncClient, path: str, body: object, **params: str) -> httpx.Response:
    return await client.post(path, json=body, params=params, headers=AUTH)


async def make_world(client: httpx.AsyncClient) -> None:
    """permissions 1-3, groups 1-3, users 1-4 with some links each way."""
    for body, path in (
        ([{"name": f"perm{i}"} for i in (1, 2, 3)], "/permissions"),
        ([{"name": f"grp{i}", "permission_ids": [1, i]} for i in (1, 2, 3)], "/groups"),
        ([user(f"user{i}", group_ids=[1 + i % 3]) for i in (1, 2, 3, 4)], "/users"),
    ):
        response = await post(client, path, body)
        assert response.status_code == 201, response.text


# --- creating --------------------------------------------------------------------------------


async def test_one_object_is_201_shaped_by_the_request_with_a_location(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await post(api, "/groups", [{"name": "admins"}, {"name": "staff"}])
    response = await post(
        api,
        "/users",
        user("alice", display_name="Alice", group_ids=[2, 1]),
        fields="id,name,email_address",
        include="groups",
        **{"fields[groups]": "name"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "data": {
            "id": 1,
            "name": "alice",
            "email_address": "alice@example.com",
            "groups": [{"name": "admins"}, {"name": "staff"}],
        }
    }
    assert response.headers["location"] == "/users/1"
    assert (await api.get("/users/1", params={"fields": "display_name"})).json() == {
        "data": {"display_name": "Alice"}
    }
    assert await pairs(engine, "auth_user_group") == {(1, 1), (1, 2)}

    # Without fields: every attribute a token holder may see, and never the password.
    for path, body, keys in (
        ("/users", user("bob", password="hunter2-secret"), {*USER_AND_GROUP_KEYS, "email_address"}),
        ("/groups", {"name": "g"}, USER_AND_GROUP_KEYS),
        ("/permissions", {"name": "p"}, {"id", "name", "description"}),
    ):
        created = await post(api, path, body)
        assert created.status_code == 201, created.text
        data = created.json()["data"]
        assert set(data) == keys
        assert data.get("display_name", data.get("description")) is None
        assert created.headers["location"] == f"{path}/{data['id']}"
    charset = {**AUTH, "Content-Type": "application/json; charset=utf-8"}
    content = b'{"name": "a", "email_address": "a@example.org"}'
    assert (await api.post("/users", content=content, headers=charset)).status_code == 201


async def test_a_batch_is_201_with_a_list_in_input_order_and_links_go_each_way(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    names = ["zoe", "adam", "mia", "bo"]
    response = await post(api, "/users", [user(n) for n in names], fields="name,id")
    assert response.status_code == 201, response.text
    assert "location" not in response.headers
    data = response.json()["data"]
    assert [item["name"] for item in data] == names
    assert [set(item) for item in data] == [{"id", "name"}] * 4
    assert len({item["id"] for item in data}) == 4
    for item in data:
        stored = await scalar(engine, "SELECT name FROM auth_user WHERE id = :i", i=item["id"])
        assert stored == item["name"]
    single_batch = await post(api, "/users", [user("solo")], fields="name")
    assert single_batch.json() == {"data": [{"name": "solo"}]}

    await post(api, "/permissions", [{"name": "read"}, {"name": "write"}])
    group = await post(
        api,
        "/groups",
        {"name": "crew", "display_name": "Crew", "user_ids": [2, 1, 2], "permission_ids": [2]},
        include="users,permissions",
        fields="name",
        **{"fields[users]": "name", "fields[permissions]": "name"},
    )
    assert group.status_code == 201, group.text
    assert group.json()["data"] == {
        "name": "crew",
        "users": [{"name": "zoe"}, {"name": "adam"}],
        "permissions": [{"name": "write"}],
    }
    permission = await post(api, "/permissions", {"name": "admin", "group_ids": [1]})
    assert permission.status_code == 201, permission.text
    assert await pairs(engine, "auth_user_group") == {(1, 1), (2, 1)}
    assert await pairs(engine, "auth_group_permission") == {(1, 2), (1, 3)}


async def test_a_write_reads_back_shaped_lists_and_refuses_bad_shapes_before_writing(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    """sort[path], limit[path] and count[path] shape a write's answer like a read's; a
    refused shape writes nothing."""
    await post(api, "/users", [user(n) for n in ("ann", "ben", "cat")])
    shaped = {
        "fields": "name",
        "include": "users",
        "fields[users]": "name",
        "sort[users]": "-name",
        "limit[users]": "2",
        "count[users]": "true",
        "count[permissions]": "true",
    }
    created = await post(api, "/groups", {"name": "trio", "user_ids": [1, 2, 3]}, **shaped)
    assert created.status_code == 201, created.text
    assert created.json()["data"] == {
        "name": "trio",
        "users": [{"name": "cat"}, {"name": "ben"}],
        "users_count": 3,
        "permissions_count": 0,
    }
    patched = await api.patch("/groups/1", json={"user_ids": [1]}, params=shaped, headers=AUTH)
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["users_count"] == 1
    refusals = (
        {"sort[users]": "name"},
        {"include": "users", "limit[users]": "0"},
        {"count[users.groups]": "true"},
        {"include": "users", "sort[users]": "nmae"},
    )
    for bad in refusals:
        refused = await post(api, "/groups", {"name": "never"}, **bad)
        assert refused.status_code == 400, (bad, refused.text)
    assert await scalar(engine, "SELECT count(*) FROM auth_group WHERE name = 'never'") == 0


async def test_batch_items_may_set_different_optional_fields(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    later_has_more = await post(
        api, "/users", [user("c"), user("d", display_name="D", password="pw-of-d")]
    )
    assert later_has_more.status_code == 201, later_has_more.text
    assert [u["display_name"] for u in later_has_more.json()["data"]] == [None, "D"]
    assert await scalar(engine, "SELECT display_name FROM auth_user WHERE name = 'd'") == "D"
    assert await scalar(engine, "SELECT password FROM auth_user WHERE name = 'd'") is not None
    first_has_more = await post(
        api, "/permissions", [{"name": "read", "description": "Read"}, {"name": "write"}]
    )
    assert first_has_more.status_code == 201, first_has_more.text
    assert [p["description"] for p in first_has_more.json()["data"]] == ["Read", None]
    password_then_none = await post(api, "/users", [user("e", password="pw-of-e"), user("f")])
    assert password_then_none.status_code == 201, password_then_none.text


# --- rejected bodies -------------------------------------------------------------------------

UNPROCESSABLE: list[tuple[str, object, str]] = [
    # unknown fields: no mass assignment
    ("/users", user("a", id=5), "/id"),
    ("/users", user("a", created="2024-01-01T00:00:00"), "/created"),
    ("/users", user("a", password_hash="$argon2id$v=19$m=19456,t=2,p=1$x$y"), "/password_hash"),
    ("/users", user("a", nmae="x"), "/nmae"),
    ("/users", user("a", groups=[1]), "/groups"),
    ("/groups", {"name": "g", "password": "secret-pw"}, "/password"),
    ("/groups", {"name": "g", "id": 1}, "/id"),
    ("/groups", {"name": "g", "group_ids": []}, "/group_ids"),
    ("/permissions", {"name": "p", "display_name": "x"}, "/display_name"),
    ("/permissions", {"name": "p", "created": None}, "/created"),
    ("/users", [user("a"), user("b"), user("c"), user("d", id=1)], "/3/id"),
    # required, types, lengths, syntax
    ("/users", {"email_address": "a@example.com"}, "/name"),
    ("/users", {"name": "a"}, "/email_address"),
    ("/users", user("a") | {"name": 123}, "/name"),
    ("/users", user("a") | {"name": True}, "/name"),
    ("/users", user("a") | {"name": None}, "/name"),
    ("/users", user("a") | {"name": ""}, "/name"),
    ("/users", user("a") | {"name": "x" * 17}, "/name"),
    ("/users", user("a") | {"name": "nul\x00"}, "/name"),
    ("/users", user("a") | {"email_address": "not-an-address"}, "/email_address"),
    ("/users", user("a") | {"email_address": "a b@example.com"}, "/email_address"),
    ("/users", user("a") | {"email_address": "x" * 250 + "@example.com"}, "/email_address"),
    ("/users", user("a") | {"email_address": None}, "/email_address"),
    ("/users", user("a", display_name="x" * 256), "/display_name"),
    ("/users", user("a", display_name=5), "/display_name"),
    ("/users", user("a", password=12345678), "/password"),
    ("/users", user("a", password=""), "/password"),
    ("/users", user("a", group_ids=["1"]), "/group_ids/0"),
    ("/users", user("a", group_ids=[0]), "/group_ids/0"),
    (
        "/users",
        user("a", group_ids=[1.5]),
        "/group_ids/0",
    ),  # 1.0 is the integer 1; a fraction is not
    ("/users", user("a", group_ids=[2**40]), "/group_ids/0"),
    ("/users", user("a", group_ids=1), "/group_ids"),
    ("/groups", {"name": "x" * 17}, "/name"),
    ("/groups", {"name": "g", "user_ids": [1, "2"]}, "/user_ids/1"),
    ("/permissions", {"name": "x" * 64}, "/name"),
    ("/permissions", {"name": "p", "description": "x" * 256}, "/description"),
    ("/permissions", {"name": ["p"]}, "/name"),
    # not objects
    ("/users", [user("a"), "b"], "/1"),
    ("/users", [user("a"), [user("b")]], "/1"),
    ("/users", "alice", ""),
    ("/users", 7, ""),
    ("/users", None, ""),
    ("/users", [], ""),
]


async def test_bad_bodies_are_422_with_a_pointer_and_write_nothing(world: World) -> None:
    api, engine = world.api, world.engine
    before = await row_counts(engine)
    for path, body, pointer in UNPROCESSABLE:
        response = await post(api, path, body)
        problem = assert_problem(response, 422)
        assert pointer in pointers(problem), (path, body, problem)
    assert await row_counts(engine) == before


async def test_an_unknown_field_gets_a_suggestion(world: World) -> None:
    api = world.api
    problem = assert_problem(await post(api, "/users", user("a", nmae="x")), 422)
    assert "did you mean 'name'" in problem["errors"][0]["detail"]
    problem = assert_problem(await post(api, "/groups", {"name": "g", "user_id": [1]}), 422)
    assert "did you mean 'user_ids'" in problem["errors"][0]["detail"]


async def test_batch_size_and_body_size_limits(
    database_url: str, make_client: MakeClient, engine: AsyncEngine
) -> None:
    client = await make_client(database_url, max_batch=5, max_body_bytes=2048)
    assert_problem(await post(client, "/users", []), 422)
    assert_problem(await post(client, "/users", [user(f"u{i}") for i in range(6)]), 422)
    assert_problem(await post(client, "/groups", [{"name": f"g{i}"} for i in range(6)]), 422)

    big = [user(f"big{i}", display_name="x" * 200) for i in range(12)]
    assert_problem(await post(client, "/users", big), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the stream is counted
        yield b'[{"name": "a", "email_address": "a@example.com", "display_name": "'
        for _ in range(30):
            yield b"x" * 100
        yield b'"}]'

    streamed = await client.post(
        "/users", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_problem(streamed, 413)
    assert_problem(
        await client.patch("/users/1", json={"display_name": "x" * 3000}, headers=AUTH), 413
    )
    assert await row_counts(engine) == dict.fromkeys(TABLES, 0)
    full = await post(client, "/users", [user(f"u{i}") for i in range(5)])
    assert full.status_code == 201, full.text
    assert len(full.json()["data"]) == 5
    assert (await post(client, "/users", big[:2])).status_code == 201


async def test_a_body_that_is_not_json_is_415(world: World) -> None:
    before = await row_counts(world.engine)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        headers = {**AUTH, "Content-Type": content_type}
        body = b'{"name": "new", "email_address": "new@example.com"}'
        assert_problem(await world.api.post("/users", content=body, headers=headers), 415)
        assert_problem(await world.api.patch("/users/1", content=b"{}", headers=headers), 415)
    assert await row_counts(world.engine) == before


MALFORMED = [
    b"",
    b"{",
    b'{"name": "a",}',
    b'{"name": "a"} trailing',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b"[" * 5000,
    b'[{"name": ' + b"[" * 3000 + b"]" * 3000 + b"}]",
    b'{"name": "\xff\xfe"}',
    b'{"name": "\\ud800", "email_address": "a@b.cd"}',
    b"NaN",
    b'{"name": 1e999999}',
    b"\x00",
]


async def test_malformed_or_deeply_nested_json_is_422_never_500(world: World) -> None:
    api, engine = world.api, world.engine
    before = await row_counts(engine)
    headers = {**AUTH, "Content-Type": "application/json"}
    for content in MALFORMED:
        for method, path in (("POST", "/users"), ("PATCH", "/users/1"), ("POST", "/groups")):
            response = await api.request(method, path, content=content, headers=headers)
            assert_problem(response, 422)
    assert await row_counts(engine) == before


EMAIL0, EMAIL2, EMAIL4 = "n0@example.com", "user2@example.com", "user4@example.com"


async def test_a_unique_clash_is_409_naming_the_field(world: World) -> None:
    api, engine = world.api, world.engine
    before = await row_counts(engine)
    cases: list[tuple[str, object, str]] = [
        ("/users", user("user1"), "/name"),
        ("/users", {"name": "new", "email_address": EMAIL2}, "/email_address"),
        ("/users", [user("n0"), user("n1"), user("user3")], "/2/name"),
        ("/users", [user("n0"), {"name": "n1", "email_address": EMAIL4}], "/1/email_address"),
        ("/users", [user("n0"), user("n1"), user("n0")], "/2/name"),
        ("/users", [user("n0"), {"name": "n1", "email_address": EMAIL0}], "/1/email_address"),
        ("/groups", {"name": "grp2"}, "/name"),
        ("/groups", [{"name": "a"}, {"name": "b"}, {"name": "a"}], "/2/name"),
        ("/permissions", [{"name": "x"}, {"name": "perm3"}], "/1/name"),
        ("/permissions", [{"name": "x"}, {"name": "x"}], "/1/name"),
    ]  # fmt: skip
    for path, body, pointer in cases:
        field = pointer.rsplit("/", 1)[-1]
        problem = assert_problem(await post(api, path, body), 409)
        assert problem["errors"][0]["pointer"] == pointer, (body, problem)
        assert field in problem["detail"], problem
    assert await row_counts(engine) == before


async def test_unknown_related_ids_are_422_pointing_at_the_id(world: World) -> None:
    api, engine = world.api, world.engine
    before = await row_counts(engine)
    cases: list[tuple[str, object, str]] = [
        ("/users", [user("new", group_ids=[999999])], "/0/group_ids/0"),
        ("/users", [user("a", group_ids=[1]), user("b", group_ids=[2, 77])], "/1/group_ids/1"),
        ("/users", user("new", group_ids=[1, 999999]), "/group_ids/1"),
        ("/groups", {"name": "g", "user_ids": [1], "permission_ids": [3, 42]}, "/permission_ids/1"),
        ("/groups", [{"name": "g", "user_ids": [5]}], "/0/user_ids/0"),
        ("/permissions", {"name": "p", "group_ids": [4]}, "/group_ids/0"),
    ]
    for path, body, pointer in cases:
        problem = assert_problem(await post(api, path, body), 422)
        assert pointer in pointers(problem), (body, problem)
    for path, body in (
        ("/users/1", {"group_ids": [999999]}),
        ("/groups/1", {"permission_ids": [1, 9]}),
        ("/permissions/1", {"group_ids": [9]}),
    ):
        problem = assert_problem(await api.patch(path, json=body, headers=AUTH), 422)
        assert pointers(problem)[0].endswith("/0") or pointers(problem)[0].endswith("/1")
    assert await row_counts(engine) == before


async def test_every_rejected_write_leaves_every_table_unchanged(
    world: World, make_client: MakeClient
) -> None:
    client = await make_client(
        world.url, max_batch=20, max_body_bytes=4096, argon2_memory_kib=64, argon2_time_cost=1
    )
    engine = world.engine
    before = await row_counts(engine)
    memberships = await pairs(engine, "auth_user_group")
    grants = await pairs(engine, "auth_group_permission")
    good = [user(f"ok{i}", group_ids=[1, 2], password="pw-ok-123") for i in range(10)]
    requests: list[tuple[str, str, object, dict[str, str]]] = [
        ("POST", "/users", [*good, user("user1", group_ids=[3], password="p")], AUTH),
        ("POST", "/users", [*good, user("late", group_ids=[999], password="p")], AUTH),
        ("POST", "/users", [*good, user("late", id=99)], AUTH),
        ("POST", "/users", [*good, user("ok3", group_ids=[], password="p")], AUTH),
        ("POST", "/users", [user(f"b{i}") for i in range(21)], AUTH),
        ("POST", "/users", [user(f"b{i}", display_name="y" * 250) for i in range(20)], AUTH),
        ("POST", "/users", good, {"Authorization": "Bearer nope"}),
        ("POST", "/users", good, {}),
        ("POST", "/groups", [{"name": "new", "user_ids": [1, 2]}, {"name": "grp1"}], AUTH),
        ("POST", "/groups", {"name": "new", "user_ids": [1], "permission_ids": [8]}, AUTH),
        ("POST", "/permissions", [{"name": "q", "group_ids": [1]}, {"name": "q"}], AUTH),
        ("PATCH", "/users/1", {"name": "user2", "group_ids": [3]}, AUTH),
        ("PATCH", "/users/1", {"email_address": "user2@example.com", "display_name": "x"}, AUTH),
        ("PATCH", "/users/1", {"group_ids": [2, 3, 1000]}, AUTH),
        ("PATCH", "/users/1", {"display_name": "x", "id": 7}, AUTH),
        ("PATCH", "/users/1", {"name": None}, AUTH),
        ("PATCH", "/users/1", [{"name": "x"}], AUTH),
        ("PATCH", "/users/99", {"display_name": "x", "group_ids": [1]}, AUTH),
        ("PATCH", "/groups/2", {"name": "grp3", "user_ids": [], "permission_ids": []}, AUTH),
        ("PATCH", "/groups/2", {"user_ids": [], "permission_ids": [1, 66]}, AUTH),
        ("PATCH", "/permissions/1", {"name": "perm2", "group_ids": []}, AUTH),
        ("PATCH", "/permissions/1", {"group_ids": []}, {"Authorization": "Basic x"}),
        ("POST", "/users?fields=nmae", user("fresh"), AUTH),
        ("POST", "/users?fields=password", user("fresh"), AUTH),
        ("POST", "/users?include=groups&fields[groups]=password", user("fresh"), AUTH),
        ("POST", "/groups?include=nope", {"name": "fresh"}, AUTH),
        ("PATCH", "/users/1?fields=", {"display_name": "changed"}, AUTH),
        ("DELETE", "/users/99", None, AUTH),
        ("DELETE", "/groups/1", None, {}),
        ("DELETE", "/groups/1", None, {"Authorization": "Bearer nope"}),
    ]
    for method, path, body, headers in requests:
        response = await client.request(method, path, json=body, headers=headers)
        assert 400 <= response.status_code < 500, (method, path, body, response.text)
        assert_problem(response, response.status_code)
        assert await row_counts(engine) == before, (method, path, body)
    assert await pairs(engine, "auth_user_group") == memberships
    assert await pairs(engine, "auth_group_permission") == grants
    stored = await scalar(engine, "SELECT count(*) FROM auth_user WHERE password IS NOT NULL")
    assert stored == 0


# --- bulk writes -----------------------------------------------------------------------------


def thousand_users() -> list[dict[str, object]]:
    return [
        user(f"bulk{i:04d}", display_name=f"Bulk {i}", group_ids=[1 + i % 3, 1 + (i + 1) % 3])
        for i in range(1000)
    ]


async def test_a_batch_of_1000_users_writes_exactly_them_and_their_memberships(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await post(api, "/groups", [{"name": f"g{i}"} for i in range(1, 4)])
    batch = thousand_users()
    response = await post(api, "/users", batch, fields="id,name", include="groups")
    assert response.status_code == 201, response.text[:500]
    data = response.json()["data"]
    assert [item["name"] for item in data] == [item["name"] for item in batch]
    ids = {item["name"]: item["id"] for item in data}
    expected = {(ids[str(item["name"])], g) for item in batch for g in item["group_ids"]}  # type: ignore[attr-defined]
    assert len(expected) == 2000
    assert await pairs(engine, "auth_user_group") == expected
    assert await row_counts(engine) == {
        "auth_user": 1000,
        "auth_group": 3,
        "auth_permission": 0,
        "auth_user_group": 2000,
        "auth_group_permission": 0,
    }
    for item in data:
        mine = sorted(g for (u, g) in expected if u == item["id"])
        assert [g["id"] for g in item["groups"]] == mine
    async with engine.connect() as connection:
        stored = await connection.execute(text("SELECT id, name, display_name FROM auth_user"))
        assert {(i, n, d) for i, n, d in stored} == {
            (ids[str(item["name"])], item["name"], item["display_name"]) for item in batch
        }


async def test_a_batch_of_1000_users_is_a_bounded_number_of_statements(
    api: httpx.AsyncClient, backend: str
) -> None:
    await post(api, "/groups", [{"name": f"g{i}"} for i in range(1, 4)])
    log = record_statements(api)
    response = await post(api, "/users", thousand_users(), fields="id,name", include="groups")
    assert response.status_code == 201, response.text[:500]
    inserts = [s for s in log.statements if s.lstrip().upper().startswith("INSERT")]
    print(f"\n1000-user batch on {backend}: {len(log)} statements, {len(inserts)} INSERTs")
    assert len(inserts) <= 4, len(inserts)
    assert len(log) <= 10, [s[:80] for s in log.statements]


async def test_a_big_batch_with_one_bad_item_writes_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await make_world(api)
    before = await row_counts(engine)
    batch = [user(f"b{i:03d}", group_ids=[1, 2, 3]) for i in range(300)]
    for bad, status in (
        (user("user4"), 409),  # clashes with stored data: found by the database
        (user("zz", group_ids=[4]), 422),
        (user("zz", created="2020-01-01T00:00:00"), 422),
        (user("b007"), 409),
    ):
        response = await post(api, "/users", [*batch[:150], bad, *batch[150:]])
        problem = assert_problem(response, status)
        assert problem["errors"][0]["pointer"].startswith("/150/") or bad["name"] == "b007"
        assert await row_counts(engine) == before


# --- updating and deleting -------------------------------------------------------------------


async def test_patch_user_is_partial_and_replaces_memberships(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await make_world(api)
    before = (await api.get("/users/2", headers=AUTH)).json()["data"]
    response = await api.patch(
        "/users/2",
        json={"display_name": "Two", "group_ids": [3, 1]},
        params={"include": "groups", "fields": "display_name", "fields[groups]": "id"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"display_name": "Two", "groups": [{"id": 1}, {"id": 3}]}}
    after = (await api.get("/users/2", headers=AUTH)).json()["data"]
    assert after == {**before, "display_name": "Two"}
    assert {g for u, g in await pairs(engine, "auth_user_group") if u == 2} == {1, 3}
    assert {g for u, g in await pairs(engine, "auth_user_group") if u == 1} == {2}

    own = await api.patch(
        "/users/1", json={"name": "user1", "email_address": "user1@example.com"}, headers=AUTH
    )
    assert own.status_code == 200, own.text
    assert (await api.patch("/groups/1", json={"name": "grp1"}, headers=AUTH)).status_code == 200
    untouched = await api.patch("/users/2", json={"name": "two"}, headers=AUTH)
    assert untouched.json()["data"]["display_name"] == "Two"
    assert {g for u, g in await pairs(engine, "auth_user_group") if u == 2} == {1, 3}
    cleared = await api.patch("/users/2", json={"display_name": None}, headers=AUTH)
    assert cleared.status_code == 200
    assert cleared.json()["data"]["display_name"] is None
    assert await scalar(engine, "SELECT display_name FROM auth_user WHERE id = 2") is None
    emptied = await api.patch("/users/2", json={"group_ids": []}, headers=AUTH)
    assert emptied.status_code == 200
    assert {g for u, g in await pairs(engine, "auth_user_group") if u == 2} == set()
    nothing = await api.patch("/users/2", json={}, params={"fields": "name"}, headers=AUTH)
    assert nothing.json() == {"data": {"name": "two"}}


async def test_patch_rejects_what_it_must(world: World) -> None:
    api, engine = world.api, world.engine
    before = await row_counts(engine)
    assert_problem(await api.patch("/users/1", json={"name": None}, headers=AUTH), 422)
    assert_problem(await api.patch("/users/1", json={"email_address": None}, headers=AUTH), 422)
    assert_problem(await api.patch("/users/1", json={"created": None}, headers=AUTH), 422)
    assert_problem(await api.patch("/users/999", json={"name": "x"}, headers=AUTH), 404)
    assert_problem(await api.patch("/groups/999", json={}, headers=AUTH), 404)
    clash = assert_problem(await api.patch("/users/1", json={"name": "user2"}, headers=AUTH), 409)
    assert clash["errors"][0]["pointer"] == "/name"
    email = {"email_address": "user3@example.com"}
    clash = assert_problem(await api.patch("/users/1", json=email, headers=AUTH), 409)
    assert clash["errors"][0]["pointer"] == "/email_address"
    assert await row_counts(engine) == before


async def test_delete_user_takes_its_memberships(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await make_world(api)
    assert any(u == 1 for u, _ in await pairs(engine, "auth_user_group"))
    response = await api.delete("/users/1", headers=AUTH)
    assert response.status_code == 204
    assert response.content == b""
    assert not any(u == 1 for u, _ in await pairs(engine, "auth_user_group"))
    assert (await row_counts(engine))["auth_user"] == 3
    assert_problem(await api.delete("/users/1", headers=AUTH), 404)
    assert_problem(await api.get("/users/1"), 404)
    assert_problem(await api.patch("/users/1", json={}, headers=AUTH), 404)


async def test_groups_and_permissions_patch_and_delete(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await make_world(api)
    response = await api.patch(
        "/groups/2",
        json={"user_ids": [4, 1], "permission_ids": [3]},
        params={"include": "users,permissions", "fields": "id"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [u["id"] for u in data["users"]] == [1, 4]
    assert [p["id"] for p in data["permissions"]] == [3]
    assert {u for u, g in await pairs(engine, "auth_user_group") if g == 2} == {1, 4}
    assert {p for g, p in await pairs(engine, "auth_group_permission") if g == 2} == {3}
    only_users = await api.patch("/groups/2", json={"user_ids": []}, headers=AUTH)
    assert only_users.status_code == 200
    assert {p for g, p in await pairs(engine, "auth_group_permission") if g == 2} == {3}
    assert all(g != 2 for _, g in await pairs(engine, "auth_user_group"))

    assert (await api.delete("/groups/1", headers=AUTH)).status_code == 204
    assert all(g != 1 for _, g in await pairs(engine, "auth_user_group"))
    assert all(g != 1 for g, _ in await pairs(engine, "auth_group_permission"))
    assert (await row_counts(engine))["auth_group"] == 2
    assert_problem(await api.delete("/groups/1", headers=AUTH), 404)

    # Permissions: the other side of auth_group_permission.
    response = await api.patch(
        "/permissions/1",
        json={"description": "First", "group_ids": [3]},
        params={"fields": "name,description", "include": "groups", "fields[groups]": "name"},
        headers=AUTH,
    )
    assert response.json() == {
        "data": {"name": "perm1", "description": "First", "groups": [{"name": "grp3"}]}
    }
    assert {g for g, p in await pairs(engine, "auth_group_permission") if p == 1} == {3}
    assert (await api.delete("/permissions/3", headers=AUTH)).status_code == 204
    assert all(p != 3 for _, p in await pairs(engine, "auth_group_permission"))
    assert_problem(await api.delete("/permissions/3", headers=AUTH), 404)
    assert_problem(await api.patch("/permissions/3", json={}, headers=AUTH), 404)


# --- passwords -------------------------------------------------------------------------------

ARGON2ID = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")


def assert_argon2id(stored: str, password: str) -> None:
    match = ARGON2ID.match(stored)
    assert match, stored
    memory, time_cost, parallelism = (int(g) for g in match.groups())
    assert memory >= 19456
    assert time_cost >= 2
    assert parallelism >= 1
    assert PasswordHasher().verify(stored, password)


def walk_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in walk_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in walk_keys(v)}
    return set()


async def test_passwords_are_stored_as_argon2id_and_never_returned(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    plain = "correct horse battery staple"
    responses = [
        await post(api, "/groups", {"name": "g"}),
        await post(api, "/users", user("alice", password=plain, group_ids=[1])),
        await post(api, "/users", [user("bob", password="bob-pw-1"), user("carol", password=None)]),
    ]
    hashes = {}
    for name, password in (("alice", plain), ("bob", "bob-pw-1")):
        stored = await scalar(engine, "SELECT password FROM auth_user WHERE name = :n", n=name)
        assert_argon2id(stored, password)
        hashes[name] = stored
    assert await scalar(engine, "SELECT password FROM auth_user WHERE name = 'carol'") is None

    responses.append(await api.patch("/users/3", json={"password": "carol-new"}, headers=AUTH))
    assert_argon2id(
        await scalar(engine, "SELECT password FROM auth_user WHERE id = 3"), "carol-new"
    )
    responses.append(await api.patch("/users/2", json={"display_name": "B"}, headers=AUTH))
    assert await scalar(engine, "SELECT password FROM auth_user WHERE id = 2") == hashes["bob"]

    responses.append(await post(api, "/users", user("alice", password=plain)))  # 409
    responses.append(await post(api, "/users", user("dave", password=plain, id=1)))  # 422
    responses.append(await post(api, "/users", user("dave", password=plain, group_ids=[9])))
    for headers in ({}, AUTH):
        for path in ("/users", "/users/1", "/groups/1/users", "/groups?include=users"):
            responses.append(await api.get(path, headers=headers))
    assert [r.status_code for r in responses[:5]] == [201, 201, 201, 200, 200]
    for response in responses:
        assert "password" not in walk_keys(response.json()), response.text
        assert plain not in response.text
        assert "bob-pw-1" not in response.text
        assert "carol-new" not in response.text
        assert "$argon2" not in response.text


async def healthz_latencies(client: httpx.AsyncClient, until: Callable[[], bool]) -> list[float]:
    """Seconds each /healthz took, called every 5 ms until `until()`."""
    latencies: list[float] = []
    while not until():
        started = time.perf_counter()
        response = await client.get("/healthz")
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
        await asyncio.sleep(0.005)
    return latencies


async def test_healthz_answers_while_a_batch_is_hashed(api: httpx.AsyncClient) -> None:
    batch = [user(f"h{i}", password=f"password-{i}") for i in range(30)]
    with quiet_collector() as collections:
        idle_until = time.perf_counter() + 0.3
        idle = await healthz_latencies(api, lambda: time.perf_counter() > idle_until)
        task = asyncio.create_task(post(api, "/users", batch))
        busy = await healthz_latencies(api, task.done)
        response = await task
    assert response.status_code == 201, response.text
    worst = max(busy) * 1000
    print(
        f"\n/healthz during a 30-password batch: {len(busy)} calls, max {worst:.1f} ms"
        f" (idle beforehand: max {max(idle) * 1000:.1f} ms; slow collections {collections})"
    )
    assert len(busy) >= 5  # the batch took long enough to measure something
    assert worst < 50


# --- random bodies ---------------------------------------------------------------------------

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["a@b.cd", "x" * 17, "x" * 300, "\x00", "1", "grp1", "user1"]),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ID_LISTS = st.lists(st.integers(min_value=1, max_value=3), max_size=3) | st.lists(
    st.integers(min_value=-2, max_value=6) | st.just(2**31), max_size=3
)
TEXT = st.none() | st.text(max_size=12) | st.sampled_from(["x" * 256, "nul\x00"])
OPTIONAL = {
    "/users": {"display_name": TEXT, "password": TEXT, "group_ids": ID_LISTS},
    "/groups": {"display_name": TEXT, "user_ids": ID_LISTS, "permission_ids": ID_LISTS},
    "/permissions": {"description": TEXT, "group_ids": ID_LISTS},
}
STRAY_KEYS = st.sampled_from(
    ["id", "created", "password_hash", "name", "email_address", "display_name", "password",
     "group_ids", "user_ids", "description", "nmae", ""]
) | st.text(max_size=10)  # fmt: skip
NAMES = st.text(min_size=1, max_size=18) | st.sampled_from(["grp1", "user1", "perm1", "u"])


@st.composite
def plausible_object(draw: st.DrawFn, path: str) -> dict[str, object]:
    """Mostly valid for `path`, with optional fields set or not and now and then a stray key."""
    name = draw(NAMES)
    body: dict[str, object] = {"name": name}
    if path == "/users":
        unique = f"u{zlib.crc32(name.encode())}@ex.org"
        body["email_address"] = draw(
            st.sampled_from([unique, unique, unique, "user1@example.com", "bad"])
        )
    for key, values in OPTIONAL[path].items():
        if draw(st.booleans()):
            body[key] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        body[draw(STRAY_KEYS)] = draw(JSON_VALUES)
    if draw(st.integers(0, 9)) == 0:
        body.pop(draw(st.sampled_from(sorted(body))))
    return body


@st.composite
def single_requests(draw: st.DrawFn) -> tuple[str, str, object]:
    """One object to POST, a partial object to PATCH, or any JSON at all."""
    path = draw(st.sampled_from(sorted(OPTIONAL)))
    method = draw(st.sampled_from(["POST", "PATCH"]))
    body = draw(st.one_of(plausible_object(path), JSON_VALUES))
    if method == "PATCH" and isinstance(body, dict) and draw(st.booleans()):
        body = {k: v for k, v in body.items() if draw(st.booleans())}
    return method, path if method == "POST" else f"{path}/{draw(st.integers(1, 4))}", body


@st.composite
def batch_requests(draw: st.DrawFn) -> tuple[str, str, object]:
    path = draw(st.sampled_from(sorted(OPTIONAL)))
    return "POST", path, draw(st.lists(plausible_object(path), min_size=0, max_size=5))


COUNTS = text(" UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES))


@pytest.fixture(scope="module")
async def fuzz_url(databases: DatabaseFactory) -> str:
    """One database for both fuzz runs: each example compares counts only around itself."""
    return await databases.migrated()


Request = tuple[str, str, object]
OBJECT_EXAMPLES: list[Request] = [
    ("PATCH", "/users/2", {"display_name": None, "group_ids": []}),
    ("POST", "/users", user("ex0", password="x", group_ids=[1, 1, 2])),
]
BATCH_EXAMPLES: list[Request] = [
    ("POST", "/permissions", [{"name": "ex1", "description": "A"}, {"name": "ex2"}]),
    ("POST", "/groups", [{"name": "ex3"}, {"name": "ex4", "display_name": "B"}]),
]


@pytest.mark.parametrize(
    ("requests", "explicit"),
    [
        pytest.param(single_requests(), OBJECT_EXAMPLES, id="objects"),
        pytest.param(batch_requests(), BATCH_EXAMPLES, id="batches"),
    ],
)
def test_random_bodies_never_fail_the_server_nor_half_write(
    fuzz_url: str, requests: st.SearchStrategy[Request], explicit: list[Request]
) -> None:
    with asyncio.Runner() as runner:
        # Cheap argon2 parameters: the hash's strength is checked elsewhere.
        app = create_app(make_test_settings(fuzz_url, argon2_memory_kib=64, argon2_time_cost=1))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        direct = create_async_engine(fuzz_url)
        connection = runner.run(direct.connect().start())
        if not runner.run(client.get("/users/1")).is_success:
            runner.run(make_world(client))

        async def counts() -> dict[str, int]:
            rows = (await connection.execute(COUNTS)).all()
            await connection.commit()
            return {str(table): int(count) for table, count in rows}

        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        )
        @given(request=requests)
        def check(request: Request) -> None:
            method, path, body = request
            before = runner.run(counts())
            response = runner.run(client.request(method, path, json=body, headers=AUTH))
            assert response.status_code < 500, (method, path, body, response.text)
            if response.status_code in {200, 201}:
                assert "password" not in walk_keys(response.json())
                sent = body if isinstance(body, list) else [body]
                data = response.json()["data"]
                for item, stored in zip(
                    sent, data if isinstance(data, list) else [data], strict=True
                ):
                    assert isinstance(item, dict)
                    shown = {k: v for k, v in item.items() if k in stored}
                    assert shown == {k: stored[k] for k in shown}, (body, data)
                return
            assert 400 <= response.status_code < 500
            assert_problem(response, response.status_code)
            assert runner.run(counts()) == before, (method, path, body, response.text)

        for request in explicit:
            check = example(request=request)(check)
        try:
            check()
        finally:
            runner.run(connection.close())
            runner.run(client.aclose())
            runner.run(direct.dispose())
            runner.run(app.state.services.db.engine.dispose())
            app.state.services.writer.hasher.close()


async def test_writes_reading_their_rows_back_keep_no_statements_of_reads_out(
    api: httpx.AsyncClient,
) -> None:
    """A write's read-back is asked once: it must not fill the statement memo that the
    repeated reads live in (each write would push a hot read's statement out)."""
    page_select = app_of(api).state.services.reader.memo.page  # this app's statements
    assert (await api.get("/users?fields=id,name")).status_code == 200
    built = page_select.cache_info().misses  # each miss keeps one more statement
    for number in range(5):
        assert (await post(api, "/groups", {"name": f"memo{number}"})).status_code == 201
        response = await api.patch("/groups/1", json={"display_name": f"d{number}"}, headers=AUTH)
        assert response.status_code == 200, response.text
    assert page_select.cache_info().misses == built
