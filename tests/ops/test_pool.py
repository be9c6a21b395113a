"""Pool exhaustion, statement timeouts and the request deadline on PostgreSQL: 503, never 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import TOKEN, app_of
from tests.ops.conftest import TableLock, sessions_of

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
PROBLEM = "application/problem+json"
POOL_TIMEOUT = 1.0


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert int(response.headers["retry-after"]) >= 1
    problem = response.json()
    assert problem["status"] == 503
    assert problem["detail"]


def checked_out(client: httpx.AsyncClient) -> int:
    pool = app_of(client).state.services.db.engine.sync_engine.pool
    count: int = pool.checkedout()
    return count


async def settle(client: httpx.AsyncClient, *, seconds: float = 3.0) -> int:
    """The pool's checked-out count once it stops moving (connections return asynchronously)."""
    for _ in range(int(seconds / 0.05)):
        if not checked_out(client):
            break
        await asyncio.sleep(0.05)
    return checked_out(client)


async def assert_every_session_idle(database: str) -> None:
    """No session of the app is left `idle in transaction` (or still active) once all is done."""
    deadline = time.monotonic() + 3.0
    while True:
        rows = await sessions_of(database)
        stuck = [dict(row) for row in rows if row["state"] != "idle"]
        if not stuck or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert stuck == [], stuck


@pytest.mark.slow
async def test_an_exhausted_pool_answers_503_within_the_pool_timeout(
    ops_db: tuple[str, str], make_client: MakeClient
) -> None:
    database, url = ops_db
    client = await make_client(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT,
        statement_timeout_ms=3000,
        cache_url="none",
    )
    assert (await client.get("/users?limit=5")).status_code == 200  # the one connection exists

    async def timed_get(index: int) -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        response = await client.get(f"/users?limit=5&fields=id,name&filter[id][gte]={index}")
        return response, time.perf_counter() - started

    async with TableLock(url) as lock:
        requests = [asyncio.create_task(timed_get(i + 1)) for i in range(20)]
        # The excess give up after POOL_TIMEOUT; then the lock goes and the holder finishes.
        done, _ = await asyncio.wait(requests, timeout=POOL_TIMEOUT + 1.0)
        await lock.release()
        results = await asyncio.gather(*requests)

    statuses = sorted(response.status_code for response, _ in results)
    assert statuses == [200] + [503] * 19, statuses
    assert len(done) == 19  # every excess request was answered before the lock went
    latencies = sorted(seconds for response, seconds in results if response.status_code == 503)
    for response, seconds in results:
        if response.status_code == 503:
            assert_unavailable(response)
            assert seconds < POOL_TIMEOUT + 0.5, seconds
    print(
        f"\npool exhaustion: 19 x 503 in {latencies[0]:.3f}..{latencies[-1]:.3f} s "
        f"(pool_timeout {POOL_TIMEOUT} s)"
    )
    assert await settle(client) == 0
    assert (await client.get("/users?limit=5")).status_code == 200
    assert await settle(client) == 0
    await assert_every_session_idle(database)


async def test_a_statement_timeout_is_a_503_with_retry_after(
    ops_db: tuple[str, str], make_client: MakeClient
) -> None:
    database, url = ops_db
    client = await make_client(url, statement_timeout_ms=500, cache_url="none")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with TableLock(url):
        started = time.perf_counter()
        read = await client.get("/users?include=groups&limit=5")
        read_seconds = time.perf_counter() - started
        write = await client.patch("/users/1", json={"display_name": "blocked"}, headers=auth)
    assert_unavailable(read)
    assert 0.4 < read_seconds < 2.0, read_seconds
    assert_unavailable(write)
    after = await client.get("/users/1?fields=display_name")
    assert after.status_code == 200
    assert after.json()["data"]["display_name"] != "blocked"  # the write never half-happened
    assert await settle(client) == 0
    await assert_every_session_idle(database)


@pytest.mark.slow
async def test_the_request_deadline_is_a_503_and_leaves_nothing_checked_out(
    ops_db: tuple[str, str], make_client: MakeClient
) -> None:
    database, url = ops_db
    client = await make_client(
        url, request_timeout_seconds=1, statement_timeout_ms=0, cache_url="none"
    )
    async with TableLock(url) as lock:
        started = time.perf_counter()
        responses = await asyncio.gather(*(client.get(f"/users?limit={n}") for n in (1, 2, 3)))
        elapsed = time.perf_counter() - started
        await asyncio.sleep(0.5)  # the cancelled queries still wait on the lock server-side
        await lock.release()
    for response in responses:
        assert_unavailable(response)
    assert elapsed < 2.0, elapsed
    assert await settle(client) == 0
    await assert_every_session_idle(database)
    assert (await client.get("/users?limit=5")).status_code == 200
    assert await settle(client) == 0


async def test_sustained_load_above_the_pool_size_opens_no_connection_after_the_first(
    ops_db: tuple[str, str], make_client: MakeClient
) -> None:
    """With the default pool, 32 requests at a time for a while open at most POOL_SIZE
    connections: none is opened and closed per burst (SQLAlchemy's overflow would)."""
    _, url = ops_db
    client = await make_client(url, cache_url="none")
    services = app_of(client).state.services
    opened: list[object] = []
    event.listen(services.db.engine.sync_engine.pool, "connect", lambda *_: opened.append(1))

    async def reader() -> None:
        for _ in range(12):
            response = await client.get("/users?include=groups&limit=20")
            assert response.status_code == 200, response.text

    await asyncio.gather(*(reader() for _ in range(32)))
    assert 1 <= len(opened) <= services.settings.pool_size


async def test_requests_get_connections_in_the_order_they_asked(
    ops_db: tuple[str, str], make_client: MakeClient
) -> None:
    """First come, first served: with 2 connections and 24 readers, each starts its work in
    the order it asked (the pool's own queue lets newcomers jump ahead of waiters)."""
    _, url = ops_db
    client = await make_client(url, cache_url="none", pool_size=2, max_overflow=0)
    db = app_of(client).state.services.db
    asked: list[int] = []
    started: list[int] = []

    async def reader(number: int) -> None:
        async def work(connection: AsyncConnection) -> None:
            started.append(number)
            await connection.execute(text("SELECT pg_sleep(0.005)"))

        asked.append(number)
        await db.read(work)

    async def nothing(connection: AsyncConnection) -> None:
        await connection.execute(text("SELECT pg_sleep(0.01)"))

    await asyncio.gather(db.read(nothing), db.read(nothing))  # both connections open
    tasks = []
    for number in range(24):
        tasks.append(asyncio.ensure_future(reader(number)))
        await asyncio.sleep(0.001)  # arrivals spread out, as a server's are
    await asyncio.gather(*tasks)
    # The first two run side by side and may start either way round; every later one
    # waited, and must be served in the order it asked.
    assert set(started[:2]) == set(asked[:2])
    assert started[2:] == asked[2:]
