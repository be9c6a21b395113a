"""Reads on databases made for the test: hashes stay in, big pages stay 1 + k, embeds bounded."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service.db import make_engine
from service.seed import seed
from service.settings import Settings
from tests.conftest import TOKEN, record_statements

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
FAKE_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"


async def _seed(url: str, *, users: int, groups: int, permissions: int) -> None:
    engine = make_engine(Settings(database_url=url))
    try:
        await seed(engine, users=users, groups=groups, permissions=permissions)
    finally:
        await engine.dispose()


async def test_a_stored_hash_never_leaves_the_database_layer(
    database_url: str, make_client: MakeClient
) -> None:
    await _seed(database_url, users=30, groups=6, permissions=6)
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE auth_user SET password = :h"), {"h": FAKE_HASH})
    await engine.dispose()
    client = await make_client(database_url)
    log = record_statements(client)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    paths = [
        "/users?include=groups.users&limit=500",
        "/users/1?include=groups",
        "/groups?include=users,permissions.groups&limit=500",
        "/groups/1/users",
        "/permissions?include=groups.users&limit=500",
    ]
    for path in paths:
        for headers in ({}, auth):
            response = await client.get(path, headers=headers)
            assert response.status_code == 200, response.text
            assert "$argon2" not in response.text
            assert "password" not in response.text
    assert log.statements
    assert not any("password" in statement for statement in log.statements)


async def test_a_full_page_past_500_parents_is_still_one_statement_per_level(
    database_url: str, make_client: MakeClient
) -> None:
    await _seed(database_url, users=600, groups=900, permissions=10)
    client = await make_client(database_url)
    log = record_statements(client)
    response = await client.get("/users", params={"limit": "500", "include": "groups.permissions"})
    assert response.status_code == 200
    users = response.json()["data"]
    assert len(users) == 500
    assert len({group["id"] for user in users for group in user["groups"]}) > 500
    assert len(log.statements) == 3  # SQLAlchemy would split over 500 parent keys into two INs


async def test_too_many_embedded_rows_point_at_the_sub_collection(
    database_url: str, make_client: MakeClient
) -> None:
    await _seed(database_url, users=200, groups=10, permissions=10)
    client = await make_client(database_url, max_embedded_rows=50)
    response = await client.get("/groups", params={"include": "users", "limit": "500"})
    assert response.status_code == 400
    problem = response.json()
    assert problem["errors"][0]["parameter"] == "include"
    assert "/groups/{id}/users" in problem["detail"]
    fine = await client.get("/groups/4/users", params={"limit": "500"})
    assert fine.status_code == 200
