"""Fixtures: real databases on both backends, each test on its own copy of a migrated schema.

Both backends run by default, and a PostgreSQL that does not answer fails the run (it is
never skipped). On a machine without one, choose the backends: TEST_BACKENDS=sqlite.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from service.db import UNCOUNTED, Base
from service.migrations import run_upgrade
from service.schema import registry_of
from service.settings import Settings

POSTGRES_ADMIN_DSN = os.environ.get(
    "TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
AUTH = registry_of(Base)  # the built-in models' registry, as the app derives it
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BACKENDS = tuple(
    name.strip() for name in os.environ.get("TEST_BACKENDS", "sqlite,postgres").split(",")
)


def _pg_url(dsn: str, database: str) -> str:
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


async def _pg_admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def _postgres_available() -> bool:
    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def postgres_ready() -> bool:
    if not _postgres_available():
        where = "in CI" if IN_CI else "for the postgres backend (TEST_BACKENDS=sqlite runs without)"
        pytest.fail(f"PostgreSQL is required {where} and did not answer at {POSTGRES_ADMIN_DSN}")
    return True


class DatabaseFactory:
    """Creates throwaway databases (from a migrated template) and drops them at the end."""

    def __init__(self, backend: str, workdir: Path) -> None:
        self.backend = backend
        self.workdir = workdir
        self.created: list[str] = []
        self._template: str | None = None

    def _name(self) -> str:
        return f"svc_test_{uuid.uuid4().hex[:12]}"

    async def template(self) -> str:
        if self._template is None:
            name = self._name()
            if self.backend == "postgres":
                await _pg_admin(f'CREATE DATABASE "{name}"')
                self.created.append(name)
                await asyncio.to_thread(run_upgrade, _pg_url(POSTGRES_ADMIN_DSN, name))
            else:
                path = self.workdir / f"{name}.db"
                await asyncio.to_thread(run_upgrade, f"sqlite+aiosqlite:///{path}")
            self._template = name
        return self._template

    async def empty(self) -> str:
        """A database with no schema at all (for the migration tests)."""
        name = self._name()
        if self.backend == "postgres":
            await _pg_admin(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            return _pg_url(POSTGRES_ADMIN_DSN, name)
        return f"sqlite+aiosqlite:///{self.workdir / name}.db"

    async def migrated(self) -> str:
        """A fresh database holding the schema at the newest revision."""
        template = await self.template()
        name = self._name()
        if self.backend == "postgres":
            await _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            self.created.append(name)
            return _pg_url(POSTGRES_ADMIN_DSN, name)
        shutil.copyfile(self.workdir / f"{template}.db", self.workdir / f"{name}.db")
        return f"sqlite+aiosqlite:///{self.workdir / name}.db"

    async def drop_all(self) -> None:
        for name in reversed(self.created):
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgres":
        request.getfixturevalue("postgres_ready")
    elif name != "sqlite":
        pytest.fail(f"TEST_BACKENDS names {name!r}; use sqlite and/or postgres")
    return name


@pytest.fixture(scope="session")
def _workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("databases")


@pytest.fixture(scope="session")
async def databases(backend: str, _workdir: Path) -> AsyncIterator[DatabaseFactory]:
    factory = DatabaseFactory(backend, _workdir)
    yield factory
    await factory.drop_all()


@pytest.fixture
async def database_url(databases: DatabaseFactory) -> str:
    """A fresh, migrated, empty database for one test."""
    return await databases.migrated()


TOKEN = "test-token-0123456789"


@pytest.fixture(scope="session")
async def seeded_url(databases: DatabaseFactory) -> str:
    """One seeded database per backend, shared by read-only tests (they never write)."""
    from service.db import make_engine
    from service.seed import seed

    url = await databases.migrated()
    engine = make_engine(Settings(database_url=url))
    try:
        await seed(engine, users=60, groups=12, permissions=15)
    finally:
        await engine.dispose()
    return url


def make_test_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "api_tokens": (TOKEN,),
        "cursor_secret": "test-secret",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


class StatementLog:
    """Every SQL statement an engine ran, as text, while attached."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __len__(self) -> int:
        return len(self.statements)

    def selects(self) -> list[str]:
        return [s for s in self.statements if s.lstrip().upper().startswith("SELECT")]

    def clear(self) -> None:
        self.statements.clear()


@pytest.fixture(scope="session")
async def read_app(seeded_url: str) -> AsyncIterator[FastAPI]:
    """An app over the shared seeded database (reads only), uncached so every test sees its SQL."""
    from service.app import create_app

    app = create_app(make_test_settings(seeded_url, cache_url="none"))
    yield app
    await app.state.services.db.engine.dispose()


@pytest.fixture
async def client(read_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=read_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def recording(app: FastAPI) -> Iterator[StatementLog]:
    """The statements an app's engine runs while recording (session plumbing left out)."""
    log = StatementLog()
    engine = app.state.services.db.engine.sync_engine

    def record(
        _conn: object, _cursor: object, statement: str, _params: object, context: Any, _many: bool
    ) -> None:
        if not context.execution_options.get(UNCOUNTED):
            log.statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield log
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def statements(read_app: FastAPI) -> Iterator[StatementLog]:
    """The SQL the read app runs during one test."""
    with recording(read_app) as log:
        yield log


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """Builds apps on databases a test made itself; closes them at the end."""
    from service.app import create_app

    opened: list[tuple[FastAPI, httpx.AsyncClient]] = []

    async def make(database_url: str, **overrides: object) -> httpx.AsyncClient:
        app = create_app(make_test_settings(database_url, **overrides))
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        )
        opened.append((app, http))
        return http

    yield make
    for app, http in opened:
        await http.aclose()
        await app.state.services.db.engine.dispose()


def app_of(http: httpx.AsyncClient) -> FastAPI:
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    app: FastAPI = transport.app  # type: ignore[assignment]
    return app


def record_statements(http: httpx.AsyncClient) -> StatementLog:
    """Start recording the SQL of the app behind a client made by `make_client`."""
    log = StatementLog()
    engine = app_of(http).state.services.db.engine.sync_engine

    def record(
        _conn: object, _cursor: object, statement: str, _params: object, context: Any, _many: bool
    ) -> None:
        if not context.execution_options.get(UNCOUNTED):
            log.statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    return log


@contextlib.contextmanager
def quiet_collector() -> Iterator[list[tuple[float, float]]]:
    """Keep the test process's full garbage collections short while a test times something,
    and record any collection over 0.1 s. In-process clients and apps share this process and
    its event loop; after thousands of tests a full collection of the heap they built can
    stop the loop for seconds (a deadline then fires late, a latency is a pause)."""
    slow: list[tuple[float, float]] = []
    began: list[float] = []

    def timed(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            began[:] = [time.perf_counter()]
        elif began and (seconds := time.perf_counter() - began[0]) > 0.1:
            slow.append((began[0], round(seconds, 3)))

    gc.collect()
    gc.freeze()  # what the earlier tests left behind is no longer scanned
    gc.callbacks.append(timed)
    try:
        yield slow
    finally:
        gc.callbacks.remove(timed)
        gc.unfreeze()
