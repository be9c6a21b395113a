"""A write is answered with what happened: a 4xx wrote nothing, a 2xx wrote all (SPEC, Errors).

Every step that could refuse a write runs before its COMMIT: the checks, the statements, the
read-back that shapes the answer (it can pass the embedded-row limit) and, on a shared cache,
the version bump that tells the other instances. These tests make each late step refuse and
check the tables are as they were.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.test_writes import AUTH, assert_problem, row_counts, user
from tests.conftest import app_of

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
LIMIT = 5  # embedded rows allowed in one response, for these tests


@pytest.fixture
async def api(database_url: str, make_client: MakeClient) -> httpx.AsyncClient:
    client = await make_client(database_url, max_embedded_rows=LIMIT)
    groups = [{"name": f"g{i}"} for i in range(LIMIT + 1)]
    assert (await client.post("/groups", json=groups, headers=AUTH)).status_code == 201
    return client


async def test_a_create_whose_answer_passes_the_embedded_limit_writes_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await row_counts(engine)
    body = user("wide", group_ids=list(range(1, LIMIT + 2)))
    refused = await api.post("/users?include=groups", json=body, headers=AUTH)
    problem = assert_problem(refused, 400)
    assert "embed more than" in problem["detail"]
    assert await row_counts(engine) == before
    # The client's retry without the include is the first write, not a 409.
    created = await api.post("/users", json=body, headers=AUTH)
    assert created.status_code == 201, created.text


async def test_a_batch_whose_answer_passes_the_embedded_limit_writes_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    before = await row_counts(engine)
    batch = [user(f"b{i}", group_ids=[1, 2, 3]) for i in range(2)]  # 6 embedded rows > 5
    refused = await api.post("/users?include=groups", json=batch, headers=AUTH)
    assert_problem(refused, 400)
    assert await row_counts(engine) == before


async def test_a_patch_whose_answer_passes_the_embedded_limit_changes_nothing(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    created = await api.post("/users", json=user("narrow", group_ids=[1]), headers=AUTH)
    identifier = created.json()["data"]["id"]
    before = await row_counts(engine)
    patch = {"display_name": "Changed", "group_ids": list(range(1, LIMIT + 2))}
    refused = await api.patch(f"/users/{identifier}?include=groups", json=patch, headers=AUTH)
    assert_problem(refused, 400)
    assert await row_counts(engine) == before
    stored = (await api.get(f"/users/{identifier}?include=groups")).json()["data"]
    assert (stored["display_name"], [g["id"] for g in stored["groups"]]) == (None, [1])


async def test_a_group_with_too_many_members_to_answer_is_not_created(
    api: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    members = [user(f"m{i}") for i in range(LIMIT + 1)]
    ids = [u["id"] for u in (await api.post("/users", json=members, headers=AUTH)).json()["data"]]
    before = await row_counts(engine)
    refused = await api.post(
        "/groups?include=users", json={"name": "crowd", "user_ids": ids}, headers=AUTH
    )
    assert_problem(refused, 400)
    assert await row_counts(engine) == before
    assert (
        await api.post("/groups", json={"name": "crowd", "user_ids": ids}, headers=AUTH)
    ).status_code == 201


def closed_port() -> int:
    """A loopback port nothing listens on: a Redis that refuses every connection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/users", user("late")),
        ("PATCH", "/groups/1", {"display_name": "late", "user_ids": [], "permission_ids": []}),
        ("DELETE", "/groups/2", None),
    ],
)
async def test_a_write_the_shared_cache_cannot_hear_of_is_rolled_back(
    api: httpx.AsyncClient,
    make_client: MakeClient,
    database_url: str,
    engine: AsyncEngine,
    method: str,
    path: str,
    body: object,
) -> None:
    """Redis refuses the bump made last before COMMIT (no request had found it down yet, so
    the write began): every kind of write is rolled back and answered 503."""
    redis = f"redis://127.0.0.1:{closed_port()}/0"
    writer = await make_client(database_url, cache_url=redis, cache_timeout_seconds=0.2)
    assert app_of(writer).state.services.cache.backend.reachable  # nothing has failed yet
    before = await row_counts(engine)
    response = await writer.request(method, path, json=body, headers=AUTH)
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "1"
    assert await row_counts(engine) == before
    assert not app_of(writer).state.services.cache.backend.reachable
    again = await writer.request(method, path, json=body, headers=AUTH)  # refused up front
    assert_problem(again, 503)
    assert await row_counts(engine) == before
