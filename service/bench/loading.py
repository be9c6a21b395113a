"""The loading benchmark: a page of users with their groups, loaded seven ways, in-process.

Lazy loading (1 + N statements), SQLAlchemy's three eager strategies, the service's two
loaders (the columns loader it runs and the ORM loader it is tested against), and
hand-written driver queries (asyncpg or aiosqlite, two statements like the planner's).
Every strategy selects the same columns (`id, name` of users and groups) and builds the
same list of dicts, which is checked before anything is timed, so the figures compare the
loading and nothing else. No HTTP, no rendering.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg  # type: ignore[import-untyped]
import sqlalchemy
from sqlalchemy import event, insert, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import joinedload, lazyload, load_only, selectinload, subqueryload

from service.bench.common import BenchError, machine, throwaway_database
from service.bench.paging import prepare_database
from service.db import UNCOUNTED, Base, make_engine, make_sessionmaker
from service.migrations import run_upgrade
from service.models import Group, User, user_group
from service.query.params import parse_query_string
from service.query.plan import Limits, ListQuery, build_list_query
from service.repository.loaders import EmbeddedBudget, LoaderMemo, load_columns, load_entities
from service.schema import registry_of
from service.seed import seed
from service.settings import Settings

PAGE_SIZES = (5, 100, 1000)
WARMUP_ROUNDS = 2
CLASSIC_USERS = 5
CLASSIC_GROUPS_EACH = 3
PLANNER_QUERY = "fields=id,name&include=groups&fields[groups]=id,name"
STRATEGIES = (
    "lazy (N+1)",
    "joinedload",
    "subqueryload",
    "selectinload",
    "planner, columns",
    "planner, orm",
    "driver",
)

Item = dict[str, Any]
Run = Callable[[int], Awaitable[list[Item]]]


@dataclass(frozen=True, slots=True)
class Timing:
    """One strategy on one page size: the median time and the statements one load ran."""

    strategy: str
    median_ms: float
    statements: int


@dataclass(frozen=True, slots=True)
class Case:
    """All strategies on one dataset and page size."""

    backend: str
    dataset: str
    page: int
    timings: tuple[Timing, ...]

    def timing(self, strategy: str) -> Timing:
        return next(t for t in self.timings if t.strategy == strategy)

    def saved(self, strategy: str) -> float:
        """Share of lazy loading's time that this strategy saves (0.92 = 92% less)."""
        lazy = self.timing("lazy (N+1)").median_ms
        return 1 - self.timing(strategy).median_ms / lazy

    def to_driver(self, strategy: str) -> float:
        return self.timing(strategy).median_ms / self.timing("driver").median_ms


@dataclass(frozen=True, slots=True)
class LoadingReport:
    repeats: int
    cases: tuple[Case, ...]
    environment: tuple[tuple[str, str], ...]


class StatementCounter:
    """Statements an engine sent to the database, without the session plumbing (BEGIN, SET)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(
        self, _conn: Connection, _cursor: Any, _sql: str, _params: Any, context: Any, _many: bool
    ) -> None:
        if not context.execution_options.get(UNCOUNTED):
            self.count += 1


async def run_loading(
    *,
    database_url: str | None,
    users: int,
    repeats: int,
    page_sizes: Sequence[int] = PAGE_SIZES,
    classic: bool = True,
) -> LoadingReport:
    """SQLite always (temporary files), PostgreSQL too when an admin URL is given."""
    if repeats < 1 or users < max(page_sizes):
        raise BenchError(f"need repeats >= 1 and at least {max(page_sizes)} users")
    # As the service does: one selectinload statement per level, whatever the page size.
    allow_large_selectin_batches(max(page_sizes) + 1)
    cases: list[Case] = []
    environment: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="svc_bench_loading_") as workdir:
        url = f"sqlite+aiosqlite:///{Path(workdir) / 'bench.db'}"
        await _prepare_sqlite(url, users=users)
        cases += await _run_cases(url, "sqlite", f"{users:,} users", page_sizes, repeats)
        environment.append(("SQLite", await _server_version(url)))
        if classic:
            classic_url = f"sqlite+aiosqlite:///{Path(workdir) / 'classic.db'}"
            await prepare_classic(classic_url)
            dataset = f"{CLASSIC_USERS} users x {CLASSIC_GROUPS_EACH} groups"
            cases += await _run_cases(classic_url, "sqlite", dataset, (CLASSIC_USERS,), repeats)
    if database_url is not None:
        async with throwaway_database(database_url) as pg_url:
            await prepare_database(pg_url, users=users)
            cases += await _run_cases(pg_url, "postgresql", f"{users:,} users", page_sizes, repeats)
            environment.append(("PostgreSQL", await _server_version(pg_url)))
    environment = [
        *machine(),
        *environment,
        ("SQLAlchemy", sqlalchemy.__version__),
        ("asyncpg", version("asyncpg")),
        ("aiosqlite", version("aiosqlite")),
    ]
    return LoadingReport(repeats, tuple(cases), tuple(environment))


async def _prepare_sqlite(url: str, *, users: int) -> None:
    await asyncio.to_thread(run_upgrade, url)
    engine = make_engine(_settings(url))
    try:
        await seed(engine, users=users, groups=max(1, users // 100), permissions=10)
    finally:
        await engine.dispose()


async def prepare_classic(url: str) -> None:
    """The textbook case: 5 users, each in exactly 3 groups (of 6)."""
    await asyncio.to_thread(run_upgrade, url)
    engine = make_engine(_settings(url))
    try:
        async with engine.begin() as connection:
            groups = [{"id": g, "name": f"group{g}"} for g in range(1, 7)]
            await connection.execute(insert(Group), groups)
            await connection.execute(
                insert(User),
                [
                    {"id": u, "name": f"user{u}", "email_address": f"user{u}@example.com"}
                    for u in range(1, CLASSIC_USERS + 1)
                ],
            )
            links = [
                {"user_id": u, "group_id": (u + k) % 6 + 1}
                for u in range(1, CLASSIC_USERS + 1)
                for k in range(CLASSIC_GROUPS_EACH)
            ]
            await connection.execute(insert(user_group), links)
    finally:
        await engine.dispose()


def _settings(url: str) -> Settings:
    # No pre-ping and no per-transaction SET: round trips every strategy would pay alike
    # (the driver strategy would not), and not what is being compared.
    return Settings(database_url=url, pool_pre_ping=False, statement_timeout_ms=0)


async def _run_cases(
    url: str, backend: str, dataset: str, page_sizes: Sequence[int], repeats: int
) -> list[Case]:
    settings = _settings(url)
    engine = make_engine(settings)
    counter = StatementCounter(engine)
    sessions = make_sessionmaker(engine)
    try:
        async with driver_strategy(url) as driver:
            runs = {**orm_strategies(sessions), "driver": driver.load}
            cases = []
            for page in page_sizes:
                statements = await _cross_check(runs, page, counter, driver)
                medians = await _measure(runs, page, repeats)
                timings = tuple(Timing(s, medians[s], statements[s]) for s in STRATEGIES)
                cases.append(Case(backend, dataset, page, timings))
    finally:
        await engine.dispose()
    return cases


def orm_strategies(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Run]:
    """The six SQLAlchemy strategies, each a fresh session per load as in a request."""
    users = load_only(User.id, User.name)
    groups = (Group.id, Group.name)

    def base() -> Any:
        return select(User).order_by(User.id)

    async def lazy(page: int) -> list[Item]:
        statement = base().options(users, lazyload(User.groups).load_only(*groups)).limit(page)
        async with sessions() as session:
            rows = (await session.scalars(statement)).all()
            # Lazy loads need the greenlet bridge; run_sync gives it, one SELECT per user.
            return await session.run_sync(lambda _: [_entity_item(u) for u in rows])

    def eager(option: Any) -> Run:
        async def run(page: int) -> list[Item]:
            statement = base().options(users, option.load_only(*groups)).limit(page)
            async with sessions() as session:
                result = await session.scalars(statement)
                return [_entity_item(u) for u in result.unique().all()]

        return run

    memo = LoaderMemo()

    async def planner_columns(page: int) -> list[Item]:
        async with sessions() as session:
            connection = await session.connection()
            loaded = await load_columns(
                connection, planner_query(page), EmbeddedBudget(10**9), memo
            )
        return loaded.items

    async def planner_orm(page: int) -> list[Item]:
        async with sessions() as session:
            connection = await session.connection()
            loaded = await load_entities(
                connection, planner_query(page), EmbeddedBudget(10**9), memo
            )
        return loaded.items

    return {
        "lazy (N+1)": lazy,
        "joinedload": eager(joinedload(User.groups)),
        "subqueryload": eager(subqueryload(User.groups)),
        "selectinload": eager(selectinload(User.groups)),
        "planner, columns": planner_columns,
        "planner, orm": planner_orm,
    }


def allow_large_selectin_batches(size: int) -> None:
    """Let selectinload put every parent of a level in one statement, in this benchmark's
    process only: SQLAlchemy splits the keys into IN lists of 500, which would make the
    strategies compared here run different numbers of statements."""
    from sqlalchemy.orm import strategies

    strategies._SelectInLoader._chunksize = size


def planner_query(page: int) -> ListQuery:
    """What the service builds for `GET /users?fields=id,name&include=groups&...&limit=page`."""
    raw = parse_query_string(f"{PLANNER_QUERY}&limit={page}")
    users = registry_of(Base)["users"]
    return build_list_query(users, raw, private_ok=False, limits=Limits(max_limit=page))


def _entity_item(user: Any) -> Item:
    return {
        "id": user.id,
        "name": user.name,
        "groups": [{"id": g.id, "name": g.name} for g in user.groups],
    }


class DriverStrategy:
    """Two hand-written statements on the bare driver, assembled into the same dicts."""

    def __init__(self, fetch: Callable[[str, Sequence[Any]], Awaitable[list[Any]]], pg: bool):
        self._fetch = fetch
        self._pg = pg
        self.statements = 0

    async def load(self, page: int) -> list[Item]:
        mark = "$1" if self._pg else "?"
        users = await self._fetch(
            f"SELECT id, name FROM auth_user ORDER BY id LIMIT {mark}", (page + 1,)
        )
        items: list[Item] = []
        by_id: dict[int, list[Item]] = {}
        for row in users[:page]:
            groups: list[Item] = []
            items.append({"id": row[0], "name": row[1], "groups": groups})
            by_id[row[0]] = groups
        self.statements += 2
        parameters: list[Any]
        if self._pg:
            where, parameters = "ug.user_id = ANY($1::int[])", [list(by_id)]
        else:
            where, parameters = f"ug.user_id IN ({','.join('?' * len(by_id))})", list(by_id)
        rows = await self._fetch(
            "SELECT ug.user_id, g.id, g.name FROM auth_user_group ug "
            f"JOIN auth_group g ON g.id = ug.group_id WHERE {where} ORDER BY g.id",
            parameters,
        )
        for owner, group_id, name in rows:
            by_id[owner].append({"id": group_id, "name": name})
        return items


@asynccontextmanager
async def driver_strategy(url: str) -> AsyncIterator[DriverStrategy]:
    """One connection held open (aiosqlite), or a one-connection asyncpg pool."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:

            async def fetch_pg(sql: str, parameters: Sequence[Any]) -> list[Any]:
                async with pool.acquire() as connection:
                    return list(await connection.fetch(sql, *parameters))

            yield DriverStrategy(fetch_pg, pg=True)
        finally:
            await pool.close()
        return
    assert parsed.database is not None
    connection = await aiosqlite.connect(parsed.database)
    try:

        async def fetch_sqlite(sql: str, parameters: Sequence[Any]) -> list[Any]:
            async with connection.execute(sql, tuple(parameters)) as cursor:
                return list(await cursor.fetchall())

        yield DriverStrategy(fetch_sqlite, pg=False)
    finally:
        await connection.close()


async def _cross_check(
    runs: dict[str, Run], page: int, counter: StatementCounter, driver: DriverStrategy
) -> dict[str, int]:
    """Every strategy must build the same page; returns the statements each one ran."""
    expected: list[Item] | None = None
    statements: dict[str, int] = {}
    for name in STRATEGIES:
        before = counter.count + driver.statements
        items = await runs[name](page)
        statements[name] = counter.count + driver.statements - before
        if expected is None:
            expected = items
        if items != expected or len(items) != page:
            raise BenchError(f"{name} built another page of {page} than lazy loading did")
    return statements


async def _measure(runs: dict[str, Run], page: int, repeats: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    for round_ in range(WARMUP_ROUNDS + repeats):
        # Interleaved and rotated, so drift on a busy machine falls on every strategy alike.
        shift = round_ % len(STRATEGIES)
        for name in STRATEGIES[shift:] + STRATEGIES[:shift]:
            started = time.perf_counter()
            await runs[name](page)
            if round_ >= WARMUP_ROUNDS:
                samples[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


async def _server_version(url: str) -> str:
    engine = make_engine(_settings(url))
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                return str(await connection.scalar(text("SHOW server_version")))
            return str(await connection.scalar(text("SELECT sqlite_version()")))
    finally:
        await engine.dispose()


def report_rows(case: Case) -> list[tuple[str, ...]]:
    """strategy, median ms, statements, % saved against lazy, ratio to the driver."""
    return [
        (
            t.strategy,
            f"{t.median_ms:.2f}",
            str(t.statements),
            "-" if t.strategy.startswith("lazy") else f"{case.saved(t.strategy):.0%}",
            f"{case.to_driver(t.strategy):.2f}",
        )
        for t in case.timings
    ]


def print_report(report: LoadingReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    header = ("strategy", "median ms", "statements", "saved vs lazy", "x driver")
    for case in report.cases:
        table = Table(
            title=f"{case.backend}, {case.dataset}: page of {case.page} users with their groups, "
            f"median of {report.repeats}"
        )
        for index, name in enumerate(header):
            table.add_column(name, justify="left" if index == 0 else "right")
        for row in report_rows(case):
            table.add_row(*row)
        console.print(table)
    console.print(", ".join(f"{k} {v}" for k, v in report.environment), markup=False)
