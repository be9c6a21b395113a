"""After a write through any kind of relationship (create, PATCH, DELETE with its cascade), no
cached page is stale, with the memory cache and with Redis (SPEC: Caching "Invalidation is
exact and immediate", Your own models "every table a cascade can touch counts as changed")."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import httpx
import pytest
import redis
from redis.exceptions import RedisError

from service.schema import Join, Kind, Resource
from tests.conftest import DatabaseFactory
from tests.contract.bodies import Bodies, writable
from tests.contract.conftest import MakeClient, WriteSide, make_write_side
from tests.contract.reference import Reference, build_reference, json_of
from tests.contract.schemas import Schema
from tests.contract.shapes import ids, relationship_cases
from tests.contract.wire import BEARER, NO_CACHE

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
Write = Callable[[WriteSide, Join, Reference], Awaitable[None]]


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis is required: a server that does not answer fails these tests (never a skip)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except RedisError as exc:
        pytest.fail(f"Redis is required and did not answer at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def cache(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """Settings for one cache backend; Redis under a prefix of this test's own, removed after."""
    if request.param == "memory":
        yield {"cache_url": "memory://"}
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"contract-{uuid4().hex}"
    yield {"cache_url": url, "cache_prefix": prefix}
    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
async def cached(
    schema: Schema, databases: DatabaseFactory, make_client: MakeClient, cache: dict[str, object]
) -> AsyncIterator[WriteSide]:
    side = await make_write_side(schema, databases, make_client, **cache)
    yield side
    side.app.state.services.writer.hasher.close()
    await side.app.state.services.cache.close()


# --- writes that change an embedded relationship, by kind ----------------------------------


def path_of(resource: Resource, key: Any) -> str:
    return f"/{resource.name}/{quote(str(json_of(resource.key, key)), safe='')}"


def reverse_of(join: Join) -> Join | None:
    """The many-to-many relationship that walks the same junction the other way."""
    return next(
        (
            other
            for other in join.target.relationships
            if other.kind is Kind.MANY_TO_MANY and other.secondary is join.secondary
        ),
        None,
    )


def key_on_target(join: Join) -> bool:
    """Whether the target rows hold the foreign key (one-to-many, or one-to-one from the
    referenced side)."""
    return join.secondary is None and bool(join.child_key.foreign_keys)


def expect(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (
        response.request.method,
        response.request.url,
        response.text,
    )


async def create_through(side: WriteSide, join: Join, reference: Reference) -> None:
    source, target = join.source, join.target
    bodies = Bodies(reference)
    parent = next(iter(reference.keys(source.name)))
    if key_on_target(join):
        foreign = next(a for a in target.attributes if a.column is join.child_key)
        local = next(a for a in source.attributes if a.column is join.parent_key)
        body = bodies.create(target, everything=False)
        body[foreign.name] = json_of(local, reference.rows[source.name][parent][local.name])
        expect(await side.client.post(f"/{target.name}", json=body, headers=BEARER), 201)
    elif join.kind is Kind.MANY_TO_MANY:
        reverse = reverse_of(join)
        body = bodies.create(target, everything=False)
        if reverse is not None:
            body[str(reverse.ids_field)] = [json_of(source.key, parent)]
            expect(await side.client.post(f"/{target.name}", json=body, headers=BEARER), 201)
        else:
            made = await side.client.post(f"/{target.name}", json=body, headers=BEARER)
            expect(made, 201)
            linked = [
                json_of(target.key, k) for k in reference.related(source.name, join.name, parent)
            ]
            new = made.json()["data"][target.key.name]
            patch = {str(join.ids_field): [*linked, new]}
            expect(
                await side.client.patch(path_of(source, parent), json=patch, headers=BEARER), 200
            )
    else:  # the source holds the foreign key: a new source row pointing at a stored target
        foreign = next(a for a in source.attributes if a.column is join.parent_key)
        body = bodies.create(source, everything=False)
        body[foreign.name] = bodies.stored_key(target.name)
        expect(await side.client.post(f"/{source.name}", json=body, headers=BEARER), 201)


def embedded_target(join: Join, reference: Reference) -> Any:
    """A target key some source row embeds through `join`."""
    linked = sorted(
        {k for keys in reference.links[(join.source.name, join.name)].values() for k in keys}
    )
    assert linked, f"the seed links something through {join.source.name}.{join.name}"
    return linked[0]


async def patch_through(side: WriteSide, join: Join, reference: Reference) -> None:
    target = join.target
    key = embedded_target(join, reference)
    attribute = next(
        a
        for a in writable(target)
        if a is not target.key and a.references is None and a in target.attributes and not a.private
    )
    change = {attribute.name: Bodies(reference).value(attribute)}
    expect(await side.client.patch(path_of(target, key), json=change, headers=BEARER), 200)


async def unlink_from_the_other_side(side: WriteSide, join: Join, reference: Reference) -> None:
    reverse = reverse_of(join)
    assert reverse is not None
    key = embedded_target(join, reference)
    change: dict[str, list[Any]] = {str(reverse.ids_field): []}
    expect(await side.client.patch(path_of(join.target, key), json=change, headers=BEARER), 200)


async def delete_through(side: WriteSide, join: Join, reference: Reference) -> None:
    key = embedded_target(join, reference)
    expect(await side.client.delete(path_of(join.target, key), headers=BEARER), 204)


def writes_for(join: Join) -> list[tuple[str, Write]]:
    """Create, PATCH and DELETE (with what it cascades) through `join`; for a many-to-many
    link also a PATCH of the target's own id list, which changes only the junction."""
    steps: list[tuple[str, Write]] = [("create", create_through), ("patch target", patch_through)]
    if reverse_of(join) is not None:
        steps.append(("unlink from the target's side", unlink_from_the_other_side))
    steps.append(("delete target (with its cascade)", delete_through))
    return steps


# --- the test --------------------------------------------------------------------------------


async def prime(client: httpx.AsyncClient, path: str) -> bytes:
    """Read a page until it is served from the cache; its body."""
    first = await client.get(path)
    assert first.status_code == 200, first.text
    second = await client.get(path)
    assert second.headers["x-cache"] == "HIT", (path, second.headers)
    assert second.content == first.content
    return second.content


@pytest.mark.parametrize(("schema", "resource", "relationship"), relationship_cases(), ids=ids)
async def test_no_page_is_stale_after_a_write_through_a_relationship(
    cached: WriteSide, schema: Schema, resource: str, relationship: str
) -> None:
    join = cached.registry[resource].relationship(relationship)
    assert join is not None
    embedding = f"/{resource}?include={relationship}&limit=500"
    pages = [embedding] + [f"/{name}?limit=500" for name in cached.registry]
    for name, write in writes_for(join):
        bodies = {path: await prime(cached.client, path) for path in pages}
        reference = build_reference(cached.registry, await cached.tables())
        await write(cached, join, reference)
        for path in pages:
            served = await cached.client.get(path)
            fresh = await cached.client.get(path, headers=NO_CACHE)
            assert fresh.status_code == served.status_code == 200
            assert served.content == fresh.content, (
                f"{path} is stale after {name} ({served.headers.get('x-cache')})"
            )
        changed = (await cached.client.get(embedding, headers=NO_CACHE)).content
        assert changed != bodies[embedding], f"{name} must change {embedding}"
