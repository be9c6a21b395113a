"""See the SQL: `explain=sql|plan` shows a token holder the statements a read ran, their
parameter types (never values), durations and plans; never cached, never for anonymous
callers (issue 17, docs/api.md "See the SQL")."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.conftest import TOKEN, StatementLog, record_statements

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIST = "/users?fields=id,name&include=groups.permissions&fields[groups]=name&limit=3"


@pytest.fixture
async def reader(seeded_url: str, make_client: MakeClient) -> httpx.AsyncClient:
    return await make_client(seeded_url, cache_url="memory://")


def queries(response: httpx.Response) -> int:
    found = re.search(r'desc="(\d+) queries"', response.headers["server-timing"])
    assert found is not None
    return int(found.group(1))


async def test_the_statements_are_the_ones_the_read_ran(reader: httpx.AsyncClient) -> None:
    """The same body as without `explain`, plus each statement exactly as the engine ran it:
    1 + k of them, naming only the asked columns, parameters as types."""
    plain = await reader.get(LIST, headers=AUTH)
    log: StatementLog = record_statements(reader)
    response = await reader.get(f"{LIST}&explain=sql", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    report = body.pop("explain")
    assert body == plain.json()  # links carry no `explain`: the read is the same read
    assert report["count"] == 3 == len(report["statements"]) == queries(response)
    assert [s["sql"] for s in report["statements"]] == log.statements
    assert report["database"] == "primary"
    assert report["duration_ms"] >= max(s["duration_ms"] for s in report["statements"]) > 0
    first = report["statements"][0]["sql"]
    assert "auth_user.name" in first
    assert "email_address" not in first
    assert "display_name" not in first
    for statement in report["statements"]:
        assert statement["parameters"]
        assert all(isinstance(kind, str) for kind in statement["parameters"])
        assert "plan" not in statement


async def test_parameters_show_their_types_never_their_values(
    reader: httpx.AsyncClient,
) -> None:
    secret = "secret-probe-value"
    response = await reader.get(
        f"/users?fields=id&filter[email_address]={secret}&explain=sql", headers=AUTH
    )
    assert response.status_code == 200, response.text
    assert secret not in response.text
    assert response.json()["explain"]["statements"][0]["parameters"][0] == "str"


async def test_never_cached_and_never_served_from_the_cache(reader: httpx.AsyncClient) -> None:
    url = "/users?fields=id,name&limit=2"
    assert (await reader.get(url, headers=AUTH)).headers["x-cache"] == "MISS"
    assert (await reader.get(url, headers=AUTH)).headers["x-cache"] == "HIT"
    explained = await reader.get(f"{url}&explain=sql", headers=AUTH)
    assert explained.status_code == 200
    assert explained.headers["x-cache"] == "BYPASS"
    assert explained.headers["cache-control"] == "no-store"
    assert queries(explained) == 1 == explained.json()["explain"]["count"]
    # Nothing was stored for it: a new read asked with explain runs again, and the plain
    # read of another page is a miss, never the explained body.
    again = await reader.get(f"{url}&explain=sql", headers=AUTH)
    assert queries(again) == 1
    other = "/users?fields=id&limit=2"
    assert (await reader.get(f"{other}&explain=sql", headers=AUTH)).status_code == 200
    plain = await reader.get(other, headers=AUTH)
    assert plain.headers["x-cache"] == "MISS"
    assert "explain" not in plain.json()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_anonymous_callers_get_401_and_nothing_runs(
    reader: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await reader.get(f"{LIST}&explain=sql", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert queries(response) == 0


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ("explain=yes", "explain must be one of sql, plan"),
        ("explain=sql&explain=plan", "parameter 'explain' is given more than once"),
        ("explain=", "explain must be one of sql, plan"),
    ],
)
async def test_a_bad_explain_is_a_400(reader: httpx.AsyncClient, query: str, detail: str) -> None:
    response = await reader.get(f"/users?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["detail"] == detail
    assert response.json()["errors"][0]["parameter"] == "explain"


async def test_a_percent_encoded_name_is_the_same_parameter(reader: httpx.AsyncClient) -> None:
    response = await reader.get("/users?fields=id&limit=1&%65xplain=sql", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["explain"]["count"] == 1


async def test_a_read_that_is_refused_is_refused_the_same_way(reader: httpx.AsyncClient) -> None:
    response = await reader.get("/users?fields=nmae&explain=sql", headers=AUTH)
    assert response.status_code == 400
    assert "did you mean 'name'" in response.json()["detail"]
    missing = await reader.get("/users/999999?explain=sql", headers=AUTH)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "url",
    ["/users/1?fields=name&include=groups", "/groups/1/users?fields=id&limit=2&count=true"],
)
async def test_items_and_sub_collections_explain_themselves(
    reader: httpx.AsyncClient, url: str
) -> None:
    plain = await reader.get(url, headers=AUTH)
    response = await reader.get(f"{url}&explain=sql", headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    report = body.pop("explain")
    assert body == plain.json()
    assert report["count"] == len(report["statements"]) == queries(response) >= 2


async def test_plans_come_from_the_database_that_ran_the_read(
    reader: httpx.AsyncClient, backend: str
) -> None:
    url = "/users?fields=id,name&include=groups&filter[name][startswith]=a&limit=5"
    response = await reader.get(f"{url}&explain=plan", headers=AUTH)
    assert response.status_code == 200, response.text
    statements = response.json()["explain"]["statements"]
    assert len(statements) == 2 == queries(response)  # the EXPLAINs are not the read's
    for statement in statements:
        plan = statement["plan"]
        if backend == "postgres":
            assert plan[0]["Plan"]["Node Type"]
            assert "Actual Rows" in plan[0]["Plan"]  # ANALYZE: what the statement did
        else:
            assert plan
            assert all(isinstance(step, str) for step in plan)
    tables = " ".join(str(statement["plan"]) for statement in statements)
    assert "auth_user" in tables
    assert "auth_group" in tables


async def test_head_explains_nothing_more_than_get(reader: httpx.AsyncClient) -> None:
    url = f"{LIST}&explain=sql"
    get = await reader.get(url, headers=AUTH)
    head = await reader.head(url, headers=AUTH)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
