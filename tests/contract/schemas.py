"""The schemas under contract: how to make a seeded database for each, on the current backend.

Everything a test checks comes from the registry the app derives (`registry_of(load_base(
MODELS))`, the very object `app.state.services.registry` holds); only the seeding here names
a schema's own code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from service.db import make_engine
from service.schema import Registry, load_base, registry_of
from service.settings import DEFAULT_MODELS, Settings
from tests.conftest import DatabaseFactory

Size = Literal["read", "write"]

AUTH_SIZES: dict[Size, dict[str, int]] = {
    "read": {"users": 60, "groups": 12, "permissions": 15},
    "write": {"users": 12, "groups": 5, "permissions": 6},
}
SHOP_SIZES: dict[Size, dict[str, int]] = {
    "read": {
        "customers": 12,
        "categories": 4,
        "products": 30,
        "tags": 6,
        "orders": 40,
        "passwords": 1,
    },
    "write": {
        "customers": 6,
        "categories": 3,
        "products": 10,
        "tags": 4,
        "orders": 12,
        "passwords": 0,
    },
}


@dataclass(frozen=True, slots=True)
class Schema:
    """One declarative base the engine serves, named as the MODELS setting names it."""

    name: str
    models: str

    def __str__(self) -> str:
        return self.name

    @property
    def registry(self) -> Registry:
        return registry_of(load_base(self.models))

    @property
    def metadata(self) -> MetaData:
        return load_base(self.models).metadata

    def settings(self) -> dict[str, object]:
        """`make_client` overrides that serve this schema."""
        return {} if self.models == DEFAULT_MODELS else {"models": self.models}

    async def create(self, databases: DatabaseFactory, *, size: Size) -> str:
        """A new database of this schema, seeded; its URL."""
        if self.name == "auth":
            return await _auth_database(databases, AUTH_SIZES[size])
        return await _shop_database(databases, SHOP_SIZES[size])


async def _auth_database(databases: DatabaseFactory, sizes: dict[str, int]) -> str:
    from service.seed import seed

    url = await databases.migrated()
    engine = make_engine(Settings(database_url=url))
    try:
        await seed(engine, **sizes)
    finally:
        await engine.dispose()
    return url


async def _shop_database(databases: DatabaseFactory, sizes: dict[str, int]) -> str:
    from examples.shop.models import Base
    from examples.shop.seed import seed

    url = await databases.empty()
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        await seed(engine, **sizes)
    finally:
        await engine.dispose()
    return url


AUTH = Schema("auth", DEFAULT_MODELS)
SHOP = Schema("shop", "examples.shop.models:Base")
SCHEMAS = (AUTH, SHOP)
