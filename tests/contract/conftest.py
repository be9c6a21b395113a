"""Fixtures: per (schema, backend) a seeded database shared by the reading tests, one shared by
the tests whose writes must all be refused (each compares every table before and after), and
for each test that writes a fresh one of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.schema import Registry
from tests.conftest import DatabaseFactory, app_of, make_test_settings
from tests.contract.reference import Reference, Tables, build_reference, read_tables
from tests.contract.schemas import Schema

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
# Writes hash passwords; the cheapest argon2id keeps the suite fast (the hash stays argon2id).
FAST_HASHING = {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}


@dataclass(frozen=True)
class ReadSide:
    """A seeded database no test writes to, and an uncached app over it."""

    schema: Schema
    url: str
    app: FastAPI
    client: httpx.AsyncClient
    reference: Reference

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.services.registry
        return registry


class ReadSides:
    """One ReadSide per schema on this backend, made on first use."""

    def __init__(self, databases: DatabaseFactory) -> None:
        self.databases = databases
        self.sides: dict[str, ReadSide] = {}

    async def get(self, schema: Schema) -> ReadSide:
        if schema.name not in self.sides:
            url = await schema.create(self.databases, size="read")
            settings = make_test_settings(url, cache_url="none", **schema.settings())
            app = create_app(settings)
            registry = app.state.services.registry
            # The registry the tests were parametrized from is the app's own.
            assert registry is schema.registry
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            )
            reference = build_reference(registry, await read_tables(url, schema.metadata))
            self.sides[schema.name] = ReadSide(schema, url, app, client, reference)
        return self.sides[schema.name]

    async def close(self) -> None:
        for side in self.sides.values():
            await side.client.aclose()
            side.app.state.services.writer.hasher.close()
            await side.app.state.services.db.engine.dispose()


@pytest.fixture(scope="session")
async def read_sides(databases: DatabaseFactory) -> AsyncIterator[ReadSides]:
    sides = ReadSides(databases)
    yield sides
    await sides.close()


@pytest.fixture
async def reader(read_sides: ReadSides, schema: Schema) -> ReadSide:
    return await read_sides.get(schema)


@dataclass(frozen=True)
class WriteSide:
    """A fresh seeded database of this test's own, and an uncached app over it."""

    schema: Schema
    url: str
    client: httpx.AsyncClient
    before: Tables  # every table as seeded

    @property
    def app(self) -> FastAPI:
        return app_of(self.client)

    @property
    def registry(self) -> Registry:
        registry: Registry = self.app.state.services.registry
        return registry

    @property
    def reference(self) -> Reference:
        return build_reference(self.registry, self.before)

    async def tables(self) -> Tables:
        return await read_tables(self.url, self.schema.metadata)


async def make_write_side(
    schema: Schema, databases: DatabaseFactory, make_client: MakeClient, **overrides: object
) -> WriteSide:
    url = await schema.create(databases, size="write")
    settings = {"cache_url": "none", **FAST_HASHING, **schema.settings(), **overrides}
    client = await make_client(url, **settings)
    assert app_of(client).state.services.registry is schema.registry
    return WriteSide(schema, url, client, await read_tables(url, schema.metadata))


@pytest.fixture
async def writer(
    schema: Schema, databases: DatabaseFactory, make_client: MakeClient
) -> AsyncIterator[WriteSide]:
    side = await make_write_side(schema, databases, make_client)
    yield side
    side.app.state.services.writer.hasher.close()


class RefusalSides:
    """Per schema, one database for the tests whose every write must be refused: each takes
    its own snapshot first and asserts every table is unchanged after, so none can hide a
    write from the next (and a fresh PostgreSQL database per refusal costs seconds)."""

    def __init__(self, databases: DatabaseFactory) -> None:
        self.databases = databases
        self.made: dict[str, tuple[str, FastAPI, httpx.AsyncClient]] = {}

    async def get(self, schema: Schema) -> WriteSide:
        if schema.name not in self.made:
            url = await schema.create(self.databases, size="write")
            settings = {"cache_url": "none", **FAST_HASHING, **schema.settings()}
            app = create_app(make_test_settings(url, **settings))
            assert app.state.services.registry is schema.registry
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            )
            self.made[schema.name] = (url, app, client)
        url, _, client = self.made[schema.name]
        return WriteSide(schema, url, client, await read_tables(url, schema.metadata))

    async def close(self) -> None:
        for _, app, client in self.made.values():
            await client.aclose()
            app.state.services.writer.hasher.close()
            await app.state.services.db.engine.dispose()


@pytest.fixture(scope="session")
async def refusal_sides(databases: DatabaseFactory) -> AsyncIterator[RefusalSides]:
    sides = RefusalSides(databases)
    yield sides
    await sides.close()


@pytest.fixture
async def refuser(refusal_sides: RefusalSides, schema: Schema) -> WriteSide:
    """The schema's refusal database, with every table as this test found it."""
    return await refusal_sides.get(schema)
