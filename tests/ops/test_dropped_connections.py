"""Pooled connections that die behind the pool's back (a restart, a killed backend).

Idle connections are pinged before use; a connection used a moment ago is not, so a read
whose connection turns out dead runs once more on a fresh one, and the pool replaces the
rest. Nothing reaches the client but 200s, and a write after it works.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import httpx

from tests.conftest import TOKEN
from tests.ops.conftest import POSTGRES_ADMIN_DSN, sessions_of

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FRESH = {"Cache-Control": "no-cache"}


async def kill_sessions(database: str) -> int:
    """pg_terminate_backend every client session of `database`; how many there were."""
    pids = [row["pid"] for row in await sessions_of(database)]
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        for pid in pids:
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    return len(pids)


def statements(response: httpx.Response) -> int:
    timing = response.headers["server-timing"]
    return int(timing.split('desc="', 1)[1].split(" ", 1)[0])


async def warm(client: httpx.AsyncClient) -> None:
    """Several connections in the pool, all just used."""
    responses = await asyncio.gather(
        *(client.get("/users?limit=5&include=groups", headers=FRESH) for _ in range(4))
    )
    assert {r.status_code for r in responses} == {200}


async def test_a_read_on_a_connection_killed_a_moment_ago_runs_again_and_succeeds(
    ops_db: tuple[str, str], make_client: MakeClient
) -> None:
    database, url = ops_db
    client = await make_client(url, pool_ping_idle_seconds=60.0)  # never pinged in this test
    await warm(client)
    assert await kill_sessions(database) >= 1
    response = await client.get("/users?limit=5&include=groups", headers=FRESH)
    assert response.status_code == 200, response.text
    # The first attempt's statement failed on the dead connection, then 1 + 1 ran again.
    assert statements(response) == 3
    later = [await client.get("/users?limit=5&include=groups", headers=FRESH) for _ in range(4)]
    assert [r.status_code for r in later] == [200] * 4
    assert {statements(r) for r in later} == {2}  # the pool replaced the other dead ones
    write = await client.post("/groups", json={"name": "after-kill"}, headers=AUTH)
    assert write.status_code == 201, write.text


async def test_an_idle_connection_killed_behind_the_pool_is_pinged_and_replaced(
    ops_db: tuple[str, str], make_client: MakeClient
) -> None:
    database, url = ops_db
    client = await make_client(url, pool_ping_idle_seconds=0.2)
    await warm(client)
    assert await kill_sessions(database) >= 1
    await asyncio.sleep(0.3)  # idle past the threshold: the checkout pings
    write = await client.post("/groups", json={"name": "after-idle"}, headers=AUTH)
    assert write.status_code == 201, write.text
    response = await client.get("/users?limit=5&include=groups", headers=FRESH)
    assert response.status_code == 200, response.text
    assert statements(response) == 2  # no failed attempt: the dead one never served
