"""Fixtures the API tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Direct SQL on the test's database, beside the app."""
    direct = create_async_engine(database_url)
    yield direct
    await direct.dispose()
