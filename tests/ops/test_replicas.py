"""Read replicas on a real streaming pair: where reads go, read-your-writes while the replica
lags, and reads that survive either server going away (SPEC, Scaling out).

Two instances (apps in this process) share one Redis prefix and one throwaway primary with
its hot standby; lag is made by pausing the standby's replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)
from prometheus_client import REGISTRY

from service.app import ServiceApp, create_app
from service.db import database_name
from service.settings import Settings
from tests.conftest import TOKEN, app_of, make_test_settings
from tests.ops.conftest import migrate_and_seed
from tests.ops.replication import StreamingPair, streaming_pair
from tests.ops.servers import REDIS_URL, pgbouncer, redis_prefix
from tests.proof.faultproxy import FaultProxy

pytestmark = pytest.mark.slow
T = TypeVar("T")

DATABASE = "svc_replicas"
NO_CACHE = {"Cache-Control": "no-cache"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Instance:
    app: ServiceApp
    client: httpx.AsyncClient


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Instance]:
    """An app on `settings` with its lifespan running, and an in-process client of it."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        yield Instance(app, client)


@pytest.fixture(scope="module")
async def pair() -> AsyncIterator[StreamingPair]:
    async with streaming_pair() as made:
        await made.create_database(DATABASE)
        await migrate_and_seed(made.primary.url(DATABASE))
        await made.wait_caught_up()
        yield made


@pytest.fixture(scope="module")
def cache_prefix() -> Iterator[str]:
    """A Redis key prefix of this module's own; its keys are deleted at the end."""
    with redis_prefix("svc_replicas") as prefix:
        yield prefix


@pytest.fixture(scope="module")
async def instances(pair: StreamingPair, cache_prefix: str) -> AsyncIterator[list[Instance]]:
    made: list[Instance] = []
    stack = contextlib.AsyncExitStack()
    for _ in range(2):
        settings = make_test_settings(
            pair.primary.url(DATABASE),
            database_replica_urls=(pair.replica.url(DATABASE),),
            cache_url=REDIS_URL,
            cache_prefix=cache_prefix,
            replica_poll_seconds=0.05,
            pool_timeout=2.0,
        )
        made.append(await stack.enter_async_context(opened(settings)))
    async with stack:
        yield made


def reads_on(name: str) -> float:
    return REGISTRY.get_sample_value("db_reads_total", {"database": name}) or 0.0


async def eventually(check: Callable[[], Awaitable[bool]], *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.05)


async def replica_serving(instances: list[Instance]) -> None:
    """Every instance's poll has found the replica up."""

    async def up() -> bool:
        return all(i.app.state.services.db.replicas.replicas[0].up for i in instances)

    await eventually(up, seconds=10, what="the replica to be polled up")


async def test_reads_go_to_a_caught_up_replica_with_1_plus_k_statements(
    pair: StreamingPair, instances: list[Instance]
) -> None:
    await replica_serving(instances)
    replica = database_name(pair.replica.url(DATABASE))
    for instance in instances:
        before = (reads_on(replica), reads_on("primary"))
        response = await instance.client.get(
            "/groups?fields=name&include=users&limit[users]=2&limit=3", headers=NO_CACHE
        )
        assert response.status_code == 200, response.text
        assert 'desc="2 queries"' in response.headers["server-timing"]
        assert (reads_on(replica), reads_on("primary")) == (before[0] + 1, before[1])
    # A token holder sees where a read ran, and its plan comes from the same replica.
    explained = await instances[0].client.get(
        "/groups?fields=name&include=users&limit=3&explain=plan", headers=AUTH
    )
    assert explained.status_code == 200, explained.text
    report = explained.json()["explain"]
    assert report["database"] == replica
    assert report["count"] == 2
    assert all(statement["plan"][0]["Plan"] for statement in report["statements"])
    ready = await instances[0].client.get("/readyz")
    assert ready.status_code == 200
    databases = ready.json()["databases"]
    assert databases["primary"]["state"] == "up"
    assert databases[replica]["state"] == "up"
    assert databases[replica]["lag_bytes"] >= 0


async def test_a_write_is_read_back_everywhere_while_the_replica_lags(
    pair: StreamingPair, instances: list[Instance]
) -> None:
    """Replay paused: what a write changed is read on the primary, through either instance,
    cached or not; what it did not change still comes from the replica."""
    await replica_serving(instances)
    replica = database_name(pair.replica.url(DATABASE))
    name = f"lag{uuid.uuid4().hex[:8]}"
    listed = f"/users?fields=name,display_name&filter[name]={name}"
    for instance in instances:  # cached, before the write: an empty list under each
        assert (await instance.client.get(listed)).json()["data"] == []
    await pair.pause_replay()
    try:
        created = await instances[0].client.post(
            "/users?fields=id",
            json={"name": name, "email_address": f"{name}@example.com", "group_ids": [1]},
            headers=AUTH,
        )
        assert created.status_code == 201, created.text
        identifier = created.json()["data"]["id"]
        for instance in instances:
            for headers in ({}, NO_CACHE):
                found = await instance.client.get(listed, headers=headers)
                assert found.json()["data"] == [{"name": name, "display_name": None}]
                item = await instance.client.get(f"/users/{identifier}?fields=name")
                assert item.status_code == 200, item.text
                group = await instance.client.get(
                    "/groups/1?fields=id&count[users]=true", headers=headers
                )
                assert group.json()["data"]["users_count"] >= 1
        patched = await instances[1].client.patch(
            f"/users/{identifier}?fields=display_name",
            json={"display_name": "after"},
            headers=AUTH,
        )
        assert patched.status_code == 200, patched.text
        for instance in instances:
            found = await instance.client.get(listed)
            assert found.json()["data"] == [{"name": name, "display_name": "after"}]
        before = reads_on(replica)
        untouched = await instances[0].client.get("/permissions?fields=name", headers=NO_CACHE)
        assert untouched.status_code == 200
        assert reads_on(replica) == before + 1  # a table no write changed: the replica's
    finally:
        await pair.resume_replay()
    await pair.wait_caught_up()
    await asyncio.sleep(0.2)  # two polls
    before = reads_on(replica)
    again = await instances[1].client.get(listed, headers=NO_CACHE)
    assert again.json()["data"] == [{"name": name, "display_name": "after"}]
    assert reads_on(replica) == before + 1  # caught up: the replica serves it again


async def test_reads_go_on_while_the_replica_is_down_and_it_rejoins(
    pair: StreamingPair, instances: list[Instance]
) -> None:
    await replica_serving(instances)
    replica = database_name(pair.replica.url(DATABASE))
    await pair.stop_replica("immediate")
    try:
        for attempt in range(20):
            response = await instances[attempt % 2].client.get(
                f"/users?fields=id&limit={attempt + 1}", headers=NO_CACHE
            )
            assert response.status_code == 200, response.text
        ready = (await instances[0].client.get("/readyz")).json()
        assert ready["databases"][replica]["state"] == "down"
        assert ready["databases"]["primary"]["state"] == "up"
    finally:
        await pair.start_replica()
    await replica_serving(instances)
    before = reads_on(replica)
    assert (await instances[0].client.get("/users?fields=id", headers=NO_CACHE)).is_success
    assert reads_on(replica) == before + 1


async def test_reads_go_on_while_the_primary_is_down_and_writes_are_503(
    pair: StreamingPair, instances: list[Instance]
) -> None:
    await replica_serving(instances)
    await pair.wait_caught_up()
    await pair.stop_primary("immediate")
    try:
        for instance in instances:
            for path in ("/users?fields=name&limit=3", "/groups/1?include=users&limit[users]=1"):
                response = await instance.client.get(path, headers=NO_CACHE)
                assert response.status_code == 200, response.text
            refused = await instance.client.post(
                "/permissions", json={"name": f"p{uuid.uuid4().hex[:6]}"}, headers=AUTH
            )
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"]
        ready = await instances[0].client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["databases"]["primary"]["state"] == "down"
    finally:
        await pair.start_primary()

    async def writes() -> bool:
        response = await instances[0].client.post(
            "/permissions", json={"name": f"p{uuid.uuid4().hex[:6]}"}, headers=AUTH
        )
        return response.status_code == 201

    await eventually(writes, seconds=15, what="writes to resume after the primary restarted")


async def test_a_writer_cut_off_after_it_committed_leaves_no_stale_read_behind(
    pair: StreamingPair, cache_prefix: str
) -> None:
    """The partition rule with replicas: instance A loses Redis between marking its tables
    pending and publishing its commit's WAL position. B, on the same Redis, must not route a
    read of those tables to the replica (replay paused, so it lacks the write): while the
    mark lasts the primary serves them uncached, and once it has expired the replica is too
    far behind (REPLICA_MAX_LAG_SECONDS) to serve them."""
    await pair.wait_caught_up()
    window = {"request_timeout_seconds": 1.0, "statement_timeout_ms": 500}
    common = {
        "database_replica_urls": (pair.replica.url(DATABASE),),
        "cache_prefix": f"{cache_prefix}_cut",
        "replica_poll_seconds": 0.05,
        "replica_max_lag_seconds": 1.0,
        "cache_timeout_seconds": 0.1,
        **window,
    }
    path = "/users/3?fields=display_name"
    async with FaultProxy("127.0.0.1", 6379) as proxy, contextlib.AsyncExitStack() as stack:
        clients = []
        for cache_url in (f"redis://127.0.0.1:{proxy.port}/0", REDIS_URL):
            settings = make_test_settings(pair.primary.url(DATABASE), cache_url=cache_url, **common)
            instance = await stack.enter_async_context(opened(settings))
            clients.append(instance.client)
            await replica_serving([instance])
        a, b = clients
        assert (await b.get(path)).headers["x-cache"] in {"MISS", "HIT"}
        assert (await b.get(path)).headers["x-cache"] == "HIT"
        cache = app_of(a).state.services.cache
        changing = cache.tables_changing

        async def then_cut(tables: frozenset[str]) -> None:
            await changing(tables)  # the pending mark and the version bump went through
            proxy.cut()  # and now A cannot publish where its commit left the WAL

        cache.tables_changing = then_cut
        await pair.pause_replay()
        try:
            name = f"cut {uuid.uuid4().hex[:6]}"
            patched = await a.patch(path, json={"display_name": name}, headers=AUTH)
            assert patched.status_code == 200, patched.text  # it committed: answered so
            seen = []
            finish = time.monotonic() + 2.5  # past the mark's expiry (1 s) and the lag bound
            while time.monotonic() < finish:
                for headers in ({}, NO_CACHE):
                    response = await b.get(path, headers=headers)
                    seen.append((response.headers["x-cache"], response.json()["data"]))
                await asyncio.sleep(0.1)
        finally:
            await pair.resume_replay()
            proxy.restore()
        stale = [sample for sample in seen if sample[1] != {"display_name": name}]
        assert stale == [], stale[:5]
        assert len(seen) > 20


def lagging(
    run: Callable[[Awaitable[T]], T], clients: list[httpx.AsyncClient], pair: StreamingPair
) -> type[RuleBasedStateMachine]:
    """Random writes and reads through two instances, replay paused and resumed at random:
    every read equals the model (what the last acknowledged write set)."""

    class Lagging(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model: dict[int, str | None] = {}

        @initialize()
        def start(self) -> None:
            for user in USERS:
                value = f"start {uuid.uuid4().hex[:6]}"
                self.write_through(0, user, value)

        def write_through(self, instance: int, user: int, value: str) -> None:
            response = run(
                clients[instance].patch(
                    f"/users/{user}?fields=id", json={"display_name": value}, headers=AUTH
                )
            )
            assert response.status_code == 200, response.text
            self.model[user] = value

        @rule(
            instance=st.integers(0, 1), user=st.sampled_from(USERS), value=st.text("ab", max_size=6)
        )
        def write(self, instance: int, user: int, value: str) -> None:
            self.write_through(instance, user, value)

        @rule(instance=st.integers(0, 1), user=st.sampled_from(USERS), cached=st.booleans())
        def read(self, instance: int, user: int, cached: bool) -> None:
            other = USERS[(USERS.index(user) + 1) % len(USERS)]
            response = run(
                clients[instance].get(
                    f"/users?fields=id,display_name&filter[id][in]={user},{other}",
                    headers={} if cached else NO_CACHE,
                )
            )
            found = {item["id"]: item["display_name"] for item in response.json()["data"]}
            assert found[user] == self.model[user], (user, found, response.headers["x-cache"])

        @rule(paused=st.booleans())
        def replay(self, paused: bool) -> None:
            run(pair.pause_replay() if paused else pair.resume_replay())

        def teardown(self) -> None:
            run(pair.resume_replay())

    return Lagging


USERS = [5, 6, 7]


async def test_random_writes_and_reads_across_instances_with_random_lag_are_never_stale(
    pair: StreamingPair, instances: list[Instance]
) -> None:
    await replica_serving(instances)
    loop = asyncio.get_running_loop()

    def run(awaitable: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), loop).result(timeout=30)

    machine = lagging(run, [i.client for i in instances], pair)
    before = reads_on(database_name(pair.replica.url(DATABASE)))
    config = settings(
        max_examples=8,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    await asyncio.to_thread(run_state_machine_as_test, machine, settings=config)
    # The replica served some of it: the test did not just read the primary throughout.
    assert reads_on(database_name(pair.replica.url(DATABASE))) > before


async def test_pgbouncer_in_transaction_mode_before_the_primary_and_the_replica(
    pair: StreamingPair, cache_prefix: str
) -> None:
    """PGBOUNCER=true, one PgBouncer (transaction mode) in front of each server: the polls,
    the routed reads, the writes and their WAL positions all work through it."""
    await pair.wait_caught_up()
    with (
        pgbouncer(DATABASE, upstream_port=pair.primary.port) as primary,
        pgbouncer(DATABASE, upstream_port=pair.replica.port) as replica,
    ):
        settings = make_test_settings(
            primary.url(DATABASE),
            database_replica_urls=(replica.url(DATABASE),),
            pgbouncer=True,
            cache_url=REDIS_URL,
            cache_prefix=f"{cache_prefix}_bouncer",
            replica_poll_seconds=0.05,
        )
        async with opened(settings) as instance:
            client = instance.client
            await replica_serving([instance])
            name = database_name(replica.url(DATABASE))
            before = reads_on(name)
            for _ in range(5):
                response = await client.get("/users?fields=id&include=groups", headers=NO_CACHE)
                assert response.status_code == 200, response.text
            assert reads_on(name) == before + 5
            await pair.pause_replay()
            try:
                patched = await client.patch(
                    "/users/4?fields=display_name", json={"display_name": "bounced"}, headers=AUTH
                )
                assert patched.status_code == 200, patched.text
                read = await client.get("/users/4?fields=display_name", headers=NO_CACHE)
                assert read.json()["data"] == {"display_name": "bounced"}
            finally:
                await pair.resume_replay()
            ready = (await client.get("/readyz")).json()
            assert ready["databases"][name]["state"] == "up"


def test_each_replica_has_a_pool_of_its_own_size() -> None:
    settings = make_test_settings(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/primary",
        database_replica_urls=("postgresql+asyncpg://postgres@127.0.0.1:5432/replica",),
        pool_size=7,
        replica_pool_size=3,
        replica_max_overflow=2,
    )
    db = create_app(settings).state.services.db
    assert db.engine.pool.size() == 7
    (replica,) = db.replicas.replicas
    assert (replica.engine.pool.size(), replica.engine.pool._max_overflow) == (3, 2)
    assert replica.name == "127.0.0.1:5432/replica"


@pytest.mark.parametrize("cache_url", ["memory://", "none"])
async def test_one_process_routes_by_its_own_writes_without_redis(
    pair: StreamingPair, cache_url: str
) -> None:
    """CACHE_URL=memory:// or none: the positions live in the process, and its own writes
    are read back fresh while the replica lags; other tables still use the replica."""
    settings = make_test_settings(
        pair.primary.url(DATABASE),
        database_replica_urls=(pair.replica.url(DATABASE),),
        cache_url=cache_url,
        replica_poll_seconds=0.05,
    )
    async with opened(settings) as instance:
        client = instance.client
        await replica_serving([instance])
        replica = database_name(pair.replica.url(DATABASE))
        path = "/users/8?fields=display_name"
        assert (await client.get(path)).status_code == 200  # cached (memory://) before
        await pair.pause_replay()
        try:
            value = f"local {uuid.uuid4().hex[:6]}"
            patched = await client.patch(path, json={"display_name": value}, headers=AUTH)
            assert patched.status_code == 200, patched.text
            for headers in ({}, NO_CACHE):
                assert (await client.get(path, headers=headers)).json()["data"] == {
                    "display_name": value
                }
            before = reads_on(replica)
            untouched = await client.get("/permissions?fields=name", headers=NO_CACHE)
            assert untouched.status_code == 200
            assert reads_on(replica) == before + 1
        finally:
            await pair.resume_replay()
