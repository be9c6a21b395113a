"""A PostgreSQL server stopped and restarted under load: 503s inside the outage, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from tests.conftest import app_of, quiet_collector
from tests.ops.conftest import migrate_and_seed
from tests.ops.servers import ThrowawayPostgres, throwaway_postgres

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
POOL_TIMEOUT = 1.0
DEADLINE = 2.0
HIT_PATH = "/users?fields=id,name&include=groups&limit=10"
MAX_REQUESTS_PER_WORKER = 3000
MAX_LOAD_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # "miss", "hit" or "ready"
    started: float
    ended: float
    status: int
    cache: str | None
    detail: str | None = None  # a 503's problem detail: which limit or failure answered

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@contextlib.asynccontextmanager
async def cluster_with_database() -> AsyncIterator[tuple[ThrowawayPostgres, str]]:
    with throwaway_postgres() as cluster:
        connection = await asyncpg.connect(cluster.admin_dsn, timeout=10)
        try:
            await connection.execute('CREATE DATABASE "svc_ops_outage"')
        finally:
            await connection.close()
        url = cluster.url("svc_ops_outage")
        await migrate_and_seed(url)
        yield cluster, url


class Load:
    """Bounded loops of misses (a new filter value each), cache hits and /readyz probes."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.outcomes: list[Outcome] = []
        self.stalls: list[tuple[float, float]] = []  # (when, seconds) the loop stood still
        self.stop = asyncio.Event()
        self._numbers = itertools.count(1)

    async def _one(self, kind: str, path: str) -> Outcome:
        started = time.perf_counter()
        response = await self.client.get(path)
        ended = time.perf_counter()
        detail = None
        if response.status_code == 503:
            assert response.headers["content-type"] == "application/problem+json"
            assert "retry-after" in response.headers
            detail = response.json()["detail"]
        outcome = Outcome(
            kind, started, ended, response.status_code, response.headers.get("x-cache"), detail
        )
        self.outcomes.append(outcome)
        return outcome

    def miss_path(self) -> str:
        return f"/users?fields=id,name&filter[id][gte]={next(self._numbers)}&limit=5"

    async def _loop(self, kind: str, pause: float) -> None:
        finish = time.monotonic() + MAX_LOAD_SECONDS
        for _ in range(MAX_REQUESTS_PER_WORKER):
            if self.stop.is_set() or time.monotonic() > finish:
                return
            path = {"miss": self.miss_path(), "hit": HIT_PATH, "ready": "/readyz"}[kind]
            await self._one(kind, path)
            await asyncio.sleep(pause)

    def start(self) -> list[asyncio.Task[None]]:
        loops = [("miss", 0.02)] * 3 + [("hit", 0.02), ("ready", 0.1)]
        tasks = [asyncio.create_task(self._loop(kind, pause)) for kind, pause in loops]
        return [*tasks, asyncio.create_task(self.watch_the_loop())]

    async def watch_the_loop(self) -> None:
        """Record every stall of the event loop over 0.1 s (client and service share it): a
        late timer makes a deadline fire late, which a failure must be able to tell apart."""
        while not self.stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = time.perf_counter() - before - 0.01
            if lag > 0.1:
                self.stalls.append((before, round(lag, 3)))

    async def first_success(self) -> float:
        """Misses one after another until one is a 200; the time that took."""
        started = time.perf_counter()
        for _ in range(MAX_REQUESTS_PER_WORKER):
            if (await self._one("miss", self.miss_path())).status == 200:
                return time.perf_counter() - started
        pytest.fail("no miss succeeded after the restart")


@pytest.mark.slow
async def test_a_restart_under_load_fails_only_inside_the_outage(make_client: MakeClient) -> None:
    async with cluster_with_database() as (cluster, url):
        client = await make_client(
            url,
            cache_url="memory://",
            pool_size=4,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT,
            request_timeout_seconds=DEADLINE,
            statement_timeout_ms=1500,
        )
        assert (await client.get(HIT_PATH)).headers["x-cache"] == "MISS"
        assert (await client.get(HIT_PATH)).headers["x-cache"] == "HIT"
        load = Load(client)
        with quiet_collector() as collections:
            tasks = load.start()
            try:
                await asyncio.sleep(1.0)
                stop_began = time.perf_counter()
                await asyncio.to_thread(cluster.stop)
                stopped = time.perf_counter()
                await asyncio.sleep(2.0)
                start_began = time.perf_counter()
                await asyncio.to_thread(cluster.start)
                started = time.perf_counter()
                recovery = await load.first_success()
                await asyncio.sleep(1.0)
            finally:
                load.stop.set()
                await asyncio.gather(*tasks)
        ready_after = await client.get("/readyz")

    outcomes = load.outcomes
    assert {o.status for o in outcomes} <= {200, 503}, sorted({o.status for o in outcomes})
    slowest = max(o.seconds for o in outcomes)
    assert slowest < POOL_TIMEOUT + DEADLINE + 0.5, slowest
    # Before the stop and after the restart: every request succeeds (pool_pre_ping).
    before = [o for o in outcomes if o.ended < stop_began]
    after = [o for o in outcomes if o.started > started]
    inside = [o for o in outcomes if o.started > stopped and o.ended < start_began]
    assert before
    assert after
    assert inside
    timeline = (
        f"stop {stop_began:.3f}-{stopped:.3f}, start {start_began:.3f}-{started:.3f}; "
        f"loop stalls (when, s): {load.stalls}; slow garbage collections (when, s): {collections}"
    )
    assert [o for o in before if o.status != 200] == [], timeline
    assert [o for o in after if o.status != 200] == [], timeline
    # Inside: misses and readiness are 503, cache hits keep coming from memory.
    assert {o.status for o in inside if o.kind in {"miss", "ready"}} == {503}
    hits = [o for o in outcomes if o.kind == "hit"]
    assert all(o.status == 200 and o.cache == "HIT" for o in hits)
    assert any(o.kind == "hit" for o in inside)
    assert ready_after.status_code == 200
    latencies = sorted(o.seconds for o in inside if o.status == 503)
    failed = [o for o in outcomes if o.status != 200]
    print(
        f"\noutage: {len(outcomes)} requests, {len(failed)} x 503, all between the stop and "
        f"{started + recovery - stop_began:.2f} s after it; 503 latency during the outage: "
        f"median {statistics.median(latencies) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
        f"pg_ctl stop took {stopped - stop_began:.2f} s, "
        f"pg_ctl start {started - start_began:.2f} s; "
        f"recovery (start returned -> first 200 on a miss) {recovery * 1000:.1f} ms"
    )
    assert all(stop_began <= o.ended and o.started <= started + recovery for o in failed)


@pytest.mark.slow
async def test_the_first_request_after_a_quiet_restart_succeeds(make_client: MakeClient) -> None:
    async with cluster_with_database() as (cluster, url):
        client = await make_client(url, cache_url="none", pool_size=3, pool_timeout=POOL_TIMEOUT)
        # Fill the pool with connections the restart will kill.
        pages = await asyncio.gather(*(client.get(f"/users?limit={n}") for n in (1, 2, 3)))
        assert [page.status_code for page in pages] == [200, 200, 200]
        pool = app_of(client).state.services.db.engine.sync_engine.pool
        assert pool.checkedin() == 3
        await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(cluster.start)
        responses = [await client.get(f"/users?limit={n}") for n in (4, 5, 6, 7)]
        assert [response.status_code for response in responses] == [200] * 4
