"""The response cache over HTTP: hits without SQL, canonical keys, read-your-writes, privacy,
single-flight, Redis outages, and the cache headers, on both databases.

Redis is required (a missing server fails these tests, it never skips them). Every test that
uses Redis works under its own CACHE_PREFIX and deletes only the keys under it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from uuid import uuid4

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service.app import create_app
from service.cache.backend import CacheUnavailable, Entry
from service.cache.redis_backend import RedisBackend
from service.db import make_engine
from service.seed import seed
from service.settings import Settings
from tests.conftest import AUTH as RESOURCES
from tests.conftest import TOKEN, app_of, make_test_settings, record_statements

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_CACHE = {"Cache-Control": "no-cache"}
ALL_TABLES = frozenset(
    {"auth_user", "auth_group", "auth_permission", "auth_user_group", "auth_group_permission"}
)
SEED = {"users": 20, "groups": 6, "permissions": 8}


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis: required, so a missing server is a failure (never a skip)."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
    try:
        client.ping()
    except RedisError as exc:
        pytest.fail(
            f"Redis is required by the cache tests and did not answer at {REDIS_URL}: {exc}"
        )
    finally:
        client.close()
    return REDIS_URL


def delete_prefix(url: str, prefix: str) -> None:
    """Delete the keys this test made, and nothing else."""
    client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        batch = list(client.scan_iter(match=f"{prefix}:*", count=500))
        for start in range(0, len(batch), 500):
            client.delete(*batch[start : start + 500])
    finally:
        client.close()


def redis_overrides(url: str) -> tuple[dict[str, object], str]:
    prefix = f"test-{uuid4().hex}"
    return {"cache_url": url, "cache_prefix": prefix}, prefix


@pytest.fixture(params=("memory", "redis"))
def cache_config(request: pytest.FixtureRequest) -> Iterator[dict[str, object]]:
    """Settings overrides for one cache backend; Redis under a prefix of this test's own."""
    if request.param == "memory":
        yield {"cache_url": "memory://"}
        return
    url = request.getfixturevalue("redis_url")
    overrides, prefix = redis_overrides(url)
    try:
        yield overrides
    finally:
        delete_prefix(url, prefix)


@pytest.fixture
def shared_redis(redis_url: str) -> Iterator[dict[str, object]]:
    overrides, prefix = redis_overrides(redis_url)
    try:
        yield overrides
    finally:
        delete_prefix(redis_url, prefix)


@pytest.fixture
async def cached_client(make_client: MakeClient) -> AsyncIterator[MakeClient]:
    """`make_client` that also closes each app's cache (its Redis connections) at the end."""
    made: list[httpx.AsyncClient] = []

    async def make(database_url: str, **overrides: object) -> httpx.AsyncClient:
        client = await make_client(database_url, **overrides)
        made.append(client)
        return client

    yield make
    for client in made:
        await app_of(client).state.services.cache.close()


async def seed_database(url: str, **sizes: int) -> None:
    engine = make_engine(Settings(database_url=url))
    try:
        await seed(engine, **(SEED | sizes))
    finally:
        await engine.dispose()


@pytest.fixture
async def seeded(database_url: str) -> str:
    """This test's own database with a little demo data."""
    await seed_database(database_url)
    return database_url


def x_cache(response: httpx.Response) -> str | None:
    return response.headers.get("x-cache")


def queries_run(response: httpx.Response) -> int:
    timing = response.headers["server-timing"]
    description = timing.split('desc="', 1)[1].split('"', 1)[0]
    return int(description.removesuffix(" queries"))


async def check_fresh(client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> str:
    """A normal read equals an uncached one; returns the normal read's X-Cache."""
    cached = await client.get(path, headers=headers)
    fresh = await client.get(path, headers={**headers, **NO_CACHE})
    assert cached.status_code == fresh.status_code, (path, cached.text, fresh.text)
    if cached.status_code == 200:
        assert cached.content == fresh.content, (path, x_cache(cached))
        assert cached.headers["etag"] == fresh.headers["etag"]
    return x_cache(cached) or ""


# --- 1. hits run no SQL; equal meanings share one entry ---------------------------------------


async def test_a_hit_runs_no_sql(
    seeded_url: str, cached_client: MakeClient, cache_config: dict[str, object]
) -> None:
    client = await cached_client(seeded_url, **cache_config)
    log = record_statements(client)
    path = "/users?include=groups.permissions&limit=10"
    first = await client.get(path)
    assert first.status_code == 200
    assert x_cache(first) == "MISS"
    assert len(log.selects()) == 3
    assert queries_run(first) == 3
    log.clear()
    second = await client.get(path)
    assert x_cache(second) == "HIT"
    assert log.statements == []
    assert queries_run(second) == 0
    assert '"0 queries"' in second.headers["server-timing"]
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]


EQUIVALENT_SPELLINGS: tuple[tuple[str, ...], ...] = (
    (
        "/users",
        "/users?limit=50",
        "/users?sort=id&limit=50",
        "/users?fields=created,id,name,display_name",
        "/users?fields=id,name,display_name,created,name",
    ),
    (
        "/users?fields=id,name&include=groups&sort=-name&limit=5",
        "/users?limit=5&sort=-name&include=groups&fields=name,id",
        "/users?fields=%20name%20,%20id%20,name&include=groups,groups&sort=-name,id&limit=5",
    ),
    (
        "/groups?include=users,permissions",
        "/groups?include=permissions,users",
        "/groups?include=%20permissions,users,permissions",
    ),
    (
        "/groups?include=permissions.groups&fields[permissions.groups]=name",
        "/groups?fields[permissions.groups]=name&include=permissions,permissions.groups",
    ),
    (
        "/users?filter[id][in]=3,1,2",
        "/users?filter[id][in]=1,2,3",
        "/users?filter[id][in]=2,%203,1,1",
    ),
    (
        "/users?filter[groups.name]=viewers&filter[id][gte]=2&count=true",
        "/users?count=true&filter[id][gte]=2&filter[groups.name][eq]=viewers",
    ),
    ("/users/1?include=groups&fields=name", "/users/1?fields=name&include=groups"),
    ("/groups/3/users?sort=name", "/groups/3/users?sort=name,id"),
    ("/permissions/1/groups", "/permissions/1/groups?limit=50&sort=id"),
)


async def test_equivalent_spellings_share_one_entry(
    seeded_url: str, cached_client: MakeClient, cache_config: dict[str, object]
) -> None:
    client = await cached_client(seeded_url, **cache_config)
    for spellings in EQUIVALENT_SPELLINGS:
        first = await client.get(spellings[0])
        assert first.status_code == 200, (spellings[0], first.text)
        assert x_cache(first) == "MISS", spellings[0]
        for spelling in spellings[1:]:
            again = await client.get(spelling)
            assert again.status_code == 200, (spelling, again.text)
            assert x_cache(again) == "HIT", spelling
            assert again.content == first.content, spelling
            assert again.headers["etag"] == first.headers["etag"]


# Random valid requests drawn from the registry, and equivalent respellings of them.

RELATIONS = {
    name: {r.name: r.target.name for r in resource.relationships}
    for name, resource in RESOURCES.items()
}
KNOWN_NAMES = {
    "users": ("alice", "bob", "carol"),
    "groups": ("admins", "editors", "viewers"),
    "permissions": ("read", "edit", "manage"),
}


def visible(resource: str, *, authenticated: bool) -> list[str]:
    return list(RESOURCES[resource].visible_attributes(private=authenticated))


@dataclass(frozen=True)
class Request:
    path: str
    params: tuple[tuple[str, tuple[str, ...]], ...]
    authenticated: bool
    is_list: bool

    def url(self) -> str:
        encoded = (f"{name}={quote(','.join(items), safe=',.-:')}" for name, items in self.params)
        query = "&".join(encoded)
        return f"{self.path}?{query}" if query else self.path

    def headers(self) -> dict[str, str]:
        return AUTH if self.authenticated else {}


@st.composite
def requests(draw: st.DrawFn) -> Request:
    authenticated = draw(st.booleans())
    kind = draw(st.sampled_from(("list", "list", "item", "related")))
    root = draw(st.sampled_from(sorted(RESOURCES)))
    number = draw(st.integers(1, 4))
    if kind == "related":
        relation = draw(st.sampled_from(sorted(RELATIONS[root])))
        path, resource = f"/{root}/{number}/{relation}", RELATIONS[root][relation]
    elif kind == "item":
        path, resource = f"/{root}/{number}", root
    else:
        path, resource = f"/{root}", root
    names = visible(resource, authenticated=authenticated)
    params: dict[str, tuple[str, ...]] = {}
    if draw(st.booleans()):
        params["fields"] = tuple(draw(st.lists(st.sampled_from(names), min_size=1, unique=True)))
    paths: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        first = draw(st.sampled_from(sorted(RELATIONS[resource])))
        target = RELATIONS[resource][first]
        if draw(st.booleans()):
            second = draw(st.sampled_from(sorted(RELATIONS[target])))
            paths.append(f"{first}.{second}")
            target = RELATIONS[target][second]
        else:
            paths.append(first)
        if draw(st.integers(0, 3)) == 0:
            shown = visible(target, authenticated=authenticated)
            params[f"fields[{paths[-1]}]"] = (draw(st.sampled_from(shown)),)
    if paths:
        params["include"] = tuple(dict.fromkeys(paths))
    if kind != "item":
        params.update(draw(list_parameters(resource, authenticated=authenticated)))
    return Request(path, tuple(params.items()), authenticated, kind != "item")


@st.composite
def list_parameters(draw: st.DrawFn, resource: str, *, authenticated: bool) -> dict[str, Any]:
    params: dict[str, tuple[str, ...]] = {}
    ints = st.lists(st.integers(1, 12).map(str), min_size=1, max_size=4)
    relation = draw(st.sampled_from(sorted(RELATIONS[resource])))
    menu = {
        "filter[id][gte]": st.tuples(st.integers(0, 15).map(str)),
        "filter[id][in]": ints.map(tuple),
        "filter[name][startswith]": st.tuples(st.sampled_from("abcegpr")),
        f"filter[{relation}.id][in]": ints.map(tuple),
        f"filter[{relation}.name]": st.tuples(
            st.sampled_from(KNOWN_NAMES[RELATIONS[resource][relation]])
        ),
    }
    if authenticated and resource == "users":
        menu["filter[email_address][contains]"] = st.tuples(st.sampled_from(("@", "a", "x")))
    for name in draw(st.lists(st.sampled_from(sorted(menu)), max_size=2, unique=True)):
        params[name] = draw(menu[name])
    if draw(st.booleans()):
        keys = draw(
            st.lists(
                st.sampled_from(visible(resource, authenticated=authenticated)),
                min_size=1,
                max_size=2,
                unique=True,
            )
        )
        params["sort"] = tuple(("-" if draw(st.booleans()) else "") + key for key in keys)
    if draw(st.booleans()):
        params["limit"] = (str(draw(st.sampled_from((1, 3, 7, 50, 60)))),)
    if draw(st.integers(0, 3)) == 0:
        params["count"] = ("true",)
    return params


def respell(request: Request, rng: random.Random) -> Request:
    """The same meaning spelled differently: order, repeats, spaces, explicit defaults."""
    params = dict(request.params)
    for name, items in list(params.items()):
        if name == "include" or name.startswith("fields") or name.endswith("[in]"):
            shuffled = list(items) + ([rng.choice(items)] if rng.random() < 0.5 else [])
            rng.shuffle(shuffled)
            params[name] = tuple(f" {item} " if rng.random() < 0.3 else item for item in shuffled)
    if "include" in params:
        parents = {p.strip().split(".")[0] for p in params["include"]}
        params["include"] = (*params["include"], *sorted(parents))
    if request.is_list:
        params.setdefault("limit", ("50",))
        sort = params.setdefault("sort", ("id",))
        if not any(key.lstrip("-") == "id" for key in sort):
            params["sort"] = (*sort, "id")
    pairs = list(params.items())
    rng.shuffle(pairs)
    return Request(request.path, tuple(pairs), request.authenticated, request.is_list)


def test_cached_responses_equal_uncached_ones_and_shared_entries_mean_equal_bodies(
    seeded_url: str,
) -> None:
    with asyncio.Runner() as runner:
        app = create_app(make_test_settings(seeded_url, cache_url="memory://"))
        cache = app.state.services.cache
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

        def get(request: Request, *extra: dict[str, str]) -> httpx.Response:
            headers = dict(request.headers())
            for more in extra:
                headers |= more
            return runner.run(client.get(request.url(), headers=headers))

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(first=requests(), same=st.booleans(), other=requests(), rng=st.randoms())
        def check(first: Request, same: bool, other: Request, rng: random.Random) -> None:
            second = respell(first, rng) if same else other
            runner.run(cache.tables_changed(ALL_TABLES))  # nothing cached is valid any more
            a = get(first)
            assert a.status_code == 200, (first.url(), a.text)
            assert x_cache(a) == "MISS"
            b = get(second)
            assert b.status_code == 200, (second.url(), b.text)
            if same:
                assert x_cache(b) == "HIT", (first.url(), second.url())
            if x_cache(b) == "HIT":  # it shared the first request's entry: same meaning
                assert b.content == a.content
                assert b.headers["etag"] == a.headers["etag"]
            fresh_a, fresh_b = get(first, NO_CACHE), get(second, NO_CACHE)
            assert x_cache(fresh_a) == x_cache(fresh_b) == "BYPASS"
            assert a.content == fresh_a.content, first.url()
            assert b.content == fresh_b.content, second.url()
            if x_cache(b) == "HIT":
                assert fresh_a.content == fresh_b.content

        try:
            check()
        finally:
            runner.run(client.aclose())
            runner.run(app.state.services.db.engine.dispose())


# --- 2. read-your-writes under random writes (stateful) ---------------------------------------

READ_SHAPES: tuple[tuple[str, bool], ...] = (
    ("/users?include=groups", False),
    ("/users?include=groups.permissions&fields[groups]=name&limit=500", False),
    ("/users?limit=500", True),
    ("/users?filter[groups.name][in]=admins,editors,viewers&count=true", False),
    ("/users?filter[groups.permissions.name]=read&include=groups&limit=500", False),
    ("/users?sort=-display_name,name&limit=7", False),
    ("/groups?include=users,permissions&limit=500", False),
    ("/groups?include=users&limit=500", True),
    ("/groups?include=permissions.groups&limit=500", False),
    ("/groups?filter[users.id][in]=1,2,3,4,5&count=true", False),
    ("/groups?filter[permissions.name][startswith]=p&include=permissions", False),
    ("/permissions?include=groups.users&limit=500", False),
    ("/permissions?filter[groups.users.name]=alice", False),
    ("/users/{users}?include=groups.permissions", False),
    ("/users/{users}", True),
    ("/groups/{groups}?include=users,permissions", False),
    ("/permissions/{permissions}?include=groups", False),
    ("/users/{users}/groups?include=permissions", False),
    ("/groups/{groups}/users?include=groups", False),
    ("/groups/{groups}/users", True),
    ("/groups/{groups}/permissions?count=true", False),
    ("/permissions/{permissions}/groups?include=users", False),
)
_NAMES = itertools.count(1)
IDS = st.lists(st.integers(0, 10**6), max_size=3)


def choose(ids: list[int], picks: list[int]) -> list[int]:
    return sorted({ids[p % len(ids)] for p in picks}) if ids else []


def run_freshness_machine(database_url: str, overrides: dict[str, object]) -> None:
    with asyncio.Runner() as runner:
        runner.run(seed_database(database_url, users=10, groups=4, permissions=5))
        app = create_app(make_test_settings(database_url, **overrides))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

        class Freshness(RuleBasedStateMachine):
            """Random writes through either side of each link, checked by cached reads."""

            ids: dict[str, list[int]]

            @initialize()
            def load_ids(self) -> None:
                self.ids = {}
                for name in RESOURCES:
                    response = self.call("GET", f"/{name}?fields=id&limit=500", None, NO_CACHE)
                    self.ids[name] = [row["id"] for row in response.json()["data"]]

            def call(
                self, method: str, path: str, body: object, headers: dict[str, str] | None = None
            ) -> httpx.Response:
                merged = {**AUTH, **(headers or {})}
                return runner.run(client.request(method, path, json=body, headers=merged))

            def target(self, resource: str, pick: int) -> int | None:
                ids = self.ids[resource]
                return ids[pick % len(ids)] if ids else None

            @rule(
                shapes=st.lists(st.sampled_from(READ_SHAPES), min_size=1, max_size=2),
                pick=st.integers(0, 10**6),
                anonymous=st.booleans(),
            )
            def read(self, shapes: list[tuple[str, bool]], pick: int, anonymous: bool) -> None:
                for template, needs_token in shapes:
                    values = {name: self.target(name, pick) or 999_999 for name in RESOURCES}
                    path = template.format(**values)
                    headers = {} if anonymous and not needs_token else AUTH
                    runner.run(check_fresh(client, path, headers))

            @rule(groups=IDS)
            def create_user(self, groups: list[int]) -> None:
                name = f"u{next(_NAMES)}"
                body = {
                    "name": name,
                    "email_address": f"{name}@example.test",
                    "group_ids": choose(self.ids["groups"], groups),
                }
                response = self.call("POST", "/users", body)
                assert response.status_code == 201, response.text
                self.ids["users"].append(response.json()["data"]["id"])

            @rule(users=IDS, permissions=IDS)
            def create_group(self, users: list[int], permissions: list[int]) -> None:
                body = {
                    "name": f"g{next(_NAMES)}",
                    "user_ids": choose(self.ids["users"], users),
                    "permission_ids": choose(self.ids["permissions"], permissions),
                }
                response = self.call("POST", "/groups", body)
                assert response.status_code == 201, response.text
                self.ids["groups"].append(response.json()["data"]["id"])

            @rule(groups=IDS)
            def create_permission(self, groups: list[int]) -> None:
                body = {"name": f"p{next(_NAMES)}", "group_ids": choose(self.ids["groups"], groups)}
                response = self.call("POST", "/permissions", body)
                assert response.status_code == 201, response.text
                self.ids["permissions"].append(response.json()["data"]["id"])

            @rule(
                resource=st.sampled_from(sorted(RESOURCES)),
                pick=st.integers(0, 10**6),
                rename=st.booleans(),
                retitle=st.sampled_from([None, "Zed", "alpha", ""]),
                links=st.dictionaries(st.sampled_from(("users", "groups", "permissions")), IDS),
            )
            def update(
                self,
                resource: str,
                pick: int,
                rename: bool,
                retitle: str | None,
                links: dict[str, list[int]],
            ) -> None:
                identifier = self.target(resource, pick)
                if identifier is None:
                    return
                body: dict[str, object] = {}
                if rename:
                    body["name"] = f"r{next(_NAMES)}"
                if retitle is not None:
                    text_field = "description" if resource == "permissions" else "display_name"
                    body[text_field] = retitle or None
                for other, picks in links.items():
                    if other in RELATIONS[resource]:
                        field_name = other.removesuffix("s") + "_ids"
                        body[field_name] = choose(self.ids[other], picks)
                response = self.call("PATCH", f"/{resource}/{identifier}", body)
                assert response.status_code == 200, (body, response.text)

            @rule(resource=st.sampled_from(sorted(RESOURCES)), pick=st.integers(0, 10**6))
            def delete(self, resource: str, pick: int) -> None:
                identifier = self.target(resource, pick)
                if identifier is None:
                    return
                response = self.call("DELETE", f"/{resource}/{identifier}", None)
                assert response.status_code == 204, response.text
                self.ids[resource].remove(identifier)

        try:
            run_state_machine_as_test(
                Freshness,
                settings=settings(
                    max_examples=10,
                    stateful_step_count=25,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                ),
            )
        finally:
            runner.run(client.aclose())
            runner.run(app.state.services.cache.close())
            runner.run(app.state.services.db.engine.dispose())


def test_every_cached_read_is_fresh_under_random_writes(
    database_url: str, cache_config: dict[str, object]
) -> None:
    run_freshness_machine(database_url, cache_config)


async def test_links_changed_from_either_side_invalidate_both_directions(
    seeded: str, cached_client: MakeClient, cache_config: dict[str, object]
) -> None:
    client = await cached_client(seeded, **cache_config)
    shapes = (
        "/users?include=groups.permissions&limit=500",
        "/groups?include=users,permissions&limit=500",
        "/permissions?include=groups&limit=500",
        "/users/2?include=groups",
        "/groups/2/users",
        "/permissions/2/groups",
        "/users?filter[groups.name]=admins",
        "/groups?filter[permissions.id][in]=2",
    )
    writes = (
        ("PATCH", "/users/2", {"group_ids": [1, 2]}),
        ("PATCH", "/groups/1", {"user_ids": [3]}),
        ("PATCH", "/groups/2", {"permission_ids": [2, 3]}),
        ("PATCH", "/permissions/2", {"group_ids": [1]}),
        ("PATCH", "/groups/1", {"name": "renamed"}),
        ("DELETE", "/groups/3", None),
    )
    for shape in shapes:
        await client.get(shape, headers=AUTH)
        assert x_cache(await client.get(shape, headers=AUTH)) == "HIT"
    for method, path, body in writes:
        # Each check ends on a no-cache read, which leaves a fresh entry for the next write.
        response = await client.request(method, path, json=body, headers=AUTH)
        assert response.status_code in (200, 204), response.text
        for shape in shapes:
            await check_fresh(client, shape, AUTH)


# --- 3. two instances sharing Redis -----------------------------------------------------------


async def test_a_write_through_one_instance_is_seen_at_once_by_another(
    seeded: str, cached_client: MakeClient, shared_redis: dict[str, object]
) -> None:
    writer = await cached_client(seeded, **shared_redis)
    reader = await cached_client(seeded, **shared_redis)
    paths = ("/groups?include=users", "/users/4?include=groups", "/groups/1/users")
    for path in paths:
        await reader.get(path)
        assert x_cache(await reader.get(path)) == "HIT"
        assert x_cache(await writer.get(path)) == "HIT"  # one shared entry
    response = await writer.patch("/groups/1", json={"display_name": "Changed"}, headers=AUTH)
    assert response.status_code == 200
    response = await writer.patch("/users/4", json={"group_ids": [1, 2]}, headers=AUTH)
    assert response.status_code == 200
    for path in paths:
        after = await reader.get(path)
        assert x_cache(after) == "MISS", path
        fresh = await reader.get(path, headers=NO_CACHE)
        assert after.content == fresh.content
    assert "Changed" in (await reader.get("/groups?include=users")).text
    group_ids = [
        g["id"] for g in (await reader.get("/users/4?include=groups")).json()["data"]["groups"]
    ]
    assert group_ids == [1, 2]


# --- 4. private data never reaches a caller without a token -----------------------------------


async def test_a_response_with_private_data_is_never_served_to_an_anonymous_caller(
    seeded_url: str, cached_client: MakeClient
) -> None:
    client = await cached_client(seeded_url)
    cases = (
        ("/users", "email_address"),
        ("/users/1", "email_address"),
        ("/groups?include=users", "email_address"),
        ("/groups/1/users", "email_address"),
        ("/groups/2?include=users", "email_address"),
    )
    for path, private in cases:
        with_token = await client.get(path, headers=AUTH)
        assert with_token.status_code == 200
        assert private in with_token.text
        assert x_cache(await client.get(path, headers=AUTH)) == "HIT"
        anonymous = await client.get(path)
        assert anonymous.status_code == 200
        assert private not in anonymous.text, path
        assert x_cache(anonymous) == "MISS"
        assert anonymous.headers["etag"] != with_token.headers["etag"]
        revalidated = await client.get(path, headers={"If-None-Match": with_token.headers["etag"]})
        assert revalidated.status_code == 200, path
        assert revalidated.content == anonymous.content
        assert private not in revalidated.text


async def test_private_fields_filters_and_sorts_are_keyed_by_access_class(
    seeded_url: str, cached_client: MakeClient
) -> None:
    client = await cached_client(seeded_url)
    for path in (
        "/users?fields=id,email_address",
        "/users?fields=id,name&filter[email_address][contains]=example",
        "/users?fields=id,name&sort=-email_address",
        "/groups?include=users&fields[users]=email_address",
        "/users/1?fields=email_address",
    ):
        with_token = await client.get(path, headers=AUTH)
        assert with_token.status_code == 200, (path, with_token.text)
        assert x_cache(await client.get(path, headers=AUTH)) == "HIT"
        anonymous = await client.get(path)
        assert anonymous.status_code == 403, path
        assert x_cache(anonymous) is None
        conditional = await client.get(path, headers={"If-None-Match": with_token.headers["etag"]})
        assert conditional.status_code == 403


async def test_an_invalid_token_is_401_even_for_a_cached_url(
    seeded_url: str, cached_client: MakeClient
) -> None:
    client = await cached_client(seeded_url)
    for path in ("/groups", "/users"):
        await client.get(path)
        assert x_cache(await client.get(path)) == "HIT"
        wrong = await client.get(path, headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        assert x_cache(wrong) is None


# --- 5. single-flight over HTTP ---------------------------------------------------------------


async def test_concurrent_identical_misses_run_the_database_work_once(
    seeded_url: str,
    cached_client: MakeClient,
    cache_config: dict[str, object],
    request: pytest.FixtureRequest,
) -> None:
    # The 200 requests share one event loop with the app; a long timeout keeps loop lag
    # from passing for a Redis failure, so this checks single-flight and nothing else.
    client = await cached_client(seeded_url, **cache_config, cache_timeout_seconds=5)
    assert (await client.get("/permissions")).status_code == 200  # connect the pool first
    log = record_statements(client)
    path = "/users?include=groups&limit=20&sort=-created"
    responses = await asyncio.gather(*(client.get(path) for _ in range(200)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert {x_cache(r) for r in responses} <= {"MISS", "HIT"}
    assert len(log.statements) == 2, log.statements  # 1 + k, once for all 200
    assert len(log.selects()) == 2


# --- 6. Redis outages: a throwaway server, killed, hung, restarted ----------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisProcess:
    """A private redis-server on a loopback port, to kill, pause and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        assert self.process is not None
        self.resume()
        self.process.kill()
        self.process.wait(timeout=5)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.process is not None and self.paused:
            os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.stop()


TIMEOUT, RETRY = 0.2, 0.5
BOUND = TIMEOUT * 2 + 0.5  # the longest any request may take while Redis is down or hung


def outage_settings(server: RedisProcess) -> dict[str, object]:
    return {
        "cache_url": server.url,
        "cache_prefix": f"test-{uuid4().hex}",
        "cache_timeout_seconds": TIMEOUT,
        "cache_retry_seconds": RETRY,
    }


async def timed_get(client: httpx.AsyncClient, path: str, **kw: Any) -> httpx.Response:
    started = time.monotonic()
    response = await client.get(path, **kw)
    assert time.monotonic() - started < BOUND, path
    return response


async def timed_patch(
    client: httpx.AsyncClient, path: str, body: object, *, status: int = 200
) -> httpx.Response:
    started = time.monotonic()
    response = await client.patch(path, json=body, headers=AUTH)
    assert time.monotonic() - started < BOUND, path
    assert response.status_code == status, response.text
    return response


async def refused_while_unreachable(
    client: httpx.AsyncClient, path: str, body: dict[str, str]
) -> None:
    """A write through an instance that cannot reach the shared cache is a 503 that wrote
    nothing: the other instances could not have learnt of it (SPEC, Caching)."""
    refused = await timed_patch(client, path, body, status=503)
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["retry-after"] == "1"
    stored = (await client.get(path, headers=NO_CACHE)).json()["data"]
    assert all(stored[name] != value for name, value in body.items()), stored


async def test_a_killed_redis_degrades_to_the_database_and_recovers_without_stale_data(
    seeded: str, cached_client: MakeClient, redis_process: RedisProcess
) -> None:
    client = await cached_client(seeded, **outage_settings(redis_process))
    path = "/groups/1?include=users"
    assert x_cache(await client.get(path)) == "MISS"
    assert x_cache(await client.get(path)) == "HIT"
    redis_process.kill()
    for _ in range(5):
        response = await timed_get(client, path)
        assert response.status_code == 200
        assert x_cache(response) == "BYPASS"
    await refused_while_unreachable(client, "/groups/1", {"display_name": "During the outage"})
    redis_process.start()
    assert x_cache(await timed_get(client, path)) == "BYPASS"  # still cooling down
    await asyncio.sleep(RETRY + 0.1)
    await timed_patch(client, "/groups/1", {"display_name": "After the outage"})
    recovered = await timed_get(client, path)
    assert x_cache(recovered) == "MISS"
    assert recovered.json()["data"]["display_name"] == "After the outage"
    again = await client.get(path)
    assert (x_cache(again), again.content) == ("HIT", recovered.content)


async def test_a_hung_redis_never_hangs_a_request_and_stale_entries_die_with_the_epoch(
    seeded: str, cached_client: MakeClient, redis_process: RedisProcess
) -> None:
    client = await cached_client(seeded, **outage_settings(redis_process))
    paths = ("/users?include=groups", "/groups/2/users", "/users/3")
    for path in paths:
        await client.get(path)
        assert x_cache(await client.get(path)) == "HIT"
    redis_process.pause()
    for path in paths * 2:
        response = await timed_get(client, path)
        assert (response.status_code, x_cache(response)) == (200, "BYPASS")
    await refused_while_unreachable(client, "/users/3", {"display_name": "Hung"})
    redis_process.resume()
    await asyncio.sleep(RETRY + 0.1)
    await timed_patch(client, "/users/3", {"display_name": "Hung", "group_ids": [2]})
    for path in paths:
        after = await timed_get(client, path)
        assert x_cache(after) == "MISS", path
        fresh = await client.get(path, headers=NO_CACHE)
        assert after.content == fresh.content, path
    assert (await client.get("/users/3")).json()["data"]["display_name"] == "Hung"


async def test_after_a_hang_no_instance_serves_an_entry_older_than_a_write(
    seeded: str, cached_client: MakeClient, redis_process: RedisProcess
) -> None:
    writer = await cached_client(seeded, **outage_settings(redis_process))
    settings_b = outage_settings(redis_process) | {
        "cache_prefix": app_of(writer).state.services.settings.cache_prefix
    }
    reader = await cached_client(seeded, **settings_b)
    path = "/groups/1"
    await reader.get(path)
    assert x_cache(await reader.get(path)) == "HIT"
    redis_process.pause()
    assert x_cache(await timed_get(writer, path)) == "BYPASS"  # the writer's circuit opens
    await refused_while_unreachable(writer, "/groups/1", {"display_name": "Written while hung"})
    redis_process.resume()
    await asyncio.sleep(RETRY + 0.1)
    await timed_patch(writer, "/groups/1", {"display_name": "Written after the hang"})
    after = await reader.get(path)  # the reader never saw the outage
    assert after.json()["data"]["display_name"] == "Written after the hang", x_cache(after)


async def test_a_write_that_cannot_reach_redis_first_is_rolled_back(
    seeded: str, cached_client: MakeClient, redis_process: RedisProcess
) -> None:
    """The circuit is still closed (no request has failed yet) when Redis dies: the write's
    own bump before COMMIT fails, and the transaction is rolled back."""
    client = await cached_client(seeded, **outage_settings(redis_process))
    path = "/groups/2"
    assert x_cache(await client.get(path)) == "MISS"
    backend = app_of(client).state.services.cache.backend
    redis_process.kill()
    assert backend.circuit.closed
    await refused_while_unreachable(client, path, {"display_name": "Never written"})
    assert not backend.circuit.closed


async def test_an_open_circuit_recovers_by_itself_and_requests_never_wait_for_it(
    redis_process: RedisProcess,
) -> None:
    backend = RedisBackend(
        redis_process.url, prefix=f"test-{uuid4().hex}", timeout=TIMEOUT, retry_seconds=0.1,
        ttl_seconds=60,
    )  # fmt: skip
    try:
        backend.circuit.trip(ConnectionError("an earlier outage"))
        redis_process.pause()
        started = time.monotonic()
        for _ in range(5):  # while open, lookups fail at once: recovery runs in the background
            with pytest.raises(CacheUnavailable):
                await backend.lookup("k", ("auth_user",))
        assert time.monotonic() - started < TIMEOUT
        await asyncio.sleep(0.3)
        assert not backend.circuit.closed  # Redis still hangs
        redis_process.resume()
        await asyncio.sleep(0.3 + 2 * TIMEOUT)
        assert backend.circuit.closed  # closed with no request in between
        versions, _ = await backend.lookup("k", ("auth_user",))
        assert versions[0] >= 1  # recovery bumped the epoch
    finally:
        await backend.close()


# --- 7. headers, no-cache, 304 ----------------------------------------------------------------


async def test_no_cache_bypasses_and_refreshes_the_entry(
    seeded: str, cached_client: MakeClient, cache_config: dict[str, object]
) -> None:
    client = await cached_client(seeded, **cache_config)
    path = "/permissions?include=groups"
    first = await client.get(path)
    assert x_cache(first) == "MISS"
    # A change behind the service's back: the cache cannot know, so it serves the old body...
    direct = create_async_engine(seeded)
    try:
        async with direct.begin() as connection:
            await connection.execute(text("UPDATE auth_permission SET description = 'edited'"))
    finally:
        await direct.dispose()
    stale = await client.get(path)
    assert (x_cache(stale), stale.content) == ("HIT", first.content)
    # ...until a client asks for a fresh copy, which also refreshes the entry.
    log = record_statements(client)
    refreshed = await client.get(path, headers=NO_CACHE)
    assert x_cache(refreshed) == "BYPASS"
    assert len(log.selects()) == 2
    assert refreshed.json()["data"][0]["description"] == "edited"
    log.clear()
    after = await client.get(path)
    assert (x_cache(after), after.content) == ("HIT", refreshed.content)
    assert after.headers["etag"] == refreshed.headers["etag"] != first.headers["etag"]
    assert log.statements == []


async def test_every_200_carries_the_cache_headers(
    seeded_url: str, cached_client: MakeClient
) -> None:
    client = await cached_client(seeded_url)
    path = "/groups?include=permissions"
    for headers, outcome in (({}, "MISS"), ({}, "HIT"), (NO_CACHE, "BYPASS")):
        response = await client.get(path, headers=headers)
        assert response.status_code == 200
        assert x_cache(response) == outcome
        assert response.headers["cache-control"] == "private, no-cache"
        assert response.headers["vary"] == "Authorization"
        assert response.headers["etag"].startswith('"')
        assert response.headers["content-type"] == "application/json"


async def test_if_none_match_gives_304_without_a_body_or_sql(
    seeded: str, cached_client: MakeClient
) -> None:
    client = await cached_client(seeded)
    path = "/users?include=groups&limit=5"
    first = await client.get(path)
    etag = first.headers["etag"]
    log = record_statements(client)
    for tag in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        response = await client.get(path, headers={"If-None-Match": tag})
        assert response.status_code == 304, tag
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert x_cache(response) == "HIT"
        assert response.headers["cache-control"] == "private, no-cache"
        assert "content-type" not in response.headers
    assert log.statements == []
    other = await client.get(path, headers={"If-None-Match": '"nope"'})
    assert (other.status_code, other.content) == (200, first.content)
    # A write elsewhere in the table: a miss, the same body, so still 304.
    patched = await client.patch("/users/20", json={"display_name": "Last"}, headers=AUTH)
    assert patched.status_code == 200
    after = await client.get(path, headers={"If-None-Match": etag})
    assert (after.status_code, x_cache(after), after.content) == (304, "MISS", b"")
    # A write that changes the body: 200 with the new one.
    await client.patch("/users/1", json={"display_name": "Changed"}, headers=AUTH)
    changed = await client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


# --- 8, 9. CACHE_SKIP and CACHE_URL=none ------------------------------------------------------


async def test_skipped_classes_always_bypass_while_others_hit(
    seeded_url: str, cached_client: MakeClient
) -> None:
    client = await cached_client(seeded_url, cache_skip=frozenset({"count"}))
    for _ in range(3):
        counted = await client.get("/users?count=true")
        assert counted.status_code == 200
        assert x_cache(counted) == "BYPASS"
        assert "total" in counted.json()["meta"]
        related = await client.get("/groups/1/users?count=true")
        assert x_cache(related) == "BYPASS"
    await client.get("/users")
    assert x_cache(await client.get("/users")) == "HIT"
    etag = counted.headers["etag"]
    conditional = await client.get("/users?count=true", headers={"If-None-Match": etag})
    assert (conditional.status_code, x_cache(conditional)) == (304, "BYPASS")


async def test_with_caching_off_every_read_bypasses_but_etags_still_work(
    seeded: str, cached_client: MakeClient
) -> None:
    client = await cached_client(seeded, cache_url="none")
    log = record_statements(client)
    path = "/groups?include=users"
    first = await client.get(path)
    assert x_cache(first) == "BYPASS"
    second = await client.get(path)
    assert x_cache(second) == "BYPASS"
    assert second.headers["etag"] == first.headers["etag"]
    assert len(log.selects()) == 4
    conditional = await client.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert (conditional.status_code, conditional.content) == (304, b"")
    assert x_cache(conditional) == "BYPASS"
    assert conditional.headers["vary"] == "Authorization"
    write = await client.patch("/groups/1", json={"name": "renamed"}, headers=AUTH)
    assert write.status_code == 200
    assert "renamed" in (await client.get(path)).text


async def test_concurrent_lookups_share_mgets_and_each_gets_its_own_answer(
    redis_process: RedisProcess,
) -> None:
    backend = RedisBackend(
        redis_process.url, prefix=f"test-{uuid4().hex}", timeout=1.0, retry_seconds=1.0,
        ttl_seconds=60,
    )  # fmt: skip
    admin = redis.Redis.from_url(redis_process.url, socket_timeout=2)
    try:
        versions, _ = await backend.lookup("warm", ("auth_user",))  # sets the epoch
        for n in range(4):
            await backend.store(f"page-{n}", Entry.of(f'{{"n":{n}}}'.encode(), versions))
        await backend.bump(frozenset({"auth_group"}))
        admin.config_resetstat()
        keys = [f"page-{n % 5}" for n in range(40)]  # page-4 was never stored
        found = await asyncio.gather(*(backend.lookup(key, ("auth_user",)) for key in keys))
        mgets = int(admin.info("commandstats")["cmdstat_mget"]["calls"])
    finally:
        admin.close()
        await backend.close()
    assert 1 <= mgets < len(keys)
    for key, (current, entry) in zip(keys, found, strict=True):
        assert current == versions
        if key == "page-4":
            assert entry is None
        else:
            assert entry is not None
            assert entry.body == f'{{"n":{key[-1]}}}'.encode()
