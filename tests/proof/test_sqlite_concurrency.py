"""SQLite under concurrency through a real `service serve`: 20 writers and 20 readers at once.

No request is a 500 ('database is locked' may become a 503, which is counted and reported);
every write acknowledged with 201/200 is in the file afterwards, read with plain sqlite3.
"""

from __future__ import annotations

import asyncio
import collections
import random
import sqlite3
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN
from tests.ops.servers import serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRITERS = 20
READERS = 20
RUN_SECONDS = 8.0
MAX_OPS_PER_TASK = 2000
SEEDED_USERS = 200  # `serve` seeds an empty SQLite file with the demo sizes
SEEDED_GROUPS = 20
CLIENT_TIMEOUT = 35.0  # above the service's own 30 s request deadline: its 503 comes first
READ_PATHS = (
    "/users?fields=id,name&include=groups&limit=50",
    "/users?sort=-created&limit=20&count=true",
    "/groups?include=users&fields[users]=name&limit=5",
    "/users?filter[name][startswith]=w&fields=id,name,display_name&limit=100",
)


@dataclass
class UserState:
    """What one writer knows of one of its users: the values the database may now hold."""

    id: int
    name: str
    display_names: set[str | None]
    group_sets: set[frozenset[int]]


@dataclass
class Tally:
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    users: dict[str, UserState] = field(default_factory=dict)
    unacknowledged: list[str] = field(default_factory=list)  # names POSTed and answered 503
    problems: list[str] = field(default_factory=list)

    def record(self, kind: str, response: httpx.Response, seconds: float) -> None:
        self.statuses[(kind, response.status_code)] += 1
        self.latencies.append(seconds)
        if response.status_code == 503 and "retry-after" not in response.headers:
            self.problems.append(f"{kind}: 503 without Retry-After")
        if response.status_code >= 500 and response.status_code != 503:
            self.problems.append(f"{kind}: {response.status_code} {response.text[:300]}")


async def timed(
    tally: Tally, kind: str, request: Awaitable[httpx.Response]
) -> httpx.Response | None:
    """The response, or None when the connection failed: that is a failure of the run too,
    recorded with when it happened so the server's log can be read beside it."""
    started = time.perf_counter()
    try:
        response = await request
    except httpx.TransportError as error:
        at = time.strftime("%H:%M:%S", time.gmtime())
        tally.problems.append(f"{kind}: {type(error).__name__} at {at} UTC: {error}")
        return None
    tally.record(kind, response, time.perf_counter() - started)
    return response


def user_body(name: str, groups: list[int]) -> dict[str, object]:
    return {
        "name": name,
        "email_address": f"{name}@proof.example",
        "display_name": f"{name} v0",
        "group_ids": groups,
    }


async def writer(
    http: httpx.AsyncClient, tally: Tally, number: int, deadline: float, rng: random.Random
) -> None:
    """POST users (singly and in fives), then PATCH them, one request at a time."""
    mine: list[UserState] = []
    for step in range(MAX_OPS_PER_TASK):
        if time.monotonic() > deadline:
            return
        if step % 3 == 2 and mine:
            await patch_one(http, tally, rng.choice(mine), rng)
            continue
        size = 5 if step % 4 == 0 else 1
        names = [f"w{number:02d}{uuid.uuid4().hex[:10]}" for _ in range(size)]
        groups = [[rng.randint(1, SEEDED_GROUPS)] for _ in names]
        bodies = [user_body(n, g) for n, g in zip(names, groups, strict=True)]
        payload: object = bodies if size > 1 else bodies[0]
        kind = "post batch" if size > 1 else "post"
        response = await timed(
            tally, kind, http.post("/users?fields=id,name", json=payload, headers=AUTH)
        )
        if response is None or response.status_code == 503:
            tally.unacknowledged.extend(names)
        if response is None or response.status_code != 201:
            continue
        data = response.json()["data"]
        for item, group in zip(data if size > 1 else [data], groups, strict=True):
            state = UserState(item["id"], item["name"], {f"{item['name']} v0"}, {frozenset(group)})
            tally.users[state.name] = state
            mine.append(state)


async def patch_one(
    http: httpx.AsyncClient, tally: Tally, state: UserState, rng: random.Random
) -> None:
    display = f"{state.name} {uuid.uuid4().hex[:6]}"
    groups = sorted({rng.randint(1, SEEDED_GROUPS) for _ in range(2)})
    response = await timed(
        tally,
        "patch",
        http.patch(
            f"/users/{state.id}?fields=id",
            json={"display_name": display, "group_ids": groups},
            headers=AUTH,
        ),
    )
    if response is not None and response.status_code == 200:
        state.display_names = {display}
        state.group_sets = {frozenset(groups)}
    elif response is None or response.status_code == 503:
        # Not acknowledged: it may or may not have happened.
        state.display_names.add(display)
        state.group_sets.add(frozenset(groups))


async def reader(
    http: httpx.AsyncClient, tally: Tally, deadline: float, rng: random.Random
) -> None:
    for step in range(MAX_OPS_PER_TASK):
        if time.monotonic() > deadline:
            return
        if step % 2:
            path = f"/users/{rng.randint(1, SEEDED_USERS)}?include=groups"
        else:
            path = rng.choice(READ_PATHS)
        response = await timed(tally, "read", http.get(path))
        if response is not None and response.status_code not in (200, 503):
            tally.problems.append(f"read {path}: {response.status_code} {response.text[:200]}")


def stored_users(path: Path, names: list[str]) -> dict[str, tuple[int, str | None, frozenset[int]]]:
    connection = sqlite3.connect(path)
    try:
        found: dict[str, tuple[int, str | None, frozenset[int]]] = {}
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = connection.execute(
                f"SELECT id, name, display_name FROM auth_user WHERE name IN ({marks})", chunk
            ).fetchall()
            for identifier, name, display in rows:
                groups = connection.execute(
                    "SELECT group_id FROM auth_user_group WHERE user_id = ?", (identifier,)
                ).fetchall()
                found[name] = (identifier, display, frozenset(g for (g,) in groups))
        return found
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "busy_timeout_ms"),
    [(1, None), (2, None), (2, 10)],
    ids=["one_worker", "two_workers", "two_workers_short_busy_timeout"],
)
async def test_sqlite_takes_20_writers_and_20_readers(
    tmp_path: Path, workers: int, busy_timeout_ms: int | None
) -> None:
    """The third case makes lock waits give up after 10 ms: 'database is locked' is then
    common, and must come out as a 503 with Retry-After, never a 500."""
    database = tmp_path / "proof.db"
    settings = {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "api_tokens": TOKEN,
        "cursor_secret": "proof-secret",
        "cache_url": "memory://",
        "log_level": "INFO",  # the server helper counts workers by their startup lines
    }
    if busy_timeout_ms is not None:
        settings["sqlite_busy_timeout_ms"] = str(busy_timeout_ms)
    tally = Tally()
    rng = random.Random(8)
    # Idle connections are dropped by the client before uvicorn's 5 s keep-alive drops them:
    # otherwise a request sent as the server closes an idle connection fails, a race of the
    # client's pool, not of the service.
    limits = httpx.Limits(max_connections=WRITERS + READERS + 5, keepalive_expiry=2.0)
    with serve(settings, log_dir=tmp_path, workers=workers, name="sqlite") as served:
        async with httpx.AsyncClient(
            base_url=served.url, timeout=CLIENT_TIMEOUT, limits=limits
        ) as http:
            started = time.perf_counter()
            deadline = time.monotonic() + RUN_SECONDS
            await asyncio.gather(
                *(
                    writer(http, tally, n, deadline, random.Random(rng.random()))
                    for n in range(WRITERS)
                ),
                *(
                    reader(http, tally, deadline, random.Random(rng.random()))
                    for _ in range(READERS)
                ),
            )
            elapsed = time.perf_counter() - started
        # Warnings, errors and the workers' comings and goings (a worker that died shows here).
        log_notes = [
            line
            for line in served.log_text().splitlines()
            if '"level":"info"' not in line or "process" in line
        ][-30:]

    found = stored_users(database, list(tally.users))
    missing = [name for name in tally.users if name not in found]
    wrong = [
        (name, state, found[name])
        for name, state in tally.users.items()
        if name in found
        and (
            found[name][0] != state.id
            or found[name][1] not in state.display_names
            or found[name][2] not in state.group_sets
        )
    ]
    committed_anyway = len(stored_users(database, tally.unacknowledged))
    latencies = sorted(tally.latencies)
    unavailable = sum(n for (_kind, status), n in tally.statuses.items() if status == 503)
    print(
        f"\n[sqlite x{workers} worker(s), busy timeout {busy_timeout_ms or 'default'}] "
        f"{len(latencies)} requests in {elapsed:.1f}s "
        f"({len(latencies) / elapsed:.0f}/s); statuses {dict(sorted(tally.statuses.items()))}; "
        f"503s {unavailable}; latency p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms, max {latencies[-1]:.2f}s; "
        f"acknowledged users {len(tally.users)}, missing {len(missing)}, wrong {len(wrong)}; "
        f"users POSTed with a 503 answer {len(tally.unacknowledged)}, stored anyway "
        f"{committed_anyway}"
    )
    assert tally.problems == [], (tally.problems[:10], log_notes)
    assert missing == []
    assert wrong == [], wrong[:5]
    assert len(tally.users) > WRITERS
    assert {status for (_kind, status) in tally.statuses} <= {200, 201, 503}
