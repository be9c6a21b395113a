"""Abusive requests are refused before the database is touched: right status, a clear problem,
fast, and not a single pooled connection checked out nor a statement run.

Each case runs against an app whose engine is warm (one real read went through it first), on
both backends. The time of a rejection is measured in-process through httpx's ASGI transport,
so it is the service's own cost plus the client's, with no network. The machine may be busy
with other suites, so the median is asserted and the maximum is reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import event

from service.app import create_app
from tests.conftest import TOKEN, DatabaseFactory, app_of, make_test_settings

PROBLEM = "application/problem+json"
BUDGET_MS = 50.0
REPETITIONS = 7
MAX_BODY = 1_048_576
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    """One abusive request: what to send, which status, and words the detail must hold."""

    name: str
    method: str
    path: str
    status: int
    detail: str
    parameter: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Callable[[], Any] | None = None  # a fresh body per repetition (streams are one-shot)
    deep: bool = False  # the app allowing include depth 4, so 11 paths are reachable
    repetitions: int = REPETITIONS

    def send_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers}
        if self.body is not None:
            kwargs["content"] = self.body()
        return kwargs


def _csv(items: Iterable[object]) -> str:
    return ",".join(str(item) for item in items)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _nested_objects(depth: int) -> bytes:
    return b'{"name":' * depth + b"1" + b"}" * depth


async def _streamed(size: int) -> AsyncIterator[bytes]:
    """A chunked body with no Content-Length: the limit must hold while reading, too."""
    chunk = b" " * 65_536
    for _ in range(size // len(chunk) + 1):
        yield chunk


# 21 distinct (attribute, operator) filters on users, each valid on its own.
_FILTERS = [f"filter[id][{op}]=1" for op in ("eq", "ne", "lt", "lte", "gt", "gte", "in")]
_FILTERS += ["filter[id][isnull]=false", "filter[name][isnull]=false"]
_FILTERS += [
    f"filter[name][{op}]=a" for op in ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains")
]
_FILTERS += ["filter[name][startswith]=a", "filter[display_name][contains]=a"]
_FILTERS += ["filter[display_name][startswith]=a", "filter[created][isnull]=false"]
assert len(_FILTERS) == 21, len(_FILTERS)

# 11 include paths on groups (counting the parents a nested path implies): 12 exist at depth 4.
_ELEVEN_PATHS = (
    "users.groups.users.groups,users.groups.permissions.groups,"
    "permissions.groups.users.groups,permissions.groups.permissions"
)

CASES = [
    Case("limit=501", "GET", "/users?limit=501", 400, "between 1 and 500", "limit"),
    Case("limit=0", "GET", "/users?limit=0", 400, "between 1 and 500", "limit"),
    Case("limit=-1", "GET", "/users?limit=-1", 400, "positive integer", "limit"),
    Case("limit=abc", "GET", "/users?limit=abc", 400, "positive integer", "limit"),
    Case(
        "include depth 4",
        "GET",
        "/groups?include=users.groups.users.groups",
        400,
        "at most 3 deep",
        "include",
    ),
    Case(
        "filter path of 1,000 names",
        "GET",
        "/users?filter[" + ".".join(["groups"] * 1000) + "]=a",
        400,
        "a path has at most 32 names",
    ),
    Case(
        "fields path of 1,000 names",
        "GET",
        "/users?fields[" + ".".join(["groups"] * 1000) + "]=name",
        400,
        "a path has at most 32 names",
    ),
    Case(
        "11 include paths",
        "GET",
        f"/groups?include={_ELEVEN_PATHS}",
        400,
        "at most 10 include paths",
        "include",
        deep=True,
    ),
    Case("21 filters", "GET", "/users?" + "&".join(_FILTERS), 400, "at most 20 filters", "filter"),
    Case(
        "in with 1,500 values",
        "GET",
        "/users?filter[id][in]=" + _csv(iter(range(1, 1501))),
        400,
        "1 to 100",
        "filter[id][in]",
    ),
    Case(
        "fields with 1,000 names",
        "GET",
        "/users?fields=" + _csv(f"f{i}" for i in range(1000)),
        400,
        "unknown field 'f0' for users",
        "fields",
    ),
    Case(
        "fields with an unknown name",
        "GET",
        "/users?fields=id,nmae",
        400,
        "did you mean 'name'",
        "fields",
    ),
    Case(
        "sort with 1,000 unknown keys",
        "GET",
        "/users?sort=" + _csv(f"-s{i}" for i in range(1000)),
        400,
        "s0",
        "sort",
    ),
    Case(
        "private attribute without a token",
        "GET",
        "/users?fields=id,email_address",
        403,
        "email_address",
        "fields",
    ),
    Case(
        "wrong token",
        "GET",
        "/users",
        401,
        "bearer token",
        headers={"Authorization": "Bearer not-the-token"},
    ),
    Case("cursor garbage", "GET", "/users?cursor=garbage", 400, "cursor", "cursor"),
    Case("query not UTF-8", "GET", "/users?cursor=%FF%FE", 400, "UTF-8", "query"),
    Case("cursor forged", "GET", "/users?cursor=W10.AAAA", 400, "cursor", "cursor"),
    Case("URL over 8 KiB", "GET", "/users?fields=" + "a" * 8200, 414, "8192 bytes"),
    Case(
        "body over 1 MiB (declared)",
        "POST",
        "/users",
        413,
        f"{MAX_BODY} bytes",
        headers=JSON,
        body=lambda: b" " * (MAX_BODY + 1),
    ),
    Case(
        "body over 1 MiB (chunked)",
        "POST",
        "/users",
        413,
        f"{MAX_BODY} bytes",
        headers=JSON,
        body=lambda: _streamed(MAX_BODY + 1),
    ),
    Case(
        "batch of 1,001",
        "POST",
        "/users",
        422,
        "1 to 1000 objects, not 1001",
        headers=JSON,
        body=lambda: orjson.dumps(
            [{"name": f"b{i}", "email_address": f"b{i}@abuse.test"} for i in range(1001)]
        ),
    ),
    Case(
        "JSON arrays nested 10,000 deep",
        "POST",
        "/users",
        422,
        "not valid JSON",
        headers=JSON,
        body=lambda: _nested(10_000),
    ),
    Case(
        "JSON objects nested 10,000 deep",
        "PATCH",
        "/users/1",
        422,
        "not valid JSON",
        headers=JSON,
        body=lambda: _nested_objects(10_000),
    ),
    Case(
        "non-JSON content type",
        "POST",
        "/users",
        415,
        "application/json",
        headers={**AUTH, "Content-Type": "text/plain"},
        body=lambda: b"name=x",
    ),
]


class Touches:
    """Counts pool checkouts, new connections and statements on an app's engine."""

    def __init__(self, app: FastAPI) -> None:
        self.engine = app.state.services.db.engine.sync_engine
        self.checkouts = 0
        self.connects = 0
        self.statements: list[str] = []

    def _checkout(self, *_args: object) -> None:
        self.checkouts += 1

    def _connect(self, *_args: object) -> None:
        self.connects += 1

    def _statement(self, _conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        self.statements.append(statement)

    def __enter__(self) -> Touches:
        event.listen(self.engine, "checkout", self._checkout)
        event.listen(self.engine, "connect", self._connect)
        event.listen(self.engine, "before_cursor_execute", self._statement)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "checkout", self._checkout)
        event.remove(self.engine, "connect", self._connect)
        event.remove(self.engine, "before_cursor_execute", self._statement)


@pytest.fixture(scope="module")
async def abuse_clients(databases: DatabaseFactory) -> AsyncIterator[dict[bool, httpx.AsyncClient]]:
    """Two warm apps on one empty migrated database: default limits, and include depth 4."""
    url = await databases.migrated()
    apps = {
        False: create_app(make_test_settings(url, cache_url="none")),
        True: create_app(make_test_settings(url, cache_url="none", max_include_depth=4)),
    }
    clients = {
        deep: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proof")
        for deep, app in apps.items()
    }
    try:
        for http in clients.values():
            warm = await http.get("/users", params={"limit": "1"})  # opens the pool's connection
            assert warm.status_code == 200, warm.text
        yield clients
    finally:
        for deep, http in clients.items():
            await http.aclose()
            await apps[deep].state.services.db.engine.dispose()


def _assert_problem(case: Case, response: httpx.Response) -> None:
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == case.status
    assert problem["type"].startswith("https://")
    assert problem["title"]
    assert problem["detail"]
    assert case.detail in problem["detail"], problem["detail"]
    if case.parameter is not None:
        assert problem["errors"][0]["parameter"] == case.parameter, problem
    # Details quote the offending name, so a problem can echo the URL; never more than that.
    assert len(response.content) < 3 * 8192, "a problem document is bounded by the request"
    assert TOKEN not in response.text


# The longest include path an 8 KiB URL holds. parse_include materializes every prefix of
# every path (`path[:depth] for depth in 1..len(path)`) before the plan checks the depth, so
# its cost grows with the square of the path's length: 0.5-1 s of event-loop time here.
QUADRATIC_INCLUDE = Case(
    "include path of 4,000 names (8 KiB)",
    "GET",
    "/users?include=" + ".".join(["a"] * 4000),
    400,
    "a path has at most 32 names",
    "include",
    repetitions=3,
)
PARAMS = [
    *(pytest.param(case, id=case.name) for case in CASES),
    # Once quadratic in the path's length (0.5-1 s for 8 KiB); now refused past 32 names.
    pytest.param(QUADRATIC_INCLUDE, id=QUADRATIC_INCLUDE.name),
]


@pytest.mark.parametrize("case", PARAMS)
async def test_an_abusive_request_is_refused_fast_without_a_connection(
    case: Case,
    backend: str,
    abuse_clients: dict[bool, httpx.AsyncClient],
    capsys: pytest.CaptureFixture[str],
) -> None:
    http = abuse_clients[case.deep]
    app = app_of(http)
    pool = app.state.services.db.engine.sync_engine.pool
    await http.request(case.method, case.path, **case.send_kwargs())  # warms this code path
    timings: list[float] = []
    with Touches(app) as touches:
        for _ in range(case.repetitions):
            started = time.perf_counter()
            response = await http.request(case.method, case.path, **case.send_kwargs())
            timings.append((time.perf_counter() - started) * 1000)
            _assert_problem(case, response)
    median, worst = statistics.median(timings), max(timings)
    with capsys.disabled():
        print(
            f"\n[abuse:{backend}] {case.name:<34} {case.status}  "
            f"median {median:6.2f} ms  max {worst:6.2f} ms  "
            f"checkouts {touches.checkouts}  statements {len(touches.statements)}"
        )
    assert touches.checkouts == 0, f"{touches.checkouts} pool checkouts for a refused request"
    assert touches.connects == 0
    assert touches.statements == []
    assert pool.checkedout() == 0
    assert median < BUDGET_MS, f"median {median:.2f} ms, max {worst:.2f} ms"


async def test_the_limits_are_exact_boundaries(
    abuse_clients: dict[bool, httpx.AsyncClient],
) -> None:
    """The limits refuse one past the bound, not at it: 500, 20 filters, 100 values, depth 3."""
    http = abuse_clients[False]
    twenty = "&".join(_FILTERS[:20])
    accepted = [
        "/users?limit=500",
        "/users?limit=1",
        "/groups?include=users.groups.users",
        f"/users?{twenty}",
        "/users?filter[id][in]=" + _csv(iter(range(1, 101))),
        "/users?fields=" + _csv(["id", "name"] * 500),
    ]
    for path in accepted:
        response = await http.get(path)
        assert response.status_code == 200, (path[:80], response.text[:300])
    deep = abuse_clients[True]
    ten = _ELEVEN_PATHS.replace("permissions.groups.users.groups", "permissions.groups.users")
    response = await deep.get(f"/groups?include={ten}")
    assert response.status_code == 200, response.text[:300]
    batch = [{"name": f"ok{i}", "email_address": f"ok{i}@abuse.test"} for i in range(1000)]
    response = await http.post("/users?fields=id", content=orjson.dumps(batch), headers=JSON)
    assert response.status_code == 201, response.text[:300]
    assert len(response.json()["data"]) == 1000
