"""The embedded-lists benchmark: each group's newest members (top-N per parent), on PostgreSQL.

One throwaway database filled by set-based SQL (users, groups of skewed sizes, memberships);
then, interleaved in rounds, the service's `include=users&limit[users]=5&sort[users]=-created`
(with and without `count[users]=true`) beside the two ways around it written by hand on
asyncpg (load every member and trim in Python; one query per group), a plain page of 250
users (the goal's yardstick: the top-N page within 3x of it) and the two SQL shapes the
top-N statement can take (LATERAL per parent, or a `row_number()` window). Every way must
return the same groups, members and counts before anything is timed; EXPLAIN (ANALYZE,
BUFFERS) then says how many buffers and rows each one read.
"""

from __future__ import annotations

import asyncio
import heapq
import secrets
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.deps import Services
from service.bench.common import BenchError, in_process, postgres_stack, throwaway_database
from service.bench.paging import DEFAULT_ADMIN_URL
from service.db import UNCOUNTED
from service.migrations import run_upgrade
from service.settings import Settings

PAGE, TOP, PLAIN_PAGE = 50, 5, 250
GOAL = 3.0  # the top-N page within this many times a plain page of PLAIN_PAGE rows
WARMUP_ROUNDS = 3
# A case whose first run (the cross-check's) takes longer than this is timed in only
# SLOW_REPEATS rounds spread over the run, without warm-up: one query per group takes
# over a minute a page at the default sizes.
SLOW_SECONDS, SLOW_REPEATS = 2.0, 3
# Group sizes follow a Zipf law over a hashed rank (weight rank^-SKEW), so the page of the
# first 50 groups by id mixes large and small ones; at the default sizes the largest group
# has about 160,000 members and the smallest about 640.
SKEW = 0.8
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
LATEST = datetime(9999, 12, 31)

COUNTED_PATH = (
    f"/groups?include=users&limit[users]={TOP}&sort[users]=-created&count[users]=true&limit={PAGE}"
)
TOP_PATH = f"/groups?include=users&limit[users]={TOP}&sort[users]=-created&limit={PAGE}"
PLAIN_PATH = f"/users?limit={PLAIN_PAGE}"

SERVICE_COUNTED = "(c) service, top 5 + count"
SERVICE_TOP = "(c) service, top 5"
ALL_MEMBERS = "(a) all members, trim in Python"
PER_GROUP = "(b) one query per group"
PLAIN_SERVICE = "(d) service, 250 users"
PLAIN_HAND = "(d) by hand, 250 users"
LATERAL = "SQL: LATERAL + count"
WINDOW = "SQL: row_number + count"
LATERAL_ONLY = "SQL: LATERAL, no count"
COUNTS_ONLY = "SQL: counts alone"
CASES = (
    SERVICE_COUNTED, SERVICE_TOP, ALL_MEMBERS, PER_GROUP, PLAIN_SERVICE, PLAIN_HAND,
    LATERAL, WINDOW, LATERAL_ONLY, COUNTS_ONLY,
)  # fmt: skip

# The fill. `created` steps 97 s (about 3 years over 1M users) in the order of the ids'
# md5 hashes: distinct, and unrelated to the id, to the hash order of the groups and to
# membership; the rows still go in in id order, as an append-only table's would. A group's
# members are `owner * 7919 + j * P` modulo the user count for j below its size: P = 2^31 - 1
# is prime and larger than any int id, so the members of one group are distinct users.
CREATED = (
    "timestamp '2021-01-01' + interval '97 seconds' * row_number() OVER (ORDER BY md5(i::text))"
)
FILL_USERS = f"""
INSERT INTO auth_user (id, name, display_name, created, email_address)
SELECT i, 'user' || i, 'User ' || i, {CREATED}, 'user' || i || '@bench.invalid'
FROM generate_series(1, $1::bigint) AS i ORDER BY i
"""
FILL_GROUPS = f"""
INSERT INTO auth_group (id, name, display_name, created)
SELECT i, 'group' || i, 'Group ' || i, {CREATED} FROM generate_series(1, $1::bigint) AS i
ORDER BY i
"""
FILL_MEMBERSHIPS = f"""
INSERT INTO auth_user_group (user_id, group_id)
WITH ranked AS (
    SELECT id, power(row_number() OVER (ORDER BY md5('size' || id)), -{SKEW}) AS weight
    FROM auth_group
), sized AS (
    SELECT id, least($1::bigint, round($2::bigint * weight / sum(weight) OVER ())::bigint) AS size
    FROM ranked
)
SELECT (id * 7919 + j * 2147483647) % $1::bigint + 1, id
FROM sized CROSS JOIN LATERAL generate_series(0, size - 1) AS j
ORDER BY 1, 2
"""
# Loading without the secondary indexes and foreign keys, then building them once, takes
# about a third of the time of maintaining them row by row.
SECONDARY_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid), 'DROP INDEX ' || i.indexrelid::regclass::text
FROM pg_index i WHERE i.indrelid = ANY($1::regclass[])
AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)
"""
FOREIGN_KEYS = """
SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname,
              pg_get_constraintdef(oid)),
       format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname)
FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY($1::regclass[])
"""
FILLED = ("auth_user", "auth_user_group")

# The hand-written reads.
GROUPS_PAGE = "SELECT id, name, display_name, created FROM auth_group ORDER BY id LIMIT $1"
USERS_PAGE = "SELECT id, name, display_name, created FROM auth_user ORDER BY id LIMIT $1"
MEMBER = "u.id, u.name, u.display_name, u.created"
JUNCTION = "auth_user_group ug JOIN auth_user u ON u.id = ug.user_id"
ALL_MEMBERS_SQL = f"SELECT ug.group_id, {MEMBER} FROM {JUNCTION} WHERE ug.group_id = ANY($1)"
GROUP_TOP_SQL = (
    f"SELECT {MEMBER} FROM {JUNCTION} WHERE ug.group_id = $1 ORDER BY u.created DESC, u.id LIMIT $2"
)
GROUP_COUNT_SQL = "SELECT count(*) FROM auth_user_group WHERE group_id = $1"
# The two shapes of the top-N statement, for the page's group ids ($1) and N ($2).
TOP_LATERAL = (
    f"SELECT {MEMBER} FROM {JUNCTION} WHERE ug.group_id = k.owner "
    "ORDER BY u.created DESC, u.id LIMIT $2"
)
COUNT_LATERAL = "SELECT count(*) AS total FROM auth_user_group WHERE group_id = k.owner"
LATERAL_SQL = f"""
SELECT k.owner, m.id, m.name, m.display_name, m.created, c.total
FROM unnest($1::int[]) AS k(owner)
CROSS JOIN LATERAL ({COUNT_LATERAL}) AS c
LEFT JOIN LATERAL ({TOP_LATERAL}) AS m ON true
ORDER BY k.owner, m.created DESC, m.id
"""
LATERAL_ONLY_SQL = f"""
SELECT k.owner, m.id, m.name, m.display_name, m.created
FROM unnest($1::int[]) AS k(owner) CROSS JOIN LATERAL ({TOP_LATERAL}) AS m
ORDER BY k.owner, m.created DESC, m.id
"""
WINDOW_SQL = f"""
SELECT owner, id, name, display_name, created, total FROM (
    SELECT ug.group_id AS owner, {MEMBER},
           row_number() OVER (PARTITION BY ug.group_id ORDER BY u.created DESC, u.id) AS rn,
           count(*) OVER (PARTITION BY ug.group_id) AS total
    FROM {JUNCTION} WHERE ug.group_id = ANY($1::int[])
) AS ranked
WHERE rn <= $2 ORDER BY owner, rn
"""
COUNTS_SQL = (
    f"SELECT k.owner, c.total FROM unnest($1::int[]) AS k(owner), LATERAL ({COUNT_LATERAL}) AS c"
)
# Each shape: (returns members, returns counts).
SQL_SHAPES = {
    LATERAL: (True, True), WINDOW: (True, True), LATERAL_ONLY: (True, False),
    COUNTS_ONLY: (False, True),
}  # fmt: skip

Statement = tuple[str, tuple[Any, ...]]
Top = dict[int, tuple[tuple[int, ...], int]]  # group id -> (its top member ids, its count)


@dataclass(frozen=True, slots=True)
class Reads:
    """What EXPLAIN (ANALYZE, BUFFERS) saw for one run of a case, summed over its statements."""

    statements: int
    buffers: int  # shared buffers hit + read
    rows: int  # rows the table and index scans read (returned + filtered out), x loops


@dataclass(frozen=True, slots=True)
class Timing:
    case: str
    samples: int
    median_ms: float
    p95_ms: float
    reads: Reads


@dataclass(frozen=True, slots=True)
class Fill:
    users: int
    groups: int
    memberships: int
    seconds: float  # inserts and index builds
    vacuum_seconds: float
    largest: int  # members of the largest group
    smallest: int
    page_members: int  # members of the page's groups, all of which the exact counts count


@dataclass(frozen=True, slots=True)
class EmbeddedReport:
    fill: Fill
    repeats: int
    environment: tuple[tuple[str, str], ...]
    timings: tuple[Timing, ...]
    top: Top  # what every way agreed on
    plans: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (label, key lines) with --explain
    warnings: tuple[str, ...] = ()

    def timing(self, case: str) -> Timing:
        return next(t for t in self.timings if t.case == case)

    def ratio(self, case: str, to: str = PLAIN_SERVICE) -> float:
        return self.timing(case).median_ms / self.timing(to).median_ms


class Fetcher(Protocol):
    """The two asyncpg calls the hand-written reads make (a connection, or a recorder)."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Case:
    name: str
    run: Callable[[], Awaitable[Any]]
    statements: Callable[[], Awaitable[list[Statement]]]  # what one run sends, to EXPLAIN


async def run_embedded(
    *,
    admin_url: str | None,
    users: int,
    groups: int,
    memberships: int,
    repeats: int,
    explain: bool = False,
) -> EmbeddedReport:
    """Fill a throwaway database beside `admin_url`, check that every way agrees, time them."""
    if min(users, groups, repeats) < 1 or memberships < 0:
        raise BenchError("users, groups and repeats must be 1 or more")
    if memberships > users * groups:
        raise BenchError(f"{users} users in {groups} groups make at most {users * groups} pairs")
    async with throwaway_database(admin_url or DEFAULT_ADMIN_URL) as url:
        await asyncio.to_thread(run_upgrade, url)
        fill = await fill_database(url, users=users, groups=groups, memberships=memberships)
        settings = Settings(database_url=url, cache_url="none", cursor_secret=secrets.token_hex(16))
        async with in_process(settings) as (client, app), _pool(url) as pool:
            services: Services = app.state.services
            cases = await _build_cases(client, services.db.engine, pool)
            results, slow = await _first_runs(cases)
            top = cross_check(results)
            samples = await _measure(cases, repeats=repeats, slow=slow)
            reads, plans = await _explain(cases, pool)
            environment = await _environment(pool)
    timings = tuple(
        Timing(name, len(times), statistics.median(times), _p95(times), reads[name])
        for name, times in samples.items()
    )
    return EmbeddedReport(
        fill=replace(fill, page_members=sum(count for _, count in top.values())),
        repeats=repeats,
        environment=environment,
        timings=timings,
        top=top,
        plans=plans if explain else (),
        warnings=_warnings(reads),
    )


async def fill_database(url: str, *, users: int, groups: int, memberships: int) -> Fill:
    """Users, groups and skewed memberships by INSERT ... SELECT, then VACUUM (ANALYZE)."""
    connection = await asyncpg.connect(_dsn(url))
    try:
        started = time.perf_counter()
        async with connection.transaction():
            indexes = await connection.fetch(SECONDARY_INDEXES, list(FILLED))
            keys = await connection.fetch(FOREIGN_KEYS, list(FILLED))
            for _, drop in [*keys, *indexes]:
                await connection.execute(drop)
            await connection.execute(FILL_USERS, users)
            await connection.execute(FILL_GROUPS, groups)
            await connection.execute(FILL_MEMBERSHIPS, users, memberships)
            for create, _ in [*indexes, *keys]:
                await connection.execute(create)
            for table, rows in (("auth_user", users), ("auth_group", groups)):
                await connection.execute(
                    "SELECT setval(pg_get_serial_sequence($1, 'id'), $2)", table, rows
                )
        filled = time.perf_counter()
        # VACUUM as well as ANALYZE: every run then starts with the visibility map set
        # (index-only scans skip the heap) instead of racing autovacuum to it.
        await connection.execute("VACUUM (ANALYZE)")
        vacuumed = time.perf_counter()
        sizes = await connection.fetchrow(
            "SELECT count(*), max(n), min(n), sum(n)::bigint FROM "
            "(SELECT count(*) AS n FROM auth_user_group GROUP BY group_id) AS s"
        )
    finally:
        await connection.close()
    return Fill(
        users=users,
        groups=groups,
        memberships=sizes[3] or 0,
        seconds=filled - started,
        vacuum_seconds=vacuumed - filled,
        largest=sizes[1] or 0,
        smallest=(sizes[2] or 0) if sizes[0] == groups else 0,
        page_members=0,
    )


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def _pool(url: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(_dsn(url), min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def _build_cases(client: httpx.AsyncClient, engine: AsyncEngine, pool: Any) -> list[_Case]:
    async with pool.acquire() as connection:
        ids = [row[0] for row in await connection.fetch(GROUPS_PAGE, PAGE)]

    def hand(name: str, read: Callable[[Fetcher], Awaitable[Any]]) -> _Case:
        async def run() -> Any:
            async with pool.acquire() as connection:
                return await read(connection)

        async def statements() -> list[Statement]:
            async with pool.acquire() as connection:
                recorder = _Recorder(connection)
                await read(recorder)
            return recorder.sent

        return _Case(name, run, statements)

    def service(name: str, path: str) -> _Case:
        return _Case(name, _http(client, path), lambda: _captured(client, engine, path))

    return [
        service(SERVICE_COUNTED, COUNTED_PATH),
        service(SERVICE_TOP, TOP_PATH),
        hand(ALL_MEMBERS, all_members_body),
        hand(PER_GROUP, per_group_body),
        service(PLAIN_SERVICE, PLAIN_PATH),
        hand(PLAIN_HAND, plain_page_body),
        hand(LATERAL, lambda db: db.fetch(LATERAL_SQL, ids, TOP)),
        hand(WINDOW, lambda db: db.fetch(WINDOW_SQL, ids, TOP)),
        hand(LATERAL_ONLY, lambda db: db.fetch(LATERAL_ONLY_SQL, ids, TOP)),
        hand(COUNTS_ONLY, lambda db: db.fetch(COUNTS_SQL, ids)),
    ]


class _Recorder:
    """Runs the calls on the connection and keeps each statement with its arguments."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.sent: list[Statement] = []

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.sent.append((query, args))
        return list(await self.connection.fetch(query, *args))

    async def fetchval(self, query: str, *args: Any) -> Any:
        self.sent.append((query, args))
        return await self.connection.fetchval(query, *args)


async def all_members_body(db: Fetcher) -> bytes:
    """(a) The page of groups, then every member of them in one statement; trim in Python."""
    groups = await db.fetch(GROUPS_PAGE, PAGE + 1)
    page = groups[:PAGE]
    members: dict[int, list[Any]] = defaultdict(list)
    for row in await db.fetch(ALL_MEMBERS_SQL, [group["id"] for group in page]):
        members[row["group_id"]].append(row)
    items = []
    for group in page:
        rows = members.get(group["id"], [])
        newest = heapq.nsmallest(TOP, rows, key=lambda row: (LATEST - row["created"], row["id"]))
        items.append(_group_item(group, newest, len(rows)))
    return _body(items, groups, "/groups")


async def per_group_body(db: Fetcher) -> bytes:
    """(b) The page of groups, then per group its newest members and its count: 1 + 2N."""
    groups = await db.fetch(GROUPS_PAGE, PAGE + 1)
    items = []
    for group in groups[:PAGE]:
        newest = await db.fetch(GROUP_TOP_SQL, group["id"], TOP)
        count = await db.fetchval(GROUP_COUNT_SQL, group["id"])
        items.append(_group_item(group, newest, count))
    return _body(items, groups, "/groups")


async def plain_page_body(db: Fetcher) -> bytes:
    """(d) The yardstick by hand: one statement, dicts, one dumps."""
    users = await db.fetch(USERS_PAGE, PLAIN_PAGE + 1)
    return _body([_member(row) for row in users[:PLAIN_PAGE]], users, "/users")


def _member(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "display_name": row["display_name"],
            "created": row["created"]}  # fmt: skip


def _group_item(group: Any, members: Sequence[Any], count: int) -> dict[str, Any]:
    item = _member(group)
    item["users"] = [_member(row) for row in members]
    item["users_count"] = count
    return item


def _body(items: list[dict[str, Any]], rows: Sequence[Any], path: str) -> bytes:
    """The service's envelope, with the plain last id as the cursor (it signs its own)."""
    limit = len(items)
    cursor = str(items[-1]["id"]) if len(rows) > limit else None
    link = f"{path}?limit={limit}&cursor={cursor}" if cursor else None
    envelope = {"data": items, "meta": {"next_cursor": cursor}, "links": {"next": link}}
    return orjson.dumps(envelope, option=JSON_OPTIONS)


def _http(client: httpx.AsyncClient, path: str) -> Callable[[], Awaitable[bytes]]:
    async def run() -> bytes:
        response = await client.get(path)
        if response.status_code != 200:
            raise BenchError(f"GET {path} answered {response.status_code}: {response.text}")
        return response.content

    return run


async def _captured(client: httpx.AsyncClient, engine: AsyncEngine, path: str) -> list[Statement]:
    """The statements (with their driver arguments) one request runs, session plumbing left out."""
    sent: list[Statement] = []

    def record(_c: Any, _cursor: Any, statement: str, args: Any, context: Any, _m: bool) -> None:
        if not context.execution_options.get(UNCOUNTED):
            sent.append((statement, tuple(args or ())))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await _http(client, path)()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    return sent


def cross_check(results: dict[str, Any]) -> Top:
    """Every way must give the same groups, members, order and counts, or timing them is moot."""
    expected = orjson.loads(results[ALL_MEMBERS])["data"]
    for name in (PER_GROUP, SERVICE_COUNTED):
        _same(name, orjson.loads(results[name])["data"], expected)
    uncounted = [{k: v for k, v in group.items() if k != "users_count"} for group in expected]
    _same(SERVICE_TOP, orjson.loads(results[SERVICE_TOP])["data"], uncounted)
    plain = orjson.loads(results[PLAIN_HAND])["data"]
    if orjson.loads(results[PLAIN_SERVICE])["data"] != plain:
        raise BenchError(f"GET {PLAIN_PATH} disagrees with the same page by hand")
    top = {g["id"]: (tuple(u["id"] for u in g["users"]), g["users_count"]) for g in expected}
    for name, (members, counted) in SQL_SHAPES.items():
        ids: dict[int, list[int]] = defaultdict(list)
        counts: dict[int, int] = {}
        for row in results[name]:
            if members and row["id"] is not None:
                ids[row["owner"]].append(row["id"])
            if counted:
                counts[row["owner"]] = row["total"]
        for group, (top_ids, count) in top.items():
            if members and tuple(ids[group]) != top_ids:
                raise BenchError(f"{name}: group {group} gives {ids[group]}, (a) {top_ids}")
            # The window has no row for a group without members: its count is 0.
            if counted and counts.get(group, 0) != count:
                raise BenchError(f"{name}: group {group} counts {counts.get(group)}, (a) {count}")
    return top


def _same(name: str, got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    if got == expected:
        return
    if [g["id"] for g in got] != [g["id"] for g in expected]:
        raise BenchError(f"{name} returns other groups than {ALL_MEMBERS}")
    mine, theirs = next((a, b) for a, b in zip(got, expected, strict=True) if a != b)
    ids, expected_ids = [u["id"] for u in mine.get("users", [])], [u["id"] for u in theirs["users"]]
    if ids != expected_ids:
        detail = f"members {ids}, (a) {expected_ids}"
    elif mine.get("users_count") != theirs.get("users_count"):
        detail = f"users_count {mine.get('users_count')}, (a) {theirs.get('users_count')}"
    else:
        detail = (
            f"{orjson.dumps(mine).decode()[:300]} against {orjson.dumps(theirs).decode()[:300]}"
        )
    raise BenchError(f"{name} disagrees with {ALL_MEMBERS} on group {mine['id']}: {detail}")


async def _first_runs(cases: list[_Case]) -> tuple[dict[str, Any], set[str]]:
    """Each case's result, for the cross-check, and the names of the slow ones."""
    results: dict[str, Any] = {}
    slow: set[str] = set()
    for case in cases:
        started = time.perf_counter()
        results[case.name] = await case.run()
        if time.perf_counter() - started > SLOW_SECONDS:
            slow.add(case.name)
    return results, slow


async def _measure(cases: list[_Case], *, repeats: int, slow: set[str]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {case.name: [] for case in cases}
    every = max(1, repeats // SLOW_REPEATS)
    for round_ in range(WARMUP_ROUNDS + repeats):
        # Interleaved and rotated each round, so drift lands on every case alike.
        shift = round_ % len(cases)
        timed = round_ - WARMUP_ROUNDS
        for case in cases[shift:] + cases[:shift]:
            if case.name in slow and (
                timed < 0 or timed % every or len(samples[case.name]) >= SLOW_REPEATS
            ):
                continue
            started = time.perf_counter()
            await case.run()
            elapsed = (time.perf_counter() - started) * 1000
            if timed >= 0:
                samples[case.name].append(elapsed)
    return samples


def _p95(times: list[float]) -> float:
    if len(times) < 2:
        return times[0]
    return statistics.quantiles(times, n=20, method="inclusive")[18]


async def _explain(
    cases: list[_Case], pool: Any
) -> tuple[dict[str, Reads], tuple[tuple[str, tuple[str, ...]], ...]]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement each case sends, after the timing (warm)."""
    reads: dict[str, Reads] = {}
    plans: list[tuple[str, tuple[str, ...]]] = []
    for case in cases:
        statements = await case.statements()
        explained = []
        async with pool.acquire() as connection:
            for query, args in statements:
                raw = await connection.fetchval(
                    "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + query, *args
                )
                explained.append(orjson.loads(raw)[0])
        reads[case.name] = Reads(
            statements=len(statements),
            buffers=sum(e["Plan"]["Shared Hit Blocks"] + e["Plan"]["Shared Read Blocks"]
                        for e in explained),
            rows=sum(_rows_read(node) for e in explained for _, node in _nodes(e["Plan"])),
        )  # fmt: skip
        pairs = list(zip(statements, explained, strict=True))
        # One query per group sends 2 statements per group: show the first group's.
        for number, ((query, _), result) in enumerate(
            pairs[:3] if case.name == PER_GROUP else pairs
        ):
            label = f"{case.name} [{number + 1}/{len(statements)}]"
            plans.append((label, (" ".join(query.split()), *_key_lines(result))))
    return reads, tuple(plans)


def _nodes(plan: dict[str, Any], depth: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    yield depth, plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child, depth + 1)


def _rows_read(node: dict[str, Any]) -> int:
    """A table or index scan's rows, returned and filtered out; EXPLAIN gives them per loop."""
    if "Relation Name" not in node:
        return 0
    removed = node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Index Recheck", 0)
    return int((node["Actual Rows"] + removed) * node["Actual Loops"])


def _key_lines(result: dict[str, Any]) -> Iterator[str]:
    for depth, node in _nodes(result["Plan"]):
        where = f" on {node['Relation Name']}" if "Relation Name" in node else ""
        where += f" using {node['Index Name']}" if "Index Name" in node else ""
        removed = node.get("Rows Removed by Filter")
        yield (
            f"{'  ' * depth}{node['Node Type']}{where}: rows={node['Actual Rows']}"
            f" loops={node['Actual Loops']}"
            + (f" removed={removed}" if removed else "")
            + f" hit={node['Shared Hit Blocks']} read={node['Shared Read Blocks']}"
            f" {node['Actual Total Time']:.2f} ms"
        )
    yield f"Execution Time: {result['Execution Time']:.2f} ms"


def _warnings(reads: dict[str, Reads]) -> tuple[str, ...]:
    expected = {SERVICE_COUNTED: 2, SERVICE_TOP: 2, PLAIN_SERVICE: 1}
    return tuple(
        f"{name} ran {reads[name].statements} statements, {count} expected"
        for name, count in expected.items()
        if reads[name].statements != count
    )


async def _environment(pool: Any) -> tuple[tuple[str, str], ...]:
    async with pool.acquire() as connection:
        server = str(await connection.fetchval("SHOW server_version"))
    return postgres_stack(server)


def print_report(report: EmbeddedReport) -> None:
    """The table, the goal, which SQL shape won, then any plans."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    fill = report.fill
    console = Console(highlight=False, width=max(120, Console().width))
    title = (
        f"{fill.users:,} users, {fill.groups:,} groups, {fill.memberships:,} memberships "
        f"(groups of {fill.smallest:,} to {fill.largest:,}; filled in {fill.seconds:.1f} s, "
        f"VACUUM {fill.vacuum_seconds:.1f} s); the page's {len(report.top)} groups have "
        f"{fill.page_members:,} members; median and p95 of {report.repeats}"
    )
    table = Table(title=escape(title))
    header = ("case", "SQL", "n", "median ms", "p95 ms", "x (d) service", "x (d) by hand",
              "buffers", "rows read")  # fmt: skip
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for t in report.timings:
        table.add_row(
            t.case, str(t.reads.statements), str(t.samples), f"{t.median_ms:.2f}",
            f"{t.p95_ms:.2f}",
            f"{report.ratio(t.case):.2f}", f"{report.ratio(t.case, PLAIN_HAND):.2f}",
            f"{t.reads.buffers:,}", f"{t.reads.rows:,}",
        )  # fmt: skip
    console.print(table)
    for case in (SERVICE_COUNTED, SERVICE_TOP):
        ratio = report.ratio(case)
        verdict = "met" if ratio <= GOAL else "MISSED"
        console.print(f"{case}: {ratio:.2f}x the plain {PLAIN_PAGE}-row page (goal {GOAL:g}x): "
                      f"{verdict}", markup=False)  # fmt: skip
    lateral, window = report.timing(LATERAL).median_ms, report.timing(WINDOW).median_ms
    winner, factor = ("LATERAL", window / lateral) if lateral <= window else (
        "row_number", lateral / window)  # fmt: skip
    console.print(f"top-{TOP} SQL on PostgreSQL: {winner} faster by {factor:.2f}x "
                  f"({lateral:.2f} against {window:.2f} ms)", markup=False)  # fmt: skip
    console.print(", ".join(f"{k} {v}" for k, v in report.environment), markup=False)
    for line in report.warnings:
        console.print(line, markup=False)
    for label, lines in report.plans:
        console.print(f"\n-- {label}\n" + "\n".join(lines), markup=False, soft_wrap=True)
