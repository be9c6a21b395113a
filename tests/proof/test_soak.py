"""A soak: the project's own load tool drives mixed reads and writes at a real `service serve`
over PostgreSQL and Redis, while the test watches memory, connections and freshness.

The CI run is short (SOAK_SECONDS, 30 by default). The long run documented in
docs/reliability.md is the same test with a bigger budget:

    SOAK_SECONDS=600 .venv/bin/pytest tests/proof/test_soak.py -q -p no:cacheprovider

What it asserts:
- no 5xx and no transport error in the load tool's JSON report (there are no injected faults);
- the server's resident memory grows by less than RSS_SLOPE_LIMIT over the second half of
  the run (least-squares slope of one sample a second; the first half is warm-up);
- afterwards the pool gauge `db_pool_checked_out` is back to 0, PostgreSQL holds at most
  `pool_size + max_overflow` sessions per worker for the database, none `idle in transaction`;
- a freshness checker running alongside finds no stale response: it reads a URL through the
  cache, then with `Cache-Control: no-cache`, and where no write ran anywhere in between
  (known from the server's request log, which gives every write's start and end) the two
  bodies must be equal. A cached read that differs from the database read right after it,
  with no write in between, can only be stale.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import os
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis

from tests.conftest import TOKEN
from tests.ops.conftest import (
    metric_value,
    serve_settings,
    sessions_of,
)
from tests.ops.servers import Served, run_loadtest, serve
from tests.proof.conftest import proof_database

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))
SOAK_CONCURRENCY = int(os.environ.get("SOAK_CONCURRENCY", "8"))
SOAK_WORKERS = int(os.environ.get("SOAK_WORKERS", "1"))
REDIS_URL = os.environ.get("SOAK_REDIS_URL", "redis://127.0.0.1:6379/0")
# MB a minute over the second half. A process that keeps something per request grows with
# the request count (100-150 a second on a busy 2-core CI machine): a leak of 1 KiB a request
# is 6-9 MB/min. In 30 s the allocator's arenas and the pools still settle in steps, so the
# short run allows 5 MB/min (measured: +1.7 and +2.2); the long run (SOAK_SECONDS >= 300) is
# held to 1 MB/min (measured over 300 s: +0.26).
RSS_SLOPE_LIMIT = float(
    os.environ.get("SOAK_RSS_SLOPE_LIMIT", "1.0" if SOAK_SECONDS >= 300 else "5.0")
)
POOL_SIZE, MAX_OVERFLOW = 10, 10
WRITE_MARGIN = 0.010  # seconds around each logged write: the log's clock has ms resolution
AUTH = {"Authorization": f"Bearer {TOKEN}"}

# URLs whose answers the scenario's writes change; each is read by the load tool as well.
FRESHNESS_URLS = (
    "/groups/2?fields=id,display_name",
    "/users/7?include=groups",
    "/users?sort=-id&limit=5&fields=id,name",
    "/groups/1/users?sort=-id&limit=5&fields=id,name",
    "/groups?sort=-id&limit=3&include=users&fields[users]=id",
    "/users?filter[groups.name]=admins&count=true&limit=1&fields=id",
)


def scenario() -> dict[str, Any]:
    """Reads of several include shapes (and the checker's URLs), ~6% writes.

    Every read does the same work at the end as at the start, so a rising RSS means a
    leak: no read embeds all the users of a group, into which the writes keep adding
    users (at 300 requests/s that grew those responses by thousands of rows a run, and
    the allocator's high-water mark with them)."""
    reads = [
        ("/users", {"fields": "id,name", "include": "groups", "limit": "100"}, 6),
        ("/users", {"limit": "50"}, 2),
        ("/users/1", {"include": "groups.permissions"}, 2),
        ("/groups", {"include": "permissions", "limit": "20"}, 2),
        ("/groups/2/users", {"sort": "-created", "limit": "50"}, 1),
        ("/permissions", {"include": "groups", "limit": "10"}, 1),
        ("/users", {"filter[display_name][contains]": "an", "count": "true"}, 1),
    ]
    requests: list[dict[str, Any]] = [
        {"path": path, "params": params, "weight": weight} for path, params, weight in reads
    ]
    for url in FRESHNESS_URLS:
        path, _, query = url.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&"))
        requests.append({"path": path, "params": params, "weight": 0.5})
    requests += [
        {
            "name": "POST /users",
            "path": "/users",
            "method": "POST",
            "auth": True,
            "body": {"name": "s{unique}", "email_address": "{unique}@soak.test", "group_ids": [1]},
            "weight": 0.5,
        },
        {
            "name": "POST /groups",
            "path": "/groups",
            "method": "POST",
            "auth": True,
            "body": {"name": "g{unique}", "user_ids": [1, 2]},
            "weight": 0.15,
        },
        {
            "name": "PATCH /groups/2",
            "path": "/groups/2",
            "method": "PATCH",
            "auth": True,
            "body": {"display_name": "soak {unique}"},
            "weight": 0.25,
        },
        {
            "name": "PATCH /users/7",
            "path": "/users/7",
            "method": "PATCH",
            "auth": True,
            "body": {"display_name": "soak {unique}"},
            "weight": 0.25,
        },
    ]
    return {"name": "soak-mixed", "requests": requests}


# --- the database, the cache prefix --------------------------------------------------------


async def drop_prefix(prefix: str) -> int:
    """Delete this run's Redis keys (and only those)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        await client.aclose()


# --- memory -----------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc/*/stat."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def slope_mb_per_minute(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, KiB) in MB a minute."""
    xs = [t for t, _ in samples]
    ys = [kib / 1024 for _, kib in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if not spread:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread * 60


async def sample_rss(pid: int, stop: asyncio.Event, out: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while not stop.is_set():
        out.append((time.monotonic() - started, rss_kib(process_tree(pid))))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


# --- freshness --------------------------------------------------------------------------------


@dataclass
class Comparison:
    url: str
    started: float  # wall clock, before the cached read was sent
    ended: float  # wall clock, after the no-cache read came back
    equal: bool
    cached_outcome: str


@dataclass
class Freshness:
    comparisons: list[Comparison] = field(default_factory=list)
    bad_statuses: list[tuple[str, int, int]] = field(default_factory=list)
    transport_errors: int = 0


async def check_freshness(base_url: str, stop: asyncio.Event, out: Freshness) -> None:
    """Cached read, then a no-cache read, for each URL in turn until told to stop."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as http:
        while not stop.is_set():
            for url in FRESHNESS_URLS:
                started = time.time()
                try:
                    cached = await http.get(url)
                    fresh = await http.get(url, headers={"Cache-Control": "no-cache"})
                except httpx.HTTPError:
                    out.transport_errors += 1
                    continue
                ended = time.time()
                if cached.status_code != 200 or fresh.status_code != 200:
                    out.bad_statuses.append((url, cached.status_code, fresh.status_code))
                    continue
                out.comparisons.append(
                    Comparison(
                        url,
                        started,
                        ended,
                        cached.content == fresh.content,
                        cached.headers.get("x-cache", "-"),
                    )
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)


def write_windows(log: str) -> list[tuple[float, float]]:
    """(start, end) wall-clock seconds of every write the server logged."""
    windows = []
    for raw in log.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(raw)
            if record.get("logger") != "service.requests" or record["method"] == "GET":
                continue
            end = datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
            end_s = end.replace(tzinfo=UTC).timestamp() + 0.001  # the log truncates to ms
            windows.append((end_s - record["duration_ms"] / 1000, end_s))
    return sorted(windows)


class WriteIndex:
    """Answers "did any write run during [a, b]?" in O(log n)."""

    def __init__(self, windows: list[tuple[float, float]]) -> None:
        self.starts = [start - WRITE_MARGIN for start, _ in windows]
        self.latest_end: list[float] = []
        latest = float("-inf")
        for _, end in windows:
            latest = max(latest, end + WRITE_MARGIN)
            self.latest_end.append(latest)

    def overlaps(self, a: float, b: float) -> bool:
        index = bisect.bisect_right(self.starts, b) - 1
        return index >= 0 and self.latest_end[index] >= a


# --- the run ----------------------------------------------------------------------------------


async def run_load_tool(
    base_url: str, scenario_path: Path, stop: asyncio.Event
) -> tuple[dict[str, Any], str]:
    """`python -m service loadtest ... --json`, bounded in time; killed if it overruns."""
    try:
        return await run_loadtest(
            base_url, "-s", str(scenario_path), "-c", str(SOAK_CONCURRENCY), seconds=SOAK_SECONDS
        )
    finally:
        stop.set()


async def pool_gauge_settles(server: Served) -> float:
    """`db_pool_checked_out` once it reaches 0 (or whatever it shows after 10 s)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
        for _ in range(100):
            value = metric_value((await http.get("/metrics")).text, "db_pool_checked_out")
            if value == 0:
                return value
            await asyncio.sleep(0.1)
        return value


async def settled_sessions(database: str) -> list[dict[str, Any]]:
    """The database's client sessions once none is busy any more (at most 10 s)."""
    rows: list[dict[str, Any]] = []
    for _ in range(100):
        rows = [dict(row) for row in await sessions_of(database)]
        if all(row["state"] == "idle" for row in rows):
            break
        await asyncio.sleep(0.1)
    return rows


def report(capsys: pytest.CaptureFixture[str], lines: list[str]) -> None:
    with capsys.disabled():
        print("\n" + "\n".join(f"[soak] {line}" for line in lines))


@pytest.mark.slow
async def test_a_mixed_soak_stays_correct_flat_and_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"svc_proof_{uuid.uuid4().hex[:12]}"
    scenario_path = tmp_path / "soak.json"
    scenario_path.write_text(json.dumps(scenario()))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    settings = serve_settings(
        "",
        cache_url=REDIS_URL,
        cache_prefix=prefix,
        pool_size=str(POOL_SIZE),
        max_overflow=str(MAX_OVERFLOW),
    )
    try:
        async with proof_database() as (database, url):
            settings["database_url"] = url
            with serve(settings, log_dir=log_dir, workers=SOAK_WORKERS, name="soak") as server:
                stop = asyncio.Event()
                samples: list[tuple[float, int]] = []
                freshness = Freshness()
                sampler = asyncio.create_task(sample_rss(server.process.pid, stop, samples))
                checker = asyncio.create_task(check_freshness(server.url, stop, freshness))
                try:
                    load, _ = await run_load_tool(server.url, scenario_path, stop)
                finally:
                    stop.set()
                    await asyncio.gather(sampler, checker)
                checked_out = await pool_gauge_settles(server)
                sessions = await settled_sessions(database)
                log = server.log_text()
    finally:
        await drop_prefix(prefix)

    fives = {status: n for status, n in load["statuses"].items() if status.startswith("5")}
    half = [(t, kib) for t, kib in samples if t >= samples[-1][0] / 2]
    slope = slope_mb_per_minute(half)
    index = WriteIndex(write_windows(log))
    overlapped = [index.overlaps(c.started, c.ended) for c in freshness.comparisons]
    clean = [c for c, busy in zip(freshness.comparisons, overlapped, strict=True) if not busy]
    stale = [c for c in clean if not c.equal]
    explained = sum(
        1 for c, busy in zip(freshness.comparisons, overlapped, strict=True) if busy and not c.equal
    )
    clean_hits = sum(1 for c in clean if c.cached_outcome == "HIT")
    states = sorted({row["state"] for row in sessions})
    report(
        capsys,
        [
            f"{SOAK_SECONDS:g} s, {SOAK_CONCURRENCY} connections, {SOAK_WORKERS} worker(s)",
            f"load: {load['requests']} requests, {load['requests_per_second']}/s, "
            f"latency {load['latency_ms']}, statuses {load['statuses']}, "
            f"errors {load['errors']}, cache hit ratio {load['cache_hit_ratio']}",
            f"by request: {load['by_request']}",
            f"RSS: {samples[0][1] / 1024:.1f} MB at start, {max(k for _, k in samples) / 1024:.1f} "
            f"MB peak, {samples[-1][1] / 1024:.1f} MB at end; slope over the second half "
            f"{slope:+.2f} MB/min ({len(half)} samples; limit {RSS_SLOPE_LIMIT} MB/min), "
            f"{slope * 1024 * 1024 / 60 / load['requests_per_second']:+.0f} bytes a request",
            f"pool: db_pool_checked_out {checked_out:g} after the run; PostgreSQL sessions "
            f"{len(sessions)} (limit {(POOL_SIZE + MAX_OVERFLOW) * SOAK_WORKERS}), states {states}",
            f"freshness: {len(freshness.comparisons)} comparisons, {len(clean)} with no write "
            f"in between ({clean_hits} of them served as HIT), {explained} differences "
            f"explained by a concurrent write, {len(stale)} stale; "
            f"non-200 {freshness.bad_statuses[:5]}, transport errors {freshness.transport_errors}",
        ],
    )
    assert fives == {}, load["statuses"]
    assert load["errors"] == {}, load["errors"]
    assert set(load["statuses"]) <= {"200", "201"}, load["statuses"]
    assert load["by_request"].get("POST /users", 0) > 0
    assert load["by_request"].get("PATCH /groups/2", 0) > 0
    assert slope < RSS_SLOPE_LIMIT, f"RSS grows {slope:.2f} MB/min after warm-up"
    assert checked_out == 0
    assert len(sessions) <= (POOL_SIZE + MAX_OVERFLOW) * SOAK_WORKERS
    assert "idle in transaction" not in states, sessions
    assert freshness.bad_statuses == []
    assert freshness.transport_errors == 0
    assert len(clean) >= 20, "too few comparisons without a concurrent write to mean anything"
    assert clean_hits > 0, "the checker never read through a cache hit"
    assert stale == [], stale[:5]
    assert TOKEN not in log
    assert '"status":5' not in log.replace(" ", "")
