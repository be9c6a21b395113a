"""Crash consistency of batch writes: an interrupted batch is all there or not there at all.

(a) A batch of 1000 users with memberships, interrupted by terminating its database backend
(pg_terminate_backend) at chosen points, or by cutting a fault proxy in front of PostgreSQL
at swept timings. (b) A throwaway PostgreSQL stopped with `pg_ctl stop -m immediate` under a
stream of concurrent batches, then started again. Afterwards every batch is all or nothing,
every batch answered 201 is fully present, and no request was a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest

from tests.conftest import POSTGRES_ADMIN_DSN, TOKEN, _pg_url
from tests.ops.conftest import asyncpg_dsn, migrate_and_seed, sessions_of
from tests.ops.servers import LOOPBACK, PG_BIN, ThrowawayPostgres
from tests.proof.faultproxy import FaultProxy

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BATCH = 1000
GROUPS_PER_USER = 3
SEEDED_GROUPS = 20
MAX_WAIT = 15.0
POLL_STEP = 0.002

WRITE_SETTINGS: dict[str, object] = {
    "cache_url": "memory://",
    "pool_size": 4,
    "max_overflow": 0,
    "pool_timeout": 2.0,
    "statement_timeout_ms": 20_000,  # a statement waiting on our lock must not time out first
    "request_timeout_seconds": 30.0,
    "pool_pre_ping": True,
}


@dataclass(frozen=True, slots=True)
class Batch:
    names: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]

    @classmethod
    def make(cls, size: int, *, groups_per_user: int) -> Batch:
        tag = uuid.uuid4().hex[:6]
        names = tuple(f"p{tag}{i:05d}" for i in range(size))
        groups = tuple(
            tuple(1 + (i + k) % SEEDED_GROUPS for k in range(groups_per_user)) for i in range(size)
        )
        return cls(names, groups)

    def body(self) -> list[dict[str, object]]:
        return [
            {"name": name, "email_address": f"{name}@proof.example", "group_ids": list(groups)}
            for name, groups in zip(self.names, self.groups, strict=True)
        ]

    @property
    def links(self) -> int:
        return sum(len(g) for g in self.groups)


@dataclass(frozen=True, slots=True)
class Stored:
    users: int
    links: int


async def stored(connection: asyncpg.Connection, batch: Batch) -> Stored:
    """How much of `batch` the database holds: its users and their memberships."""
    users = await connection.fetchval(
        "SELECT count(*) FROM auth_user WHERE name = ANY($1::text[])", list(batch.names)
    )
    links = await connection.fetchval(
        "SELECT count(*) FROM auth_user_group ug JOIN auth_user u ON u.id = ug.user_id "
        "WHERE u.name = ANY($1::text[])",
        list(batch.names),
    )
    return Stored(int(users), int(links))


def assert_all_or_nothing(batch: Batch, found: Stored, status: int, label: str) -> None:
    assert status in (201, 503), f"{label}: status {status}"
    full = Stored(len(batch.names), batch.links)
    assert found in (full, Stored(0, 0)), f"{label}: half a batch is stored: {found} of {full}"
    if status == 201:
        assert found == full, f"{label}: acknowledged with 201 but stored {found} of {full}"


async def post_batch(client: httpx.AsyncClient, batch: Batch) -> tuple[int, float, str]:
    started = time.perf_counter()
    response = await client.post("/users?fields=id", json=batch.body(), headers=AUTH)
    if response.status_code == 503:
        assert "retry-after" in response.headers, response.headers
        assert response.headers["content-type"] == "application/problem+json"
    return response.status_code, time.perf_counter() - started, response.text[:300]


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


async def terminate(pids: list[int]) -> int:
    """pg_terminate_backend each pid, from the admin database; how many were terminated."""
    async with connect(POSTGRES_ADMIN_DSN) as admin:
        done = 0
        for pid in pids:
            done += bool(await admin.fetchval("SELECT pg_terminate_backend($1)", pid))
        return done


async def wait_for_backend(database: str, *, excluding: int, query_prefix: str) -> int:
    """The pid of the session of `database` waiting on a lock in a statement `query_prefix...`."""
    deadline = time.perf_counter() + MAX_WAIT
    for _ in range(int(MAX_WAIT / 0.01)):
        for row in await sessions_of(database, excluding=excluding):
            if row["wait_event_type"] == "Lock" and row["query"].startswith(query_prefix):
                pid: int = row["pid"]
                return pid
        if time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.01)
    pytest.fail(f"no session of {database} came to wait on a lock in {query_prefix!r}")


@dataclass
class Run:
    label: str
    status: int
    seconds: float
    found: Stored
    note: str = ""


async def killed_at_a_lock(
    client: httpx.AsyncClient, url: str, database: str, *, table: str, query_prefix: str
) -> Run:
    """Hold `table` locked so the batch stops at its statement on it; terminate the batch's
    backend there; release the lock."""
    batch = Batch.make(BATCH, groups_per_user=GROUPS_PER_USER)
    async with connect(url) as holder:
        await holder.execute("BEGIN")
        await holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        request = asyncio.create_task(post_batch(client, batch))
        try:
            pid = await wait_for_backend(
                database, excluding=holder.get_server_pid(), query_prefix=query_prefix
            )
            assert await terminate([pid]) == 1
        finally:
            await holder.execute("ROLLBACK")
            status, seconds, text = await request
    async with connect(url) as check:
        found = await stored(check, batch)
    label = f"terminated while waiting on {table}"
    assert status == 503, f"{label}: {status} {text}"
    assert_all_or_nothing(batch, found, status, label)
    return Run(label, status, seconds, found)


async def killed_after(
    client: httpx.AsyncClient, url: str, database: str, *, delay: float, run: int
) -> Run:
    """Terminate every session of `database` `delay` seconds into the batch."""
    batch = Batch.make(BATCH, groups_per_user=GROUPS_PER_USER)
    request = asyncio.create_task(post_batch(client, batch))
    await asyncio.sleep(delay)
    sessions = await sessions_of(database)
    busy = sorted({row["state"] for row in sessions} - {"idle"})
    await terminate([row["pid"] for row in sessions])
    status, seconds, text = await request
    async with connect(url) as check:
        found = await stored(check, batch)
    label = f"terminate #{run} at {delay * 1000:.0f} ms"
    assert_all_or_nothing(batch, found, status, f"{label} ({text})")
    return Run(label, status, seconds, found, f"backend states {busy}")


async def cut_after(
    client: httpx.AsyncClient, proxy: FaultProxy, url: str, *, delay: float, run: int
) -> Run:
    """Cut the proxy between the service and PostgreSQL `delay` seconds into the batch."""
    batch = Batch.make(BATCH, groups_per_user=GROUPS_PER_USER)
    request = asyncio.create_task(post_batch(client, batch))
    await asyncio.sleep(delay)
    proxy.cut()
    status, seconds, text = await request
    proxy.restore()
    async with connect(url) as check:
        found = await stored(check, batch)
    label = f"proxy cut #{run} at {delay * 1000:.0f} ms"
    assert_all_or_nothing(batch, found, status, f"{label} ({text})")
    return Run(label, status, seconds, found)


async def still_serves(client: httpx.AsyncClient) -> None:
    """The next requests succeed: the pool threw away its dead connections by itself."""
    for _ in range(3):
        response = await client.get("/users?fields=id&limit=5")
        assert response.status_code == 200, response.text


async def calibrate(client: httpx.AsyncClient, url: str) -> float:
    """One uninterrupted batch: it is stored whole, and it tells how long a batch takes."""
    batch = Batch.make(BATCH, groups_per_user=GROUPS_PER_USER)
    status, seconds, text = await post_batch(client, batch)
    assert status == 201, text
    async with connect(url) as check:
        assert await stored(check, batch) == Stored(BATCH, batch.links)
    return seconds


def report(runs: list[Run], calibration: float) -> None:
    print(f"\n[crash a] an uninterrupted batch of {BATCH} users: {calibration * 1000:.0f} ms")
    for run in runs:
        state = "present" if run.found.users else "absent"
        print(
            f"[crash a] {run.label}: {run.status} after {run.seconds * 1000:.0f} ms, "
            f"batch {state} ({run.found.users} users, {run.found.links} links) {run.note}"
        )


@pytest.mark.slow
async def test_a_batch_killed_mid_flight_is_all_or_nothing(
    make_client: MakeClient, proof_db: str
) -> None:
    url = _pg_url(POSTGRES_ADMIN_DSN, proof_db)
    client = await make_client(url, **WRITE_SETTINGS)
    calibration = await calibrate(client, url)
    runs = [
        await killed_at_a_lock(
            client, url, proof_db, table="auth_user", query_prefix="INSERT INTO auth_user "
        ),
        # The users are in (uncommitted); the batch waits to insert their memberships.
        await killed_at_a_lock(
            client, url, proof_db, table="auth_user_group", query_prefix="INSERT INTO auth_user_"
        ),
    ]
    await still_serves(client)
    for run, fraction in enumerate((0.1, 0.3, 0.5, 0.7, 0.9, 1.1)):
        runs.append(
            await killed_after(client, url, proof_db, delay=calibration * fraction, run=run)
        )
        await still_serves(client)
    report(runs, calibration)
    assert any(r.found.users == 0 for r in runs)


@pytest.mark.slow
async def test_a_batch_cut_off_by_the_network_is_all_or_nothing(
    make_client: MakeClient, proof_db: str
) -> None:
    url = _pg_url(POSTGRES_ADMIN_DSN, proof_db)
    runs: list[Run] = []
    async with FaultProxy(LOOPBACK, 5432) as proxy:
        proxied = f"postgresql+asyncpg://postgres@{LOOPBACK}:{proxy.port}/{proof_db}"
        client = await make_client(proxied, **WRITE_SETTINGS)
        calibration = await calibrate(client, url)
        for run, fraction in enumerate((0.05, 0.2, 0.4, 0.6, 0.8, 0.95)):
            runs.append(await cut_after(client, proxy, url, delay=calibration * fraction, run=run))
            await still_serves(client)
    report(runs, calibration)
    assert any(r.status == 503 for r in runs)


# --- (b) a whole PostgreSQL server stopped with -m immediate ----------------------------------


class DurablePostgres(ThrowawayPostgres):
    """The ops cluster, but with synchronous_commit on: a commit it acknowledged must survive
    an immediate stop (fsync and full_page_writes only matter when the OS itself crashes)."""

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} -k {self.root} "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            [
                *(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log)),
                *("-o", options, "-w", "-t", "30", "start"),
            ]
        )


@contextlib.contextmanager
def durable_postgres() -> Iterator[DurablePostgres]:
    cluster = DurablePostgres()
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


STREAM_WRITERS = 4
STREAM_BATCH = 50
MAX_BATCHES_PER_WRITER = 400


@dataclass
class Stream:
    """Concurrent writers posting batches until told to stop; every answer recorded."""

    client: httpx.AsyncClient
    sent: list[tuple[Batch, int, float, float]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _writer(self) -> None:
        for _ in range(MAX_BATCHES_PER_WRITER):
            if self.stop.is_set():
                return
            batch = Batch.make(STREAM_BATCH, groups_per_user=2)
            started = time.perf_counter()
            status, _seconds, _text = await post_batch(self.client, batch)
            self.sent.append((batch, status, started, time.perf_counter()))
            if status == 503:
                await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Stream]:
        tasks = [asyncio.create_task(self._writer()) for _ in range(STREAM_WRITERS)]
        try:
            yield self
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)


@pytest.mark.slow
async def test_an_immediate_stop_loses_no_acknowledged_batch(make_client: MakeClient) -> None:
    with durable_postgres() as cluster:
        async with connect(cluster.admin_dsn) as admin:
            await admin.execute('CREATE DATABASE "svc_proof_crash"')
        url = cluster.url("svc_proof_crash")
        await migrate_and_seed(url)
        client = await make_client(
            url, **{**WRITE_SETTINGS, "statement_timeout_ms": 3000, "pool_timeout": 1.0}
        )
        stream = Stream(client)
        async with stream.running():
            await asyncio.sleep(1.5)
            stop_began = time.perf_counter()
            await asyncio.to_thread(cluster.stop, "immediate")
            stopped = time.perf_counter()
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cluster.start)
            started = time.perf_counter()
            await asyncio.sleep(2.0)
        async with connect(url) as check:
            found = [await stored(check, batch) for batch, *_ in stream.sent]

    statuses = [status for _batch, status, *_ in stream.sent]
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    for (batch, status, began, _ended), got in zip(stream.sent, found, strict=True):
        assert_all_or_nothing(batch, got, status, f"batch started at {began - stop_began:+.3f}s")
    lost_503 = sum(
        1 for (_b, s, *_), g in zip(stream.sent, found, strict=True) if s == 503 and g.users
    )
    before = [s for (_b, s, _b0, ended) in stream.sent if ended < stop_began]
    after = [s for (_b, s, began, _e) in stream.sent if began > started + 0.5]
    print(
        f"\n[crash b] {len(stream.sent)} batches of {STREAM_BATCH} from {STREAM_WRITERS} writers: "
        f"{counts}; stop -m immediate took {stopped - stop_began:.3f}s, restart "
        f"{started - stopped - 1.0:.3f}s; 503 answered but committed: {lost_503}; "
        f"before the stop {len(before)} (all 201: {set(before) == {201}}), "
        f"after the restart {len(after)} (all 201: {set(after) == {201}})"
    )
    assert set(before) == {201}
    assert after
    assert set(after) == {201}
    assert counts.get(503, 0) > 0
