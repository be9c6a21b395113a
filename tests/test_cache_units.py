"""The cache without a database: memory bounds, LRU, TTL, versions, single-flight, circuit."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.cache import CacheUnavailable, Entry, NullBackend, Outcome, ResponseCache
from service.cache.backend import etag_of
from service.cache.circuit import Circuit, State
from service.cache.coalesce import CoalescingReader
from service.cache.memory import MemoryBackend

TABLES = ("auth_group", "auth_user", "auth_user_group")


def memory(**overrides: float) -> MemoryBackend:
    values: dict[str, float] = {"max_entries": 1000, "max_bytes": 1 << 20, "ttl_seconds": 60.0}
    values.update(overrides)
    return MemoryBackend(
        max_entries=int(values["max_entries"]),
        max_bytes=int(values["max_bytes"]),
        ttl_seconds=values["ttl_seconds"],
    )


class Producer:
    """A produce callable that counts its runs; slow, and failing when told to."""

    def __init__(self, body: bytes = b'{"data":[]}', *, delay: float = 0.0) -> None:
        self.body = body
        self.delay = delay
        self.runs = 0
        self.error: Exception | None = None

    async def __call__(self, *, required: int) -> bytes:
        self.runs += 1
        self.required = required
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.body


# MemoryBackend: bounds, LRU, TTL, versions.


async def test_memory_stays_within_its_bounds_under_100000_distinct_keys() -> None:
    max_bytes, max_entries = 2_000_000, 5_000
    backend = memory(max_entries=max_entries, max_bytes=max_bytes)
    rng = random.Random(7)
    payload = bytes(rng.randrange(256) for _ in range(8192))
    sizes: dict[str, int] = {}
    order: list[str] = []
    for number in range(100_000):
        key = f"/users?limit={number}"
        size = rng.choice((0, 1, rng.randrange(8192), rng.randrange(600)))
        await backend.store(key, Entry.of(payload[:size], (0, number)))
        sizes[key] = size
        order.append(key)
        assert backend.bytes_used <= max_bytes
        assert len(backend) <= max_entries
    survivors = len(backend)
    # LRU with no reads: exactly the newest keys survive, and nothing else is kept.
    expected = order[-survivors:]
    for key in expected:
        _, entry = await backend.lookup(key, ())
        assert entry is not None, key
    _, evicted = await backend.lookup(order[-survivors - 1], ())
    assert evicted is None
    body_bytes = sum(sizes[key] for key in expected)
    # The accounting is the real bodies plus a bounded per-entry overhead.
    assert body_bytes <= backend.bytes_used <= body_bytes + survivors * 400
    # And eviction does not throw away much more than it must.
    assert survivors == max_entries or backend.bytes_used > max_bytes - 9000


async def test_an_entry_larger_than_the_whole_cache_is_not_stored_and_evicts_nothing() -> None:
    backend = memory(max_bytes=4096)
    await backend.store("small", Entry.of(b"x" * 100, (0,)))
    used = backend.bytes_used
    await backend.store("huge", Entry.of(b"x" * 5000, (0,)))
    assert len(backend) == 1
    assert backend.bytes_used == used
    assert (await backend.lookup("huge", ()))[1] is None
    assert (await backend.lookup("small", ()))[1] is not None


async def test_replacing_a_key_does_not_count_it_twice() -> None:
    backend = memory()
    for _ in range(50):
        await backend.store("k", Entry.of(b"y" * 1000, (0,)))
    assert len(backend) == 1
    assert 1000 < backend.bytes_used < 1500


async def test_recently_read_entries_survive_eviction() -> None:
    backend = memory(max_entries=3)
    for key in "abc":
        await backend.store(key, Entry.of(key.encode(), (0,)))
    await backend.lookup("a", ())
    await backend.store("d", Entry.of(b"d", (0,)))
    present = {key for key in "abcd" if (await backend.lookup(key, ()))[1] is not None}
    assert present == {"a", "c", "d"}


async def test_byte_pressure_evicts_the_least_recently_used_first() -> None:
    body = b"z" * 1000
    cost = Entry.of(body, (0,)).size + 1 + 200
    backend = memory(max_bytes=cost * 3)
    for key in "abc":
        await backend.store(key, Entry.of(body, (0,)))
    await backend.lookup("a", ())
    await backend.store("d", Entry.of(body, (0,)))
    assert (await backend.lookup("b", ()))[1] is None
    present = {key for key in "abcd" if (await backend.lookup(key, ()))[1] is not None}
    assert present == {"a", "c", "d"}


async def test_entries_expire_after_the_ttl() -> None:
    backend = memory(ttl_seconds=0.05)
    await backend.store("k", Entry.of(b"body", (0,)))
    assert (await backend.lookup("k", ()))[1] is not None
    await asyncio.sleep(0.08)
    assert (await backend.lookup("k", ()))[1] is None
    assert len(backend) == 0
    assert backend.bytes_used == 0


async def test_versions_start_at_zero_and_bump_only_the_named_tables() -> None:
    backend = memory()
    versions, entry = await backend.lookup("k", TABLES)
    assert versions == (0, 0, 0, 0)
    assert entry is None
    await backend.bump(frozenset({"auth_user", "auth_user_group"}))
    await backend.bump(frozenset({"auth_user"}))
    versions, _ = await backend.lookup("k", TABLES)
    assert versions == (0, 0, 2, 1)  # epoch, auth_group, auth_user, auth_user_group
    versions, _ = await backend.lookup("k", ("auth_user_group", "auth_user"))
    assert versions == (0, 1, 2)  # in the order asked


# ResponseCache over the memory backend.


async def test_a_miss_is_stored_and_the_next_fetch_is_a_hit() -> None:
    cache = ResponseCache(memory(), wait_seconds=5)
    produce = Producer(b'{"a":1}')
    first = await cache.fetch("k", TABLES, produce)
    second = await cache.fetch("k", TABLES, produce)
    assert (first.outcome, second.outcome) == (Outcome.MISS, Outcome.HIT)
    assert first.body == second.body == b'{"a":1}'
    assert first.etag == second.etag == etag_of(b'{"a":1}')
    assert produce.runs == 1


async def test_a_bumped_table_invalidates_exactly_the_entries_that_read_it() -> None:
    cache = ResponseCache(memory(), wait_seconds=5)
    users, groups = Producer(b"users"), Producer(b"groups")
    await cache.fetch("/users", ("auth_user",), users)
    await cache.fetch("/groups", ("auth_group",), groups)
    await cache.tables_changed(frozenset({"auth_user"}))
    again_users = await cache.fetch("/users", ("auth_user",), users)
    again_groups = await cache.fetch("/groups", ("auth_group",), groups)
    assert again_users.outcome is Outcome.MISS
    assert again_groups.outcome is Outcome.HIT
    assert (users.runs, groups.runs) == (2, 1)
    assert (await cache.fetch("/users", ("auth_user",), users)).outcome is Outcome.HIT


async def test_refresh_bypasses_and_replaces_the_entry() -> None:
    cache = ResponseCache(memory(), wait_seconds=5)
    await cache.fetch("k", TABLES, Producer(b"old"))
    refreshed = await cache.fetch("k", TABLES, Producer(b"new"), refresh=True)
    assert (refreshed.outcome, refreshed.body) == (Outcome.BYPASS, b"new")
    after = await cache.fetch("k", TABLES, Producer(b"unused"))
    assert (after.outcome, after.body) == (Outcome.HIT, b"new")


async def test_concurrent_identical_misses_produce_once() -> None:
    cache = ResponseCache(memory(), wait_seconds=5)
    produce = Producer(b'{"data":[1,2,3]}', delay=0.05)
    served = await asyncio.gather(*(cache.fetch("k", TABLES, produce) for _ in range(200)))
    assert produce.runs == 1
    assert {s.body for s in served} == {b'{"data":[1,2,3]}'}
    assert {s.etag for s in served} == {etag_of(b'{"data":[1,2,3]}')}
    assert all(s.outcome is not Outcome.BYPASS for s in served)
    assert (await cache.fetch("k", TABLES, produce)).outcome is Outcome.HIT
    assert produce.runs == 1


async def test_a_failed_produce_reaches_every_waiter_and_is_not_cached() -> None:
    cache = ResponseCache(memory(), wait_seconds=5)
    produce = Producer(b"fine", delay=0.05)
    produce.error = RuntimeError("database down")
    results = await asyncio.gather(
        *(cache.fetch("k", TABLES, produce) for _ in range(50)), return_exceptions=True
    )
    assert produce.runs == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "database down" for r in results)
    produce.error = None
    served = await cache.fetch("k", TABLES, produce)
    assert (served.outcome, served.body, produce.runs) == (Outcome.MISS, b"fine", 2)
    assert (await cache.fetch("k", TABLES, produce)).outcome is Outcome.HIT


async def test_a_follower_waits_at_most_wait_seconds_then_produces_itself() -> None:
    cache = ResponseCache(memory(), wait_seconds=0.05)
    slow = Producer(b"slow", delay=0.3)
    fast = Producer(b"fast")
    leader = asyncio.ensure_future(cache.fetch("k", TABLES, slow))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    follower = await cache.fetch("k", TABLES, fast)
    assert time.monotonic() - started < 0.25
    assert follower.body == b"fast"
    assert (await leader).body == b"slow"


async def test_the_null_backend_always_bypasses() -> None:
    cache = ResponseCache(NullBackend(), wait_seconds=5)
    produce = Producer(b"body")
    for _ in range(3):
        served = await cache.fetch("k", TABLES, produce)
        assert served.outcome is Outcome.BYPASS
        assert served.etag == etag_of(b"body")
    assert produce.runs == 3
    await cache.tables_changed(frozenset(TABLES))
    with pytest.raises(CacheUnavailable):
        await NullBackend().lookup("k", TABLES)


@given(first=st.binary(max_size=64), second=st.binary(max_size=64))
def test_etags_are_equal_exactly_when_bodies_are(first: bytes, second: bytes) -> None:
    assert (etag_of(first) == etag_of(second)) == (first == second)
    assert etag_of(first) == etag_of(bytes(first))
    assert etag_of(first).startswith('"')
    assert etag_of(first).endswith('"')


# The circuit breaker.


def test_a_circuit_opens_once_per_outage_and_closes_when_told() -> None:
    circuit = Circuit(retry_seconds=0.05, name="test")
    assert circuit.closed
    circuit.trip(ConnectionError("down"))
    assert circuit.state is State.OPEN
    assert circuit.trips == 1
    circuit.trip(ConnectionError("still down"))
    assert circuit.state is State.OPEN
    assert circuit.trips == 1  # one outage, one trip
    circuit.close()
    assert circuit.closed
    circuit.trip(TimeoutError())
    assert circuit.trips == 2


# --- lookups made together share one MGET ----------------------------------------------------


class Store:
    """A fetch function over a dict that records each call's keys; fails when told to."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.calls: list[list[str]] = []
        self.error: Exception | None = None

    async def __call__(self, keys: list[str]) -> list[bytes | str | None]:
        self.calls.append(keys)
        await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        return [self.values.get(key) for key in keys]


async def test_lookups_made_in_one_turn_travel_as_one_fetch_of_each_key_once() -> None:
    store = Store({"epoch": b"1", "v:a": b"2", "e:1": b"one", "e:2": b"two"})
    reader = CoalescingReader(store)
    asked = [["epoch", "v:a", f"e:{n % 3}"] for n in range(30)]
    answers = await asyncio.gather(*(reader.mget(keys) for keys in asked))
    assert len(store.calls) == 1
    assert sorted(store.calls[0]) == ["e:0", "e:1", "e:2", "epoch", "v:a"]
    for keys, answer in zip(asked, answers, strict=True):
        assert answer == [store.values.get(key) for key in keys]


async def test_a_lone_lookup_waits_for_no_one_and_later_turns_fetch_again() -> None:
    store = Store({"k": b"v"})
    reader = CoalescingReader(store)
    assert await reader.mget(["k"]) == [b"v"]
    assert await reader.mget(["k", "missing"]) == [b"v", None]
    assert store.calls == [["k"], ["k", "missing"]]


async def test_a_failed_fetch_fails_every_lookup_of_its_batch_and_the_next_batch_works() -> None:
    store = Store({"k": b"v"})
    store.error = CacheUnavailable("down")
    reader = CoalescingReader(store)
    results = await asyncio.gather(*(reader.mget(["k"]) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(result, CacheUnavailable) for result in results)
    store.error = None
    assert await reader.mget(["k"]) == [b"v"]


async def test_a_lookup_that_goes_away_leaves_the_others_their_answers() -> None:
    store = Store({"a": b"1", "b": b"2"})
    reader = CoalescingReader(store)
    leaving = asyncio.ensure_future(reader.mget(["a"]))
    staying = asyncio.ensure_future(reader.mget(["b"]))
    await asyncio.sleep(0)  # both are waiting on the batch now
    leaving.cancel()
    assert await staying == [b"2"]
    assert leaving.cancelled()
    await reader.close()
