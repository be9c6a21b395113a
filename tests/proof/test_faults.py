"""Faults injected between the service and its backends with a TCP proxy: cut, stall, restore.

PostgreSQL behind the proxy: while cut, misses are quick 503s with Retry-After, cache hits
keep coming from memory and /readyz is 503; while stalled, nothing outlives the request's
deadline; once restored, the service recovers by itself. Redis behind the proxy: while cut or
stalled, reads keep working as BYPASS within the breaker's bound, never a 5xx, and once it
is back no entry from before a write made during the outage is served again.

An instance cut off from Redis (while the others still reach it) could not tell them about
its writes, so it refuses them with a 503 before writing (docs/caching.md, "Partitions").

Every figure measured is printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import orjson
import pytest
import redis.asyncio as redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import POSTGRES_ADMIN_DSN, TOKEN, _pg_url, app_of
from tests.proof.faultproxy import FaultProxy

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]

LOOPBACK = "127.0.0.1"
PG_PORT = 5432
REDIS_PORT = 6379
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_CACHE = {"Cache-Control": "no-cache"}

POOL_TIMEOUT = 1.0
STATEMENT_TIMEOUT = 1.0
DEADLINE = 3.0
SLACK = 0.5
MISS_BOUND = POOL_TIMEOUT + STATEMENT_TIMEOUT + SLACK  # a cut database answers at least this fast
DEADLINE_BOUND = DEADLINE + SLACK  # nothing outlives the request's deadline
RECOVERY_BOUND = 3.0  # first successful miss after the proxy restores

CACHE_TIMEOUT = 0.2
CACHE_THRESHOLD = 3
CACHE_RETRY = 0.5
BYPASS_BOUND = CACHE_TIMEOUT * CACHE_THRESHOLD + SLACK
CACHE_RECOVERY_BOUND = 3.0

HIT_PATH = "/users?fields=id,name,display_name&include=groups&limit=10"
MAX_ATTEMPTS = 200  # every polling loop is bounded in count ...
MAX_WAIT = 15.0  # ... and in time

PG_SETTINGS: dict[str, object] = {
    "cache_url": "memory://",
    "pool_size": 4,
    "max_overflow": 0,
    "pool_timeout": POOL_TIMEOUT,
    "statement_timeout_ms": int(STATEMENT_TIMEOUT * 1000),
    "request_timeout_seconds": DEADLINE,
    "pool_pre_ping": True,
}


@dataclass(frozen=True, slots=True)
class Timed:
    path: str
    status: int
    seconds: float
    cache: str | None
    retry_after: str | None
    content_type: str
    body: bytes


async def timed_get(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> Timed:
    started = time.perf_counter()
    response = await client.get(path, headers=headers)
    return Timed(
        path,
        response.status_code,
        time.perf_counter() - started,
        response.headers.get("x-cache"),
        response.headers.get("retry-after"),
        response.headers.get("content-type", ""),
        response.content,
    )


class Misses:
    """Paths no earlier request asked for: each one a cache miss that needs the database."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)

    def path(self) -> str:
        return f"/users?fields=id,name&filter[id][gte]={next(self._numbers)}&limit=5"


def figures(label: str, samples: list[Timed]) -> str:
    seconds = sorted(s.seconds for s in samples)
    statuses = sorted({s.status for s in samples})
    return (
        f"{label}: n={len(samples)} statuses={statuses} "
        f"min={seconds[0]:.3f}s max={seconds[-1]:.3f}s median={seconds[len(seconds) // 2]:.3f}s"
    )


def assert_unavailable(samples: list[Timed], *, bound: float) -> None:
    """Every sample is a problem+json 503 with Retry-After, answered within `bound`."""
    for sample in samples:
        assert sample.status == 503, (sample.path, sample.status, sample.body[:300])
        assert sample.retry_after is not None, sample
        assert sample.content_type == "application/problem+json", sample
        assert sample.seconds < bound, (sample.path, sample.seconds, bound)


async def first_success(client: httpx.AsyncClient, misses: Misses) -> tuple[float, int]:
    """Misses one after another until one is a 200: (seconds taken, failures before it)."""
    started = time.perf_counter()
    for attempt in range(MAX_ATTEMPTS):
        sample = await timed_get(client, misses.path())
        if sample.status == 200:
            return time.perf_counter() - started, attempt
        assert sample.status == 503, (sample.status, sample.body[:300])
        if time.perf_counter() - started > MAX_WAIT:
            break
        await asyncio.sleep(0.05)
    pytest.fail(f"no miss succeeded within {MAX_WAIT} s of the restore")


def via_proxy(proxy: FaultProxy, database: str) -> str:
    return f"postgresql+asyncpg://postgres@{LOOPBACK}:{proxy.port}/{database}"


async def warm_up(client: httpx.AsyncClient, misses: Misses) -> None:
    first = await timed_get(client, HIT_PATH)
    assert (first.status, first.cache) == (200, "MISS"), first
    second = await timed_get(client, HIT_PATH)
    assert (second.status, second.cache) == (200, "HIT"), second
    assert (await timed_get(client, "/readyz")).status == 200
    assert (await timed_get(client, misses.path())).status == 200


async def during_database_fault(
    client: httpx.AsyncClient, misses: Misses, *, bound: float
) -> dict[str, list[Timed]]:
    """Misses one by one and in a burst, cache hits, /readyz and a write, while the fault lasts."""
    sequential = [await timed_get(client, misses.path()) for _ in range(2)]
    burst = list(await asyncio.gather(*(timed_get(client, misses.path()) for _ in range(8))))
    hits = [await timed_get(client, HIT_PATH) for _ in range(3)]
    ready = [await timed_get(client, "/readyz")]
    write = [await timed_post_user(client, UNWRITTEN)]
    assert_unavailable(sequential + burst, bound=bound)
    assert_unavailable(ready + write, bound=bound)
    for hit in hits:
        assert (hit.status, hit.cache) == (200, "HIT"), hit
        assert hit.seconds < SLACK, hit
    return {
        "sequential misses": sequential,
        "burst of misses": burst,
        "hits": hits,
        "ready": ready,
        "write": write,
    }


UNWRITTEN = "proof_unwritten"  # the user a write during the fault tried to create


async def timed_post_user(client: httpx.AsyncClient, name: str) -> Timed:
    started = time.perf_counter()
    body = {"name": name, "email_address": f"{name}@proof.example"}
    response = await client.post("/users", json=body, headers=AUTH)
    return Timed(
        "POST /users",
        response.status_code,
        time.perf_counter() - started,
        None,
        response.headers.get("retry-after"),
        response.headers.get("content-type", ""),
        response.content,
    )


async def after_database_restore(
    client: httpx.AsyncClient, misses: Misses, proxy: FaultProxy
) -> tuple[float, int, list[Timed]]:
    proxy.restore()
    recovery, failures = await first_success(client, misses)
    after = [await timed_get(client, misses.path()) for _ in range(10)]
    after += list(await asyncio.gather(*(timed_get(client, misses.path()) for _ in range(8))))
    after.append(await timed_get(client, "/readyz"))
    assert [s for s in after if s.status != 200] == [], "the service did not recover by itself"
    assert recovery < RECOVERY_BOUND, recovery
    # The write answered 503 did not happen, not even late (stalled bytes reach the server).
    await asyncio.sleep(0.2)
    written = await timed_get(client, f"/users?filter[name]={UNWRITTEN}&fields=id", NO_CACHE)
    assert written.status == 200
    assert orjson.loads(written.body)["data"] == [], "a write answered 503 was stored"
    return recovery, failures, after


@pytest.mark.slow
async def test_cut_database_fails_fast_serves_hits_and_recovers(
    make_client: MakeClient, proof_db: str
) -> None:
    misses = Misses()
    async with FaultProxy(LOOPBACK, PG_PORT) as proxy:
        client = await make_client(via_proxy(proxy, proof_db), **PG_SETTINGS)
        await warm_up(client, misses)
        proxy.cut()
        during = await during_database_fault(client, misses, bound=MISS_BOUND)
        recovery, failures, after = await after_database_restore(client, misses, proxy)
        print(f"\n[pg cut] proxy: accepted={proxy.accepted} refused={proxy.refused}")
    for label, samples in during.items():
        print(f"[pg cut] {figures(label, samples)} (bound {MISS_BOUND:.1f}s)")
    print(f"[pg cut] recovery: first 200 miss {recovery:.3f}s after restore, {failures} 503 before")
    print(f"[pg cut] {figures('after restore', after)}")


@pytest.mark.slow
async def test_stalled_database_never_outlives_the_deadline_and_recovers(
    make_client: MakeClient, proof_db: str
) -> None:
    misses = Misses()
    async with FaultProxy(LOOPBACK, PG_PORT) as proxy:
        client = await make_client(via_proxy(proxy, proof_db), **PG_SETTINGS)
        await warm_up(client, misses)
        proxy.blackhole()
        during = await during_database_fault(client, misses, bound=DEADLINE_BOUND)
        recovery, failures, after = await after_database_restore(client, misses, proxy)
        print(f"\n[pg blackhole] proxy: accepted={proxy.accepted} active={proxy.active}")
    for label, samples in during.items():
        print(f"[pg blackhole] {figures(label, samples)} (bound {DEADLINE_BOUND:.1f}s)")
    print(
        f"[pg blackhole] recovery: first 200 miss {recovery:.3f}s after restore, "
        f"{failures} 503 before"
    )
    print(f"[pg blackhole] {figures('after restore', after)}")


@pytest.mark.slow
@pytest.mark.parametrize("request_kind", ["no_cache_read", "write"])
async def test_stalled_database_bypass_reads_and_writes_keep_the_deadline(
    make_client: MakeClient, proof_db: str, request_kind: str
) -> None:
    misses = Misses()
    async with FaultProxy(LOOPBACK, PG_PORT) as proxy:
        client = await make_client(via_proxy(proxy, proof_db), **PG_SETTINGS)
        await warm_up(client, misses)
        proxy.blackhole()
        if request_kind == "write":
            sample = await timed_post_user(client, UNWRITTEN)
        else:
            sample = await timed_get(client, misses.path(), NO_CACHE)
        proxy.restore()
    print(f"\n[pg blackhole] {request_kind}: {sample.status} after {sample.seconds:.3f}s")
    assert_unavailable([sample], bound=DEADLINE_BOUND)


# --- Redis behind the proxy -----------------------------------------------------------------


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of our own on the local Redis; every key under it deleted after."""
    prefix = f"svc_proof_{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis(host=LOOPBACK, port=REDIS_PORT, socket_timeout=2)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def redis_settings(proxy: FaultProxy, prefix: str) -> dict[str, object]:
    return {
        "cache_url": f"redis://{LOOPBACK}:{proxy.port}/0",
        "cache_prefix": prefix,
        "cache_timeout_seconds": CACHE_TIMEOUT,
        "cache_retry_seconds": CACHE_RETRY,
        "cache_failure_threshold": CACHE_THRESHOLD,
        "pool_timeout": 2.0,
        "request_timeout_seconds": 5.0,
    }


async def fresh_body(client: httpx.AsyncClient, path: str) -> bytes:
    sample = await timed_get(client, path, NO_CACHE)
    assert sample.status == 200, sample
    return sample.body


async def patch_display_name(
    client: httpx.AsyncClient, user_id: int, *, status: int = 200
) -> tuple[str, float]:
    new_name = f"proof {uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    patched = await client.patch(f"/users/{user_id}", json={"display_name": new_name}, headers=AUTH)
    assert patched.status_code == status, patched.text
    if status == 503:
        assert patched.headers["retry-after"], patched.headers
    return new_name, time.perf_counter() - started


async def reads(client: httpx.AsyncClient, path: str) -> list[Timed]:
    """Six reads one after another, then a burst of six at once."""
    samples = [await timed_get(client, path) for _ in range(6)]
    return samples + list(await asyncio.gather(*(timed_get(client, path) for _ in range(6))))


def assert_bypassed(samples: list[Timed], body: bytes) -> None:
    for sample in samples:
        assert sample.status == 200, (sample.status, sample.body[:300])
        assert sample.cache == "BYPASS", sample
        assert sample.seconds < BYPASS_BOUND, (sample.seconds, BYPASS_BOUND)
        assert sample.body == body, f"a stale body was served during the outage: {sample}"


async def until_cached_again(client: httpx.AsyncClient, path: str) -> tuple[list[Timed], float]:
    """Reads after the restore until one is a HIT: (the reads, when the first non-BYPASS came)."""
    restored = time.perf_counter()
    after: list[Timed] = []
    recovered_at: float | None = None
    for _ in range(MAX_ATTEMPTS):
        sample = await timed_get(client, path)
        after.append(sample)
        if sample.cache != "BYPASS" and recovered_at is None:
            recovered_at = time.perf_counter() - restored
        if sample.cache == "HIT" or time.perf_counter() - restored > MAX_WAIT:
            break
        await asyncio.sleep(0.05)
    assert recovered_at is not None, "the cache never left BYPASS after the restore"
    return after, recovered_at


async def read_through_cache_fault(
    client: httpx.AsyncClient, proxy: FaultProxy, *, fault: str, write_first: bool
) -> None:
    """The whole Redis scenario for one kind of fault (cut or blackhole)."""
    path = HIT_PATH
    # Warm: an entry for `path` sits in Redis, and a user on that page is about to change.
    assert (await timed_get(client, path)).cache == "MISS"
    assert (await timed_get(client, path)).cache == "HIT"
    old = await fresh_body(client, path)
    target = orjson.loads(old)["data"][0]["id"]
    getattr(proxy, fault)()
    before_write = [] if write_first else await reads(client, path)
    # Redis out of reach: the write is refused before anything is written (SPEC, Caching).
    _, patch_seconds = await patch_display_name(client, target, status=503)
    assert patch_seconds < BYPASS_BOUND, patch_seconds
    after_write = await reads(client, path)
    assert_bypassed(before_write + after_write, old)

    proxy.restore()
    after, recovered_at = await until_cached_again(client, path)
    for sample in after:
        assert sample.status == 200, sample
        assert sample.body == old, f"the refused write shows after the restore: {sample}"
    assert after[-1].cache == "HIT", after[-1]
    assert recovered_at < CACHE_RECOVERY_BOUND, recovered_at
    new_name, _ = await patch_display_name(client, target)  # writes work again
    written = [await timed_get(client, path) for _ in range(2)]
    expected = await fresh_body(client, path)
    assert orjson.loads(expected)["data"][0]["display_name"] == new_name
    assert [(s.cache, s.body) for s in written] == [("MISS", expected), ("HIT", expected)]
    circuit = app_of(client).state.services.cache.backend.circuit
    label = f"redis {fault}, {'write first' if write_first else 'reads first'}"
    print(
        f"\n[{label}] {figures('reads during the outage', before_write + after_write)} "
        f"(bound {BYPASS_BOUND:.1f}s); PATCH refused during the outage in {patch_seconds:.3f}s"
    )
    print(
        f"[{label}] recovery: caching again {recovered_at:.3f}s after restore "
        f"({sum(s.cache == 'BYPASS' for s in after)} BYPASS reads before); circuit trips="
        f"{circuit.trips}; reads after restore {[s.cache for s in after]}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["cut", "blackhole"])
@pytest.mark.parametrize("write_first", [False, True], ids=["reads_first", "write_first"])
async def test_redis_outage_bypasses_and_never_serves_stale(
    make_client: MakeClient, proof_db: str, redis_prefix: str, fault: str, write_first: bool
) -> None:
    async with FaultProxy(LOOPBACK, REDIS_PORT) as proxy:
        client = await make_client(
            _pg_url(POSTGRES_ADMIN_DSN, proof_db), **redis_settings(proxy, redis_prefix)
        )
        await read_through_cache_fault(client, proxy, fault=fault, write_first=write_first)


async def poll(condition: Callable[[], bool], *, seconds: float, step: float = 0.005) -> bool:
    """Wait, bounded in time and count, until `condition()` holds; whether it did."""
    deadline = time.perf_counter() + seconds
    for _ in range(int(seconds / step) + 1):
        if condition():
            return True
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(step)
    return condition()


@pytest.mark.slow
async def test_a_write_while_the_recovery_probe_is_in_flight_is_not_forgotten(
    make_client: MakeClient, proof_db: str, redis_prefix: str
) -> None:
    """The breaker is open on read failures; its recovery task has sent PING (stalled); a write
    commits and its version bump is lost; then Redis answers the PING. The lost bump must still
    be made good (an epoch bump) before anything is served from Redis again."""
    path = HIT_PATH
    async with FaultProxy(LOOPBACK, REDIS_PORT) as proxy:
        client = await make_client(
            _pg_url(POSTGRES_ADMIN_DSN, proof_db), **redis_settings(proxy, redis_prefix)
        )
        backend = app_of(client).state.services.cache.backend
        assert (await timed_get(client, path)).cache == "MISS"
        assert (await timed_get(client, path)).cache == "HIT"
        old = await fresh_body(client, path)
        proxy.blackhole()
        for _ in range(CACHE_THRESHOLD):
            assert (await timed_get(client, path)).cache == "BYPASS"
        assert not backend.circuit.closed
        stalls = proxy.stalls
        # The recovery task wakes after CACHE_RETRY and probes: that probe is now held.
        assert await poll(lambda: proxy.stalls > stalls, seconds=CACHE_RETRY * 4)
        target = orjson.loads(old)["data"][0]["id"]
        await patch_display_name(client, target, status=503)  # refused: the circuit is open
        proxy.restore()
        assert await poll(lambda: backend.circuit.closed, seconds=CACHE_RECOVERY_BOUND)
        new_name, _ = await patch_display_name(client, target)
        served = await timed_get(client, path)
        expected = await fresh_body(client, path)
    assert orjson.loads(expected)["data"][0]["display_name"] == new_name
    print(
        f"\n[redis probe race] after recovery: X-Cache {served.cache}, stale={served.body == old}"
    )
    assert served.body == expected, f"stale entry served after recovery (X-Cache {served.cache})"


@dataclass(frozen=True, slots=True)
class Partition:
    """What instance B (direct to Redis) served while A (behind the proxy) was cut off."""

    old: bytes
    refused: float  # how long A took to refuse its write while cut off
    during: list[Timed]
    unchanged: bytes  # the database after A's refused write
    after: list[Timed]
    expected: bytes  # the database after A's write once healed
    recovery: float


async def partitioned_write(
    make_client: MakeClient, database: str, prefix: str, *, partition_seconds: float
) -> Partition:
    """A and B share Redis; only A's link is cut; A writes (refused); B reads during; the
    link heals; A writes again; B reads after."""
    path = HIT_PATH
    async with FaultProxy(LOOPBACK, REDIS_PORT) as proxy:
        url = _pg_url(POSTGRES_ADMIN_DSN, database)
        a = await make_client(url, **redis_settings(proxy, prefix))
        direct = {
            **redis_settings(proxy, prefix),
            "cache_url": f"redis://{LOOPBACK}:{REDIS_PORT}/0",
        }
        b = await make_client(url, **direct)
        assert (await timed_get(b, path)).cache == "MISS"
        assert (await timed_get(b, path)).cache == "HIT"
        old = await fresh_body(b, path)
        proxy.cut()
        target = orjson.loads(old)["data"][0]["id"]
        _, refused = await patch_display_name(a, target, status=503)
        during: list[Timed] = []
        finish = time.perf_counter() + partition_seconds
        for _ in range(MAX_ATTEMPTS):
            during.append(await timed_get(b, path))
            if time.perf_counter() > finish:
                break
            await asyncio.sleep(0.05)
        unchanged = await fresh_body(b, path)
        proxy.restore()
        restored = time.perf_counter()
        backend = app_of(a).state.services.cache.backend
        assert await poll(lambda: backend.circuit.closed, seconds=CACHE_RECOVERY_BOUND)
        recovery = time.perf_counter() - restored
        await patch_display_name(a, target)
        after = [await timed_get(b, path) for _ in range(3)]
        expected = await fresh_body(b, path)
    return Partition(old, refused, during, unchanged, after, expected, recovery)


@pytest.mark.slow
async def test_after_a_partition_heals_every_instance_serves_the_write(
    make_client: MakeClient, proof_db: str, redis_prefix: str
) -> None:
    seen = await partitioned_write(make_client, proof_db, redis_prefix, partition_seconds=1.0)
    print(
        f"\n[redis partition] A refused its write in {seen.refused * 1000:.1f} ms; B served "
        f"{[s.cache for s in seen.during][:5]}... during; A recovered {seen.recovery:.3f}s after "
        f"restore; B after A's next write: {[s.cache for s in seen.after]}"
    )
    assert seen.old != seen.expected
    for sample in seen.after:
        assert sample.status == 200
        assert sample.body == seen.expected, f"B served a stale body after the heal: {sample}"


@pytest.mark.slow
async def test_while_one_instance_is_cut_off_the_others_never_serve_its_writes_stale(
    make_client: MakeClient, proof_db: str, redis_prefix: str
) -> None:
    """SPEC, Caching: no instance serves a response older than a write any instance committed.
    A, cut off from Redis, refuses its write before writing (503); so B's entries, which A
    could not have outdated, stay exactly as current as the database."""
    seen = await partitioned_write(make_client, proof_db, redis_prefix, partition_seconds=0.5)
    assert seen.refused < BYPASS_BOUND, seen.refused
    assert seen.unchanged == seen.old, "a write answered 503 was stored"
    assert [s.body == seen.unchanged for s in seen.during] == [True] * len(seen.during)


async def test_a_commit_that_outlives_the_deadline_is_answered_with_its_outcome(
    make_client: MakeClient, proof_db: str
) -> None:
    """The deadline answers 503 for a request still at work; but a write whose COMMIT is on
    its way waits for it, or its 503 would say "not written" about a write that lands."""
    url = _pg_url(POSTGRES_ADMIN_DSN, proof_db)
    direct = create_async_engine(url)
    try:  # a deferred constraint trigger runs inside COMMIT: a slow COMMIT, for real
        async with direct.begin() as connection:
            await connection.execute(text(SLOW_COMMIT_FUNCTION))
            await connection.execute(text(SLOW_COMMIT_TRIGGER))
    finally:
        await direct.dispose()
    client = await make_client(url, request_timeout_seconds=0.3)
    started = time.perf_counter()
    response = await client.patch("/groups/1", json={"display_name": "slow"}, headers=AUTH)
    took = time.perf_counter() - started
    print(f"\n[slow commit] answered {response.status_code} after {took:.3f}s (deadline 0.3s)")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["display_name"] == "slow"
    assert took >= 0.6
    stored = await client.get("/groups/1", headers=NO_CACHE)
    assert stored.json()["data"]["display_name"] == "slow"


SLOW_COMMIT_FUNCTION = """
CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(0.6); RETURN NULL; END $$
"""
SLOW_COMMIT_TRIGGER = """
CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON auth_group
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()
"""
