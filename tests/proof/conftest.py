"""What the proof suites share: a PostgreSQL database of their own, migrated and seeded."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.conftest import POSTGRES_ADMIN_DSN, _pg_url
from tests.ops.conftest import admin_execute, migrate_and_seed


@contextlib.asynccontextmanager
async def proof_database() -> AsyncIterator[tuple[str, str]]:
    """A migrated, seeded database of the local PostgreSQL (svc_proof_*): its name and URL.

    Dropped afterwards, connections and all."""
    name = f"svc_proof_{uuid.uuid4().hex[:12]}"
    await admin_execute(f'CREATE DATABASE "{name}"')
    try:
        url = _pg_url(POSTGRES_ADMIN_DSN, name)
        await migrate_and_seed(url)
        yield name, url
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def proof_db() -> AsyncIterator[str]:
    """The name of a `proof_database()` for one test."""
    async with proof_database() as (name, _url):
        yield name
