"""The paging benchmark: keyset cursors against OFFSET, deep and shallow, on PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from service.api.deps import Services
from service.bench.common import BenchError, in_process, postgres_stack, throwaway_database
from service.db import make_engine
from service.migrations import run_upgrade
from service.query.canonical import binding
from service.query.cursor import attach_cursor
from service.query.options import build_list_select, order_terms, where_clause
from service.query.params import parse_query_string
from service.query.plan import ListQuery, build_list_query
from service.schema.codecs import Scalar
from service.seed import seed
from service.settings import Settings

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PERMISSIONS = 100
WARMUP_ROUNDS = 3
# The two list shapes timed: plain columns, and one include (1 + 1 statements).
SHAPES = (
    ("fields=id,name", "fields=id,name"),
    ("include=groups", "fields=id,name&include=groups&fields[groups]=name"),
)


@dataclass(frozen=True, slots=True)
class Timing:
    """Median milliseconds of one shape and method on the first page and on the deep page."""

    shape: str
    method: str
    shallow_ms: float
    deep_ms: float

    @property
    def ratio(self) -> float:
        return self.deep_ms / self.shallow_ms


@dataclass(frozen=True, slots=True)
class PagingReport:
    users: int
    memberships: int
    page: int
    depth: int
    repeats: int
    seed_seconds: float
    environment: tuple[tuple[str, str], ...]
    timings: tuple[Timing, ...]
    plans: tuple[tuple[str, str], ...] = ()  # (label, EXPLAIN text) with --explain


@dataclass(frozen=True, slots=True)
class _Case:
    shape: str
    method: str
    deep: bool
    run: Callable[[], Awaitable[list[int]]]  # returns the page's ids, for the cross-check


async def run_paging(
    *,
    database_url: str | None,
    users: int,
    page: int,
    depth: int,
    repeats: int,
    explain: bool = False,
) -> PagingReport:
    """Seed a throwaway database beside `database_url` (an admin URL), time pages, drop it."""
    if depth < 2 or page < 1 or repeats < 1:
        raise BenchError("depth must be 2 or more, page and repeats 1 or more")
    if users < depth * page:
        raise BenchError(f"page {depth} of {page} needs at least {depth * page} users")
    async with throwaway_database(database_url or DEFAULT_ADMIN_URL) as url:
        seeded = await prepare_database(url, users=users)
        # No response cache: this suite times the database path, and a cached page costs
        # the same at any depth.
        settings = Settings(database_url=url, cursor_secret=secrets.token_hex(16), cache_url="none")
        async with in_process(settings) as (client, app):
            services: Services = app.state.services
            cases = await _build_cases(client, services, page=page, depth=depth)
            await _cross_check(cases)
            timings = await _measure(cases, repeats=repeats)
            plans = await explain_shapes(client, app, page=page, depth=depth) if explain else ()
            environment = await _environment(services.db.engine)
    return PagingReport(
        users=users,
        memberships=seeded[0],
        page=page,
        depth=depth,
        repeats=repeats,
        seed_seconds=seeded[1],
        environment=environment,
        timings=timings,
        plans=plans,
    )


async def prepare_database(url: str, *, users: int) -> tuple[int, float]:
    """Migrate, seed and vacuum; returns (memberships, seconds the seed took)."""
    # run_upgrade drives its own event loop (alembic's env.py calls asyncio.run).
    await asyncio.to_thread(run_upgrade, url)
    engine = make_engine(Settings(database_url=url))
    try:
        report = await seed(
            engine, users=users, groups=max(1, users // 100), permissions=PERMISSIONS
        )
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            # VACUUM as well as ANALYZE: since PostgreSQL 13 autovacuum visits a freshly
            # loaded table on its own; doing it now makes every run start from that state
            # (visibility map set, so index-only scans skip the heap) instead of racing it.
            await autocommit.execute(text("VACUUM (ANALYZE)"))
    finally:
        await engine.dispose()
    return report.memberships, report.seconds


async def _build_cases(
    client: httpx.AsyncClient, services: Services, *, page: int, depth: int
) -> list[_Case]:
    cases: list[_Case] = []
    sessions = services.db.sessionmaker
    for shape, query_string in SHAPES:
        query = list_query("users", f"{query_string}&limit={page}", services)
        cursor = await deep_cursor(services, query, skip=(depth - 1) * page)
        deep_query = attach_cursor(query, cursor, services.reader.codec)
        first = f"/users?{query_string}&limit={page}"
        offset = build_list_select(query).offset((depth - 1) * page)
        cases += [
            _Case(shape, "cursor, HTTP", False, _http(client, first)),
            _Case(shape, "cursor, HTTP", True, _http(client, f"{first}&cursor={cursor}")),
            _Case(shape, "keyset, SQL", False, _sql(sessions, build_list_select(query), page)),
            _Case(shape, "keyset, SQL", True, _sql(sessions, build_list_select(deep_query), page)),
            _Case(shape, "OFFSET, SQL", False, _sql(sessions, build_list_select(query), page)),
            _Case(shape, "OFFSET, SQL", True, _sql(sessions, offset, page)),
        ]
    return cases


def list_query(resource: str, query_string: str, services: Services) -> ListQuery:
    """The ListQuery the service builds for this query string (an anonymous caller)."""
    raw = parse_query_string(query_string)
    return build_list_query(
        services.registry[resource], raw, private_ok=False, limits=services.limits
    )


async def deep_cursor(services: Services, query: ListQuery, *, skip: int) -> str:
    """The cursor a client holds after reading `skip` rows.

    Walking there page by page would take 20,000 requests for one setup step. The cursor
    carries only the sort values of the last row read, so reading that row with OFFSET
    and signing its values with the app's own codec gives the very token the walk would
    end with (the cross-check then compares the page it opens with OFFSET's).
    """
    resource = query.resource
    statement = (
        select(*(attribute.column for attribute in query.sort_attributes))
        .where(*where_clause(query))
        .order_by(*order_terms(resource, query.sort))
        .offset(skip - 1)
        .limit(1)
    )
    async with services.db.engine.connect() as connection:
        values: tuple[Scalar | None, ...] = tuple((await connection.execute(statement)).one())
    return services.reader.codec.encode(
        values, binding=binding(query), attributes=query.sort_attributes
    )


def _http(client: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[list[int]]]:
    async def run() -> list[int]:
        response = await client.get(url)
        if response.status_code != 200:
            raise BenchError(f"GET {url} answered {response.status_code}: {response.text}")
        if response.headers.get("x-cache") == "HIT":
            raise BenchError(f"GET {url} was served from the response cache")
        return [item["id"] for item in response.json()["data"]]

    return run


def _sql(
    sessions: async_sessionmaker[Any], statement: Any, page: int
) -> Callable[[], Awaitable[list[int]]]:
    async def run() -> list[int]:
        # A session per run, as the service takes one per request.
        async with sessions() as session:
            rows = (await session.scalars(statement)).all()
        return [row.id for row in rows[:page]]

    return run


async def _cross_check(cases: list[_Case]) -> None:
    """Every method must return the same rows for the same page, or the timings mean nothing."""
    pages: dict[tuple[str, bool], list[int]] = {}
    for case in cases:
        ids = await case.run()
        expected = pages.setdefault((case.shape, case.deep), ids)
        if ids != expected or not ids:
            raise BenchError(f"{case.method} returned other rows for {case.shape}")


async def _measure(cases: list[_Case], *, repeats: int) -> tuple[Timing, ...]:
    samples: dict[tuple[str, str, bool], list[float]] = {}
    for round_ in range(WARMUP_ROUNDS + repeats):
        # Interleaved, and rotated each round, so drift (autovacuum, caches, CPU clocks)
        # lands on every case alike instead of on whichever ran last.
        shift = round_ % len(cases)
        for case in cases[shift:] + cases[:shift]:
            started = time.perf_counter()
            await case.run()
            elapsed = (time.perf_counter() - started) * 1000
            if round_ >= WARMUP_ROUNDS:
                samples.setdefault((case.shape, case.method, case.deep), []).append(elapsed)
    timings = []
    for shape, _ in SHAPES:
        for method in dict.fromkeys(c.method for c in cases):
            shallow = statistics.median(samples[(shape, method, False)])
            deep = statistics.median(samples[(shape, method, True)])
            timings.append(Timing(shape, method, shallow, deep))
    return tuple(timings)


async def explain_shapes(
    client: httpx.AsyncClient, app: FastAPI, *, page: int, depth: int
) -> tuple[tuple[str, str], ...]:
    """EXPLAIN (ANALYZE, BUFFERS) of the exact statements the service runs for the main shapes."""
    services: Services = app.state.services
    engine = services.db.engine
    async with engine.connect() as connection:
        biggest = await connection.scalar(
            text("SELECT group_id FROM auth_user_group GROUP BY group_id ORDER BY count(*) DESC")
        )
        typical = await connection.scalar(text("SELECT name FROM auth_group WHERE id = 100"))
    requests: list[tuple[str, str]] = []
    # -created is also shown half-way down: the seed gives a few instants thousands of
    # users each, and the deepest page of that order lands inside such a tie.
    for label, query_string, number in (
        ("users by id, deep cursor", "fields=id,name", depth),
        ("users by -created, deep cursor", "fields=id,name&sort=-created", depth),
        ("users by -created, mid cursor", "fields=id,name&sort=-created", max(2, depth // 2)),
        ("users include=groups, deep cursor", SHAPES[1][1], depth),
    ):
        query = list_query("users", f"{query_string}&limit={page}", services)
        cursor = await deep_cursor(services, query, skip=(number - 1) * page)
        requests.append((label, f"/users?{query_string}&limit={page}&cursor={cursor}"))
    requests += [
        ("groups/{id}/users, the largest group", f"/groups/{biggest}/users?fields=id,name"),
        ("filter[groups.name]=admins", "/users?fields=id,name&filter[groups.name]=admins"),
        ("filter on a typical group", f"/users?fields=id,name&filter[groups.name]={typical}"),
    ]
    plans: list[tuple[str, str]] = []
    for label, url in requests:
        for number, (statement, parameters) in enumerate(await _captured(client, engine, url)):
            async with engine.connect() as connection:
                result = await connection.exec_driver_sql(
                    "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
                )
                lines = [row[0] for row in result]
            plans.append((f"{label} [{number + 1}] {url}", statement + "\n" + "\n".join(lines)))
    return tuple(plans)


async def _captured(
    client: httpx.AsyncClient, engine: AsyncEngine, url: str
) -> list[tuple[str, Any]]:
    """The statements (with their driver parameters) one request runs on the tables."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "auth_" in statement:
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        response = await client.get(url)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    if response.status_code != 200:
        raise BenchError(f"GET {url} answered {response.status_code}: {response.text}")
    return captured


async def _environment(engine: AsyncEngine) -> tuple[tuple[str, str], ...]:
    async with engine.connect() as connection:
        server = str(await connection.scalar(text("SHOW server_version")))
    return postgres_stack(server)


def print_report(report: PagingReport) -> None:
    """The figures as a table (rich when installed), then any plans."""
    title = (
        f"{report.users:,} users, {report.memberships:,} memberships (seeded in "
        f"{report.seed_seconds:.0f} s); page {report.page}: page 1 vs page {report.depth:,}; "
        f"median of {report.repeats}"
    )
    header = ("shape", "method", "page 1 ms", f"page {report.depth:,} ms", "deep/shallow")
    rows = [
        (t.shape, t.method, f"{t.shallow_ms:.2f}", f"{t.deep_ms:.2f}", f"{t.ratio:.2f}")
        for t in report.timings
    ]
    environment = ", ".join(f"{name} {value}" for name, value in report.environment)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        for row in (header, *rows):
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        print(environment)
        for label, plan in report.plans:
            print(f"\n-- {label}\n{plan}")
        return
    table = Table(title=title)
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index < 2 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(highlight=False)
    console.print(table)
    console.print(environment, markup=False)
    for label, plan in report.plans:
        console.print(f"\n-- {label}\n{plan}", markup=False, soft_wrap=True)
