"""Smoke tests of the loading, endpoints and writes benchmarks at tiny sizes (no timing asserts)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as redis
from fastapi import FastAPI
from starlette.applications import Starlette

from service.bench import reference
from service.bench.common import BenchError, capture_body, throwaway_database
from service.bench.embedded import CASES, PLAIN_HAND, SERVICE_COUNTED, SERVICE_TOP, run_embedded
from service.bench.endpoints import (
    ENDPOINTS,
    PATH,
    REDIS_UNCACHED,
    REDIS_UNCACHED_REPLICA,
    UNCACHED,
    UNCACHED_REPLICA,
    Phase,
    Server,
    check_replica_served,
    forget_keys,
    parse_wrk,
    prepare_endpoints_database,
    reads_served,
    run_endpoints,
)
from service.bench.loading import STRATEGIES, run_loading
from service.bench.shop import ENDPOINTS as SHOP_ENDPOINTS
from service.bench.shop import run_shop
from service.bench.writes import MODES, run_writes
from tests.conftest import POSTGRES_ADMIN_DSN

ADMIN_URL = POSTGRES_ADMIN_DSN.replace("postgresql://", "postgresql+asyncpg://", 1)
REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.postgres


async def test_loading_runs_every_strategy_with_its_statement_count() -> None:
    report = await run_loading(database_url=ADMIN_URL, users=30, repeats=1, page_sizes=(5, 20))
    shapes = [(c.backend, c.dataset, c.page) for c in report.cases]
    assert shapes == [
        ("sqlite", "30 users", 5),
        ("sqlite", "30 users", 20),
        ("sqlite", "5 users x 3 groups", 5),
        ("postgresql", "30 users", 5),
        ("postgresql", "30 users", 20),
    ]
    for case in report.cases:
        counts = {t.strategy: t.statements for t in case.timings}
        assert counts == {
            "lazy (N+1)": 1 + case.page,
            "joinedload": 1,
            "subqueryload": 2,
            "selectinload": 2,
            "planner, columns": 2,
            "planner, orm": 2,
            "driver": 2,
        }
        assert [t.strategy for t in case.timings] == list(STRATEGIES)
        assert all(t.median_ms > 0 for t in case.timings)
        assert case.to_driver("driver") == 1.0
        assert case.saved("lazy (N+1)") == 0.0


@pytest.fixture
async def endpoints_database() -> AsyncIterator[str]:
    async with throwaway_database(ADMIN_URL) as url:
        await prepare_endpoints_database(url)
        yield url


async def _get(app: FastAPI | Starlette, token: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as client,
    ):
        return await client.get(PATH, headers={"Authorization": f"Bearer {token}"})


async def test_reference_apps_answer_with_the_services_data(
    endpoints_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token, prefix = secrets.token_hex(8), "svc_bench_test_" + secrets.token_hex(6)
    body = await capture_body(endpoints_database, PATH, token=token, cursor_secret="secret")
    data = orjson.loads(body)["data"]
    assert len(data) == 100
    assert all(len(user["groups"]) == 5 for user in data)  # the seed's exact shape
    assert set(data[0]) == {"id", "name", "email_address", "groups"}
    assert 15_000 < len(body) < 30_000
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.set(f"{prefix}:body", body)
        for name, value in {
            reference.DATABASE_URL_VARIABLE: endpoints_database,
            reference.TOKEN_VARIABLE: token,
            reference.BODY_FILE_VARIABLE: str(body_file),
            reference.REDIS_URL_VARIABLE: REDIS_URL,
            reference.REDIS_KEY_VARIABLE: f"{prefix}:body",
        }.items():
            monkeypatch.setenv(name, value)
        for make in (reference.make_fastapi_app, reference.make_asyncpg_app):
            response = await _get(make(), token)
            assert response.status_code == 200
            assert response.json()["data"] == data
            assert (await _get(make(), "wrong")).status_code == 401
        for make in (reference.make_constant_app, reference.make_redis_app):
            assert (await _get(make(), token)).content == body
    finally:
        await client.aclose()
        await forget_keys(REDIS_URL, prefix)
    assert not await _keys(prefix)


async def _keys(prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [key async for key in client.scan_iter(match=f"{prefix}:*")]
    finally:
        await client.aclose()


@pytest.mark.slow
async def test_endpoints_runs_every_server_and_checks_their_data() -> None:
    report = await run_endpoints(
        admin_url=ADMIN_URL, seconds=1, connections=4, rounds=1, warmup_seconds=0,
        settle_seconds=0,
    )  # fmt: skip
    assert report.same_data, report.warnings
    assert [s.endpoint for s in report.summaries] == [name for name, _, _ in ENDPOINTS]
    assert all(s.rate > 0 and s.errors == 0 for s in report.summaries)
    assert len(report.ratios) == 6
    assert 15_000 < report.body_bytes < 30_000
    # The replica servers' reads were counted, and the replica (the primary itself, caught
    # up by definition) served them (run_endpoints refuses a run where it served none).
    shares = {s.endpoint: s.replica_share for s in report.summaries if s.replica_reads}
    assert set(shares) == {UNCACHED_REPLICA, REDIS_UNCACHED_REPLICA}
    assert all(share > 0.5 for share in shares.values())
    assert [(r.numerator, r.denominator) for r in report.ratios[4:]] == [
        (UNCACHED_REPLICA, UNCACHED),
        (REDIS_UNCACHED_REPLICA, REDIS_UNCACHED),
    ]
    # Without wrk the fast endpoints are measured at the Python client's limit: said so.
    warned = any("without wrk" in line for line in report.warnings)
    assert warned == (report.tool != "wrk")


@pytest.mark.slow
async def test_shop_runs_both_pairs_and_checks_their_data() -> None:
    report = await run_shop(
        admin_url=ADMIN_URL, seconds=1, connections=4, rounds=1, warmup_seconds=0,
        settle_seconds=0,
    )  # fmt: skip
    # Each pair answered 200 with the same data, byte for byte, before the load.
    assert report.same_data, report.warnings
    assert [s.endpoint for s in report.summaries] == [name for name, _, _ in SHOP_ENDPOINTS]
    assert all(s.rate > 0 and s.errors == 0 for s in report.summaries)  # wrk: non-2xx = error
    shop, auth = report.ratios
    assert (shop.numerator, shop.denominator) == ("shop: service uncached", "shop: asyncpg")
    assert (auth.numerator, auth.denominator) == ("auth: service uncached", "auth: asyncpg")
    assert all(len(r.per_round) == 1 and r.rate > 0 for r in report.ratios)
    assert report.relative == pytest.approx(shop.rate / auth.rate)
    assert 10_000 < report.body_bytes[0] < 20_000  # 100 products, each with category and tags


async def test_writes_creates_the_rows_three_ways() -> None:
    report = await run_writes(admin_url=ADMIN_URL, repeats=1, batch=20, concurrency=4)
    assert [r.mode for r in report.results] == list(MODES)
    assert [r.requests for r in report.results] == [1, 20, 20]
    assert all(r.rows_per_second > 0 and r.statements >= 1 for r in report.results)
    assert report.ratio("batch") == 1.0


async def test_embedded_times_every_way_after_they_agree() -> None:
    report = await run_embedded(
        admin_url=ADMIN_URL, users=2_000, groups=20, memberships=5_000, repeats=2
    )
    assert [t.case for t in report.timings] == list(CASES)
    assert (report.fill.users, report.fill.groups) == (2_000, 20)
    assert 4_950 < report.fill.memberships <= 5_050  # group sizes are rounded shares
    assert report.fill.largest > 5 * report.fill.smallest  # skewed
    # Every way returned these groups, members and counts (run_embedded raises otherwise).
    assert list(report.top) == list(range(1, 21))
    assert all(len(ids) == min(5, count) for ids, count in report.top.values())
    assert report.fill.page_members == report.fill.memberships  # all 20 groups on the page
    assert report.warnings == ()  # 2 statements for each top-N page, 1 for the plain one
    assert report.timing(SERVICE_COUNTED).reads.statements == 2
    assert report.timing(SERVICE_TOP).reads.statements == 2
    assert all(t.median_ms > 0 and t.reads.buffers > 0 for t in report.timings)
    assert report.ratio(PLAIN_HAND, PLAIN_HAND) == 1.0


async def test_reads_served_come_from_the_servers_metrics() -> None:
    metrics = (
        "# TYPE db_reads_total counter\n"
        'db_reads_total{database="primary"} 3.0\n'
        'db_reads_total{database="127.0.0.1:5432/bench"} 1234.0\n'
        'db_reads_created{database="127.0.0.1:5432/bench"} 1.7e+09\n'
    )
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=metrics))

    def server(replica: str | None) -> Server:
        process = None  # reads_served only asks the server's URL
        return Server("s", "http://s", 0, Path("s.log"), process, replica)  # type: ignore[arg-type]

    async with httpx.AsyncClient(transport=transport) as client:
        assert await reads_served(client, server("127.0.0.1:5432/bench")) == (1234, 3)
        assert await reads_served(client, server(None)) is None


def test_a_run_whose_replica_served_nothing_is_refused() -> None:
    def phase(round_: int, reads: tuple[int, int] | None) -> Phase:
        return Phase(UNCACHED_REPLICA, round_, 100, 1.0, 1.0, 2.0, 0, 0.1, reads)

    check_replica_served([phase(1, (0, 90)), phase(2, (1, 90))], [])
    check_replica_served([phase(1, None)], [])  # a server without a replica
    with pytest.raises(BenchError, match="served none of the reads \\(180 on the primary\\)"):
        check_replica_served([phase(1, (0, 90)), phase(2, (0, 90))], [])


def test_parse_wrk_reads_rate_latency_and_errors() -> None:
    output = """Running 1s test @ http://127.0.0.1:1/users
  Latency Distribution
     50%    2.50ms
     75%    3.00ms
     90%    4.00ms
     99%   12.00ms
  1200 requests in 1.00s, 26.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
"""
    assert parse_wrk(output) == (1200, 1.0, 2.5, 12.0, 6)
