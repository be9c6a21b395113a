"""Fixtures for the operational tests: seeded PostgreSQL databases of their own (svc_ops_*).

These tests are about PostgreSQL, PgBouncer and real processes, so PostgreSQL is required:
when it does not answer they fail, whatever CI says.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service.db import make_engine
from service.migrations import run_upgrade
from service.seed import seed
from service.settings import Settings
from tests.conftest import POSTGRES_ADMIN_DSN, _pg_url

SEED_SIZES = {"users": 200, "groups": 20, "permissions": 30}


async def admin_execute(sql: str, dsn: str = POSTGRES_ADMIN_DSN) -> None:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def migrate_and_seed(url: str) -> None:
    """What `service serve` does for SQLite, done by hand for PostgreSQL."""
    await asyncio.to_thread(run_upgrade, url)
    engine = make_engine(Settings(database_url=url))
    try:
        await seed(engine, **SEED_SIZES)
    finally:
        await engine.dispose()


class OpsDatabases:
    """Seeded databases copied from one template; all of them dropped at the end."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self._template: str | None = None

    @staticmethod
    def _name() -> str:
        return f"svc_ops_{uuid.uuid4().hex[:12]}"

    async def _ensure_template(self) -> str:
        if self._template is None:
            name = self._name()
            await admin_execute(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            await migrate_and_seed(_pg_url(POSTGRES_ADMIN_DSN, name))
            self._template = name
        return self._template

    async def create(self) -> tuple[str, str]:
        """A fresh migrated and seeded database: (name, SQLAlchemy URL)."""
        template = await self._ensure_template()
        name = self._name()
        await admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.created.append(name)
        return name, _pg_url(POSTGRES_ADMIN_DSN, name)

    async def drop_all(self) -> None:
        for name in reversed(self.created):
            await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def ops_databases() -> AsyncIterator[OpsDatabases]:
    try:
        await admin_execute("SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        pytest.fail(f"the ops tests need PostgreSQL at {POSTGRES_ADMIN_DSN}: {error}")
    factory = OpsDatabases()
    yield factory
    await factory.drop_all()


@pytest.fixture
async def ops_db(ops_databases: OpsDatabases) -> tuple[str, str]:
    """(database name, SQLAlchemy URL) of a fresh seeded database for one test."""
    return await ops_databases.create()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


def asyncpg_dsn(url: str) -> str:
    """The plain libpq-style DSN asyncpg takes, from a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class TableLock:
    """`LOCK TABLE ... IN ACCESS EXCLUSIVE MODE` held by a separate connection: every statement
    touching the table waits, which makes a slow statement without touching the service."""

    def __init__(self, url: str, table: str = "auth_user") -> None:
        self.dsn = asyncpg_dsn(url)
        self.table = table
        self.connection: asyncpg.Connection | None = None
        self.pid = 0

    async def __aenter__(self) -> TableLock:
        self.connection = await asyncpg.connect(self.dsn, timeout=5)
        self.pid = self.connection.get_server_pid()
        await self.connection.execute("BEGIN")
        await self.connection.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
        return self

    async def release(self) -> None:
        if self.connection is not None and not self.connection.is_closed():
            await self.connection.execute("ROLLBACK")
            await self.connection.close()
        self.connection = None

    async def __aexit__(self, *_exc: object) -> None:
        await self.release()


async def sessions_of(database: str, *, excluding: int = 0) -> list[asyncpg.Record]:
    """The client sessions connected to `database` (seen from the admin database)."""
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(
            "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
            "WHERE datname = $1 AND backend_type = 'client backend' AND pid <> $2",
            database,
            excluding,
        )
        return rows
    finally:
        await connection.close()


def metric_samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus exposition text -> sample name -> [(labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    found = [
        value
        for sample_labels, value in metric_samples(text).get(name, [])
        if all(sample_labels.get(k) == v for k, v in labels.items())
    ]
    assert found, f"no sample {name}{labels} in the metrics"
    return sum(found)


def serve_settings(url: str, **extra: str) -> dict[str, str]:
    """The environment of a `service serve` subprocess over `url`."""
    from tests.conftest import TOKEN

    settings = {
        "database_url": url,
        "api_tokens": TOKEN,
        "cursor_secret": "ops-secret",
        "cache_url": "memory://",
        "log_level": "INFO",
    }
    settings.update(extra)
    return settings
