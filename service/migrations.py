"""Alembic driven from code: upgrade, downgrade and schema drift checks for any database URL."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import service
import service.models  # registers the tables on Base.metadata
from service.db import Base

# Found from the package, not the working directory, so `service migrate` works anywhere
# in a source checkout (the package is installed editable).
ALEMBIC_DIR = Path(service.__file__).resolve().parent.parent / "alembic"


def make_config(database_url: str) -> Config:
    """An Alembic Config built in code: no ini file, and logging left to the caller."""
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    # Passed as an attribute, not `sqlalchemy.url`: the ini parser would choke on the `%`
    # of a percent-encoded password.
    config.attributes["database_url"] = database_url
    return config


def run_upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database up to `revision`. Sync: call it via asyncio.to_thread from async code."""
    command.upgrade(make_config(database_url), revision)


def run_downgrade(database_url: str, revision: str) -> None:
    """Take the database down to `revision` ("base" drops every table)."""
    command.downgrade(make_config(database_url), revision)


def compare_to_models(database_url: str) -> list[Any]:
    """Autogenerate's differences between the database and the models; empty means in sync."""

    async def compare() -> list[Any]:
        engine = create_async_engine(database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_compare)
        finally:
            await engine.dispose()

    return asyncio.run(compare())


def _compare(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        # SQLite cannot reflect the `(col IS NULL, col, id)` indexes; PostgreSQL compares them.
        warnings.filterwarnings(
            "ignore", "Skipped unsupported reflection of expression-based index", SAWarning
        )
        warnings.filterwarnings(
            "ignore", "autogenerate skipping metadata-specified expression-based index"
        )
        diffs: list[Any] = compare_metadata(context, Base.metadata)
    return diffs
