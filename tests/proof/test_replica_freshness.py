"""Freshness under load with a read replica: the figure in docs/performance.md ("Read
replicas: freshness under load").

Two real `service serve` instances share one Redis prefix and a throwaway primary whose hot
standby is named in DATABASE_REPLICA_URLS. For LOAD_SECONDS, at once:
- `service loadtest --scenario mixed` drives each instance (reads of /users, /users/1 and
  /groups; POST /users and PATCH /groups/2);
- the standby's replay is paused for a second, resumed for a second, and so on;
- a checker writes a unique display name to one user through one instance and, once the
  write is acknowledged, reads it back through the other instance and then the writer,
  cached and with `Cache-Control: no-cache`, by an item URL and a list URL.

Every read must show the last acknowledged write (SPEC, Scaling out: read-your-writes
across replicas and instances). The test reports how many reads it checked, how many were
stale, the share of database reads the replica served (`db_reads_total` of both instances)
and the load tool's own summary. A stale read is reported with what the other engineer needs
to find it: who wrote, who read, cached or not, X-Cache, and when relative to the pauses.

    LOAD_SECONDS=30 .venv/bin/pytest tests/proof/test_replica_freshness.py -q -s
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.db import database_name
from tests.conftest import TOKEN
from tests.ops.conftest import metric_value, migrate_and_seed, serve_settings
from tests.ops.replication import StreamingPair, streaming_pair
from tests.ops.servers import REDIS_URL, Served, redis_prefix, run_loadtest, serve

DATABASE = "svc_freshness"
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "10"))
LOAD_CONCURRENCY = int(os.environ.get("LOAD_CONCURRENCY", "4"))  # per instance
TOGGLE_SECONDS = 1.0  # replay paused this long, then resumed this long, and again
MIN_CHECKS = 100
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_CACHE = {"Cache-Control": "no-cache"}

# A seeded user no scenario request touches; the load tool's POST /users adds rows beside it
# (and so keeps changing the table's version), its PATCH /groups/2 changes another table.
USER_ID = 150
READS = {
    "item": f"/users/{USER_ID}?fields=id,display_name",
    "list": f"/users?fields=id,display_name&filter[id][gte]={USER_ID - 5}"
    f"&filter[id][lte]={USER_ID + 5}&sort=id",
}


# --- the pieces ---------------------------------------------------------------------------------


@pytest.fixture
def cache_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted at the end."""
    with redis_prefix("svc_proof") as prefix:
        yield prefix


class Clock:
    """Seconds since the run started, and the replay's pause and resume events on that scale."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.events: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def mark(self, event: str) -> None:
        self.events.append((self.now(), event))

    def paused_seconds(self) -> float:
        """From each 'pause requested' to the next 'resumed'."""
        total, since = 0.0, None
        for at, event in self.events:
            if event == "pause requested":
                since = at
            elif event == "resumed" and since is not None:
                total, since = total + at - since, None
        return total

    def where(self, at: float) -> str:
        """'1.234 s after paused' for the last replay event before `at`."""
        before = [(t, e) for t, e in self.events if t <= at]
        if not before:
            return "before the first pause"
        t, event = before[-1]
        return f"{at - t:.3f} s after '{event}' (at {t:.3f} s)"


async def toggle_replay(
    pair: StreamingPair, clock: Clock, phases: Phases, stop: asyncio.Event
) -> None:
    """Pause the standby's replay for TOGGLE_SECONDS, resume it as long, until told to stop;
    it is replaying again when this returns."""
    try:
        await phases.sample("replaying")
        while not stop.is_set():
            clock.mark("pause requested")
            await pair.pause_replay()
            clock.mark("paused")
            await phases.sample("paused")
            await sleep_unless(stop, TOGGLE_SECONDS)
            await pair.resume_replay()
            clock.mark("resumed")
            await phases.sample("replaying")
            await sleep_unless(stop, TOGGLE_SECONDS)
    finally:
        await pair.resume_replay()
        await phases.sample("end")


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass
class Read:
    """One read checked against the last acknowledged write."""

    at: float  # seconds since the start, when the response came back
    writer: str
    reader: str
    url: str
    cached: bool
    expected: str
    seen: str | None
    status: int
    headers: dict[str, str]
    write_acknowledged_at: float

    @property
    def stale(self) -> bool:
        return self.seen != self.expected

    def describe(self, clock: Clock) -> str:
        kind = "cached" if self.cached else "no-cache"
        return (
            f"written through {self.writer} (acknowledged at {self.write_acknowledged_at:.3f} "
            f"s, {clock.where(self.write_acknowledged_at)}), read through {self.reader} "
            f"{kind} {self.url} at {self.at:.3f} s ({clock.where(self.at)}): status "
            f"{self.status}, expected {self.expected!r}, saw {self.seen!r}, X-Cache "
            f"{self.headers.get('x-cache')}, Server-Timing {self.headers.get('server-timing')!r}"
            f", X-Request-ID {self.headers.get('x-request-id')}"
        )


@dataclass
class Checks:
    reads: list[Read] = field(default_factory=list)  # answered 200
    failed_reads: list[Read] = field(default_factory=list)
    writes: int = 0
    refused_writes: list[tuple[int, str | None]] = field(default_factory=list)  # 503s
    bad_writes: list[tuple[int, str]] = field(default_factory=list)

    def stale(self) -> list[Read]:
        return [read for read in self.reads if read.stale]


def display_name_in(url: str, body: dict[str, Any]) -> str | None:
    if url == "item":
        return body["data"]["display_name"]  # type: ignore[no-any-return]
    rows = [row for row in body["data"] if row["id"] == USER_ID]
    return rows[0]["display_name"] if rows else "<missing from the list>"


async def check_reads(
    clients: dict[str, httpx.AsyncClient], clock: Clock, stop: asyncio.Event, out: Checks
) -> None:
    """Write through one instance, read back through the other and the writer; alternate."""
    names = list(clients)
    for round_number in itertools.count():
        if stop.is_set():
            return
        writer, other = names[round_number % 2], names[(round_number + 1) % 2]
        value = f"fresh {round_number} {uuid.uuid4().hex[:8]}"
        written = await clients[writer].patch(
            f"/users/{USER_ID}?fields=id", json={"display_name": value}, headers=AUTH
        )
        if written.status_code == 503:  # nothing is checked against it: next round's write
            out.refused_writes.append((503, written.headers.get("retry-after")))
            continue
        if written.status_code != 200:
            out.bad_writes.append((written.status_code, written.text[:300]))
            return  # what the row holds is unknown from here on
        out.writes += 1
        acknowledged = clock.now()
        for reader in (other, writer):
            for url, path in READS.items():
                for cached in (True, False):
                    response = await clients[reader].get(path, headers={} if cached else NO_CACHE)
                    seen = display_name_in(url, response.json()) if response.is_success else None
                    read = Read(
                        at=clock.now(),
                        writer=writer,
                        reader=reader,
                        url=url,
                        cached=cached,
                        expected=value,
                        seen=seen,
                        status=response.status_code,
                        headers=dict(response.headers),
                        write_acknowledged_at=acknowledged,
                    )
                    (out.reads if response.status_code == 200 else out.failed_reads).append(read)


async def run_load_tool(served: Served, *, seconds: float, seed: int) -> dict[str, Any]:
    """`python -m service loadtest URL --scenario mixed --json`, killed if it overruns."""
    concurrency = ("-c", str(LOAD_CONCURRENCY), "--seed", str(seed), "--token-env", "API_TOKEN")
    summary, _ = await run_loadtest(
        served.url, "--scenario", "mixed", *concurrency, seconds=seconds
    )
    return summary


async def replica_up_everywhere(servers: list[Served], replica: str) -> None:
    """Each instance's /readyz (which polls at once) says the replica is up."""
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(timeout=5.0) as http:
        for server in servers:
            while True:
                ready = (await http.get(server.url + "/readyz")).json()
                if ready["databases"].get(replica, {}).get("state") == "up":
                    break
                assert time.monotonic() < deadline, f"the replica is not up: {ready}"
                await asyncio.sleep(0.1)


@dataclass(frozen=True)
class Reads:
    """db_reads_total of every instance, by database."""

    primary: float = 0.0
    replica: float = 0.0

    def __add__(self, other: Reads) -> Reads:
        return Reads(self.primary + other.primary, self.replica + other.replica)

    def __sub__(self, other: Reads) -> Reads:
        return Reads(self.primary - other.primary, self.replica - other.replica)

    @property
    def replica_share(self) -> float:
        total = self.primary + self.replica
        return self.replica / total if total else 0.0

    def describe(self) -> str:
        total = self.primary + self.replica
        return f"{self.replica:.0f} of {total:.0f} ({self.replica_share:.1%})"


async def reads_by_database(servers: list[Served], replica: str) -> Reads:
    primary = on_replica = 0.0
    async with httpx.AsyncClient(timeout=10.0) as http:
        for server in servers:
            text = (await http.get(server.url + "/metrics")).text
            primary += metric_value(text, "db_reads_total", database="primary")
            on_replica += metric_value(text, "db_reads_total", database=replica)
    return Reads(primary, on_replica)


@dataclass
class Phases:
    """db_reads_total when replay pauses and resumes: the replica's share in each phase."""

    servers: list[Served]
    replica: str
    samples: list[tuple[str, Reads]] = field(default_factory=list)

    async def sample(self, phase: str) -> None:
        """`phase` starts now ('end': the last one ended)."""
        self.samples.append((phase, await reads_by_database(self.servers, self.replica)))

    def totals(self) -> dict[str, Reads]:
        totals: dict[str, Reads] = {"replaying": Reads(), "paused": Reads()}
        for (phase, start), (_, end) in itertools.pairwise(self.samples):
            totals[phase] += end - start
        return totals


def merge_load(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for summary in summaries:
        statuses.update(summary["statuses"])
        errors.update(summary["errors"])
    return {
        "requests": sum(s["requests"] for s in summaries),
        "requests_per_second": round(sum(s["requests_per_second"] for s in summaries), 1),
        "statuses": dict(sorted(statuses.items())),
        "errors": dict(errors),
        "p50_ms": [s["latency_ms"]["p50"] for s in summaries],
        "p99_ms": [s["latency_ms"]["p99"] for s in summaries],
        "cache_hit_ratio": [s["cache_hit_ratio"] for s in summaries],
        "writes": sum(
            n for s in summaries for label, n in s["by_request"].items() if label[0] in "PD"
        ),
    }


# --- the run ------------------------------------------------------------------------------------


async def measure(
    pair: StreamingPair, servers: list[Served], clock: Clock, phases: Phases
) -> tuple[Checks, list[dict[str, Any]]]:
    """The load, the replay toggling and the checker, together for LOAD_SECONDS."""
    stop = asyncio.Event()
    checks = Checks()
    clients = {
        name: httpx.AsyncClient(base_url=server.url, timeout=10.0)
        for name, server in zip("AB", servers, strict=True)
    }
    async with contextlib.AsyncExitStack() as stack:
        for client in clients.values():
            await stack.enter_async_context(client)
        toggler = asyncio.create_task(toggle_replay(pair, clock, phases, stop))
        checker = asyncio.create_task(check_reads(clients, clock, stop, checks))
        try:
            loads = await asyncio.gather(
                *(
                    run_load_tool(server, seconds=LOAD_SECONDS, seed=index + 1)
                    for index, server in enumerate(servers)
                )
            )
        finally:
            stop.set()
            await asyncio.gather(toggler, checker)
    return checks, list(loads)


@pytest.mark.slow
async def test_no_stale_read_under_load_while_the_replica_pauses_every_second(
    tmp_path: Path, cache_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    started = time.monotonic()
    async with streaming_pair() as pair:
        await pair.create_database(DATABASE)
        await migrate_and_seed(pair.primary.url(DATABASE))
        await pair.wait_caught_up()
        replica = database_name(pair.replica.url(DATABASE))
        settings = serve_settings(
            pair.primary.url(DATABASE),
            database_replica_urls=pair.replica.url(DATABASE),
            cache_url=REDIS_URL,
            cache_prefix=cache_prefix,
            replica_poll_seconds="0.05",
        )
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(serve(settings, log_dir=log_dir, name=name))
                for name in ("A", "B")
            ]
            await replica_up_everywhere(servers, replica)
            before = await reads_by_database(servers, replica)
            clock, phases = Clock(), Phases(servers, replica)
            checks, loads = await measure(pair, servers, clock, phases)
            ran = clock.now()
            after = await reads_by_database(servers, replica)
            logs = "".join(server.log_text() for server in servers)
    reads, by_phase = after - before, phases.totals()
    load = merge_load(loads)
    stale = checks.stale()
    hits = Counter(r.headers.get("x-cache", "-") for r in checks.reads if r.cached)
    with capsys.disabled():
        print(
            f"\n[replica freshness] {ran:.1f} s, 2 instances x {LOAD_CONCURRENCY} connections, "
            f"replay paused {clock.paused_seconds():.1f} s in "
            f"{sum(e == 'paused' for _, e in clock.events)} pauses: "
            f"{len(checks.reads)} reads checked after {checks.writes} writes "
            f"(cached reads {dict(hits)}), {len(stale)} stale; "
            f"replica served {reads.describe()} database reads (replay paused "
            f"{by_phase['paused'].describe()}, replaying {by_phase['replaying'].describe()}); "
            f"loadtest {load['requests']} requests "
            f"({load['writes']} writes), {load['requests_per_second']}/s, statuses "
            f"{load['statuses']}, errors {load['errors']}, p50 {load['p50_ms']} ms, p99 "
            f"{load['p99_ms']} ms, cache hit ratio {load['cache_hit_ratio']}; checker writes "
            f"refused {checks.refused_writes}; total {time.monotonic() - started:.1f} s"
        )
        for read in stale[:20]:
            print(f"[replica freshness] STALE: {read.describe(clock)}")
    assert not stale, f"{len(stale)} stale reads; first: {stale[0].describe(clock)}"
    assert not checks.bad_writes, checks.bad_writes
    assert not checks.failed_reads, [read.describe(clock) for read in checks.failed_reads[:5]]
    assert all(retry for _, retry in checks.refused_writes), checks.refused_writes
    assert len(checks.reads) > MIN_CHECKS
    fives = {s: n for s, n in load["statuses"].items() if s.startswith("5") and s != "503"}
    assert not fives, load
    assert not load["errors"], load
    assert reads.replica > 0, reads
    assert "Traceback" not in logs, logs[-3000:]
