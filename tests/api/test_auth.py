"""Bearer tokens on writes and reads, and the private attribute `users.email_address`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.api.test_writes import TABLES, assert_problem
from tests.conftest import TOKEN, DatabaseFactory

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
PROBLEM = "application/problem+json"
USER = {"name": "zed", "email_address": "zed@example.com"}
USER_DEFAULTS = {"id", "name", "display_name", "created"}


async def row_counts(url: str) -> dict[str, int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return {
                table: int(
                    (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                )
                for table in TABLES
            }
    finally:
        await engine.dispose()


# --- writes need a valid bearer token --------------------------------------------------------

BAD_AUTHORIZATION = [
    None,
    "Bearer",
    "Bearer ",
    "Basic x",
    f"Basic {TOKEN}",
    "bearer  wrong",
    "Bearer wrong",
    f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}",
    f"Token {TOKEN}",
    TOKEN,
]
WRITES = [
    ("POST", "/users", USER),
    ("POST", "/groups", {"name": "g"}),
    ("POST", "/permissions", {"name": "p"}),
    ("PATCH", "/users/1", {"display_name": "x"}),
    ("PATCH", "/groups/1", {"display_name": "x"}),
    ("DELETE", "/permissions/1", None),
]


@pytest.fixture(scope="module")
async def refusing_url(databases: DatabaseFactory) -> str:
    """An empty database shared by the tests whose writes are all refused; each checks it
    stays empty (a fresh PostgreSQL database per test costs a checkpoint to drop)."""
    return await databases.migrated()


def _headers(authorization: str | None) -> dict[str, str]:
    return {} if authorization is None else {"Authorization": authorization}


async def _send(
    client: httpx.AsyncClient, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


async def test_a_write_without_a_valid_token_is_one_and_the_same_401(
    refusing_url: str, make_client: MakeClient
) -> None:
    client = await make_client(refusing_url)
    bodies: set[str] = set()
    for method, path, body in WRITES:
        for authorization in BAD_AUTHORIZATION:
            response = await _send(client, method, path, body, _headers(authorization))
            problem = assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer"), authorization
            problem.pop("instance", None)
            bodies.add(repr(sorted(problem.items())))
    assert len(bodies) == 1, bodies  # missing, malformed and wrong look exactly alike
    assert await row_counts(refusing_url) == dict.fromkeys(TABLES, 0)


async def test_the_token_is_checked_before_the_body(
    refusing_url: str, make_client: MakeClient
) -> None:
    client = await make_client(refusing_url)
    for content, content_type in (
        (b"{not json", "application/json"),
        (b"x" * 5000, "text/plain"),
        (b'{"id": 1}', "application/json"),
    ):
        response = await client.post(
            "/users", content=content, headers={"Content-Type": content_type}
        )
        assert_problem(response, 401)
    assert await row_counts(refusing_url) == dict.fromkeys(TABLES, 0)


async def test_with_no_tokens_configured_every_write_is_refused(
    refusing_url: str, make_client: MakeClient
) -> None:
    client = await make_client(refusing_url, api_tokens=())
    for method, path, body in WRITES:
        for token in (TOKEN, "anything", ""):
            response = await _send(client, method, path, body, _headers(f"Bearer {token}"))
            assert_problem(response, 401)
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert_problem(await _send(client, method, path, body, {}), 401)
    assert await row_counts(refusing_url) == dict.fromkeys(TABLES, 0)


# --- reads: public by default, but a bad token is never anonymous ----------------------------

READ_PATHS = ["/users", "/users/1", "/groups/1/users", "/permissions?include=groups"]


@pytest.mark.parametrize("path", READ_PATHS)
async def test_a_read_presenting_an_invalid_token_is_401(
    client: httpx.AsyncClient, auth: dict[str, str], path: str
) -> None:
    assert (await client.get(path)).status_code == 200
    assert (await client.get(path, headers=auth)).status_code == 200
    for authorization in BAD_AUTHORIZATION[1:]:
        response = await client.get(path, headers=_headers(authorization))
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "data" not in response.json()


async def test_with_no_tokens_configured_reads_stay_public_but_tokens_are_refused(
    refusing_url: str, make_client: MakeClient
) -> None:
    client = await make_client(refusing_url, api_tokens=())
    assert (await client.get("/users")).status_code == 200
    assert_problem(await client.get("/users", headers=_headers(f"Bearer {TOKEN}")), 401)


async def test_read_requires_token_closes_reads_without_one(
    database_url: str, make_client: MakeClient
) -> None:
    client = await make_client(database_url, read_requires_token=True)
    created = await client.post("/users", json=USER, headers=_headers(f"Bearer {TOKEN}"))
    assert created.status_code == 201
    for path in ("/users", "/users/1", "/users/1/groups", "/groups", "/permissions/1/groups"):
        response = await client.get(path)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert_problem(await client.get(path, headers=_headers("Bearer wrong")), 401)
        assert (await client.get(path, headers=_headers(f"Bearer {TOKEN}"))).status_code in {
            200,
            404,
        }
    listed = await client.get("/users", headers=_headers(f"Bearer {TOKEN}"))
    assert listed.json()["data"][0]["email_address"] == "zed@example.com"
    assert (await client.get("/healthz")).status_code == 200


async def test_a_cached_private_response_is_not_served_to_an_anonymous_caller(
    database_url: str, make_client: MakeClient
) -> None:
    client = await make_client(database_url)
    token = _headers(f"Bearer {TOKEN}")
    assert (await client.post("/users", json=USER, headers=token)).status_code == 201
    for path in ("/users", "/users/1", "/groups?include=users"):
        private = await client.get(path, headers=token)
        assert private.status_code == 200
        again = await client.get(path, headers=token)
        assert again.status_code == 200
        anonymous = await client.get(path)
        assert anonymous.status_code == 200
        assert "email_address" not in anonymous.text
        assert "zed@example.com" not in anonymous.text
    assert "zed@example.com" in (await client.get("/users", headers=token)).text


# --- the private attribute -------------------------------------------------------------------


async def test_email_address_is_in_the_default_selection_only_with_a_token(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    cases = [
        ("/users", lambda body: body["data"]),
        ("/users/1", lambda body: [body["data"]]),
        ("/groups/1/users", lambda body: body["data"]),
        ("/groups?include=users", lambda body: [u for g in body["data"] for u in g["users"]]),
        (
            "/permissions?include=groups.users",
            lambda body: [u for p in body["data"] for g in p["groups"] for u in g["users"]],
        ),
    ]
    for path, users_of in cases:
        anonymous = users_of((await client.get(path)).json())
        private = users_of((await client.get(path, headers=auth)).json())
        assert anonymous, path
        assert all(set(user) == USER_DEFAULTS for user in anonymous), path
        assert all(set(user) == USER_DEFAULTS | {"email_address"} for user in private), path
        assert all("@" in user["email_address"] for user in private)


PRIVATE_CHANNELS = [
    ("/users", {"fields": "email_address"}),
    ("/users", {"fields": "id,email_address"}),
    ("/users", {"fields": " email_address , name"}),
    ("/groups", {"include": "users", "fields[users]": "email_address"}),
    ("/permissions", {"include": "groups.users", "fields[groups.users]": "id,email_address"}),
    ("/users", {"filter[email_address]": "alice@example.com"}),
    ("/users", {"filter[email_address][contains]": "example"}),
    ("/users", {"filter[email_address][isnull]": "false"}),
    ("/groups", {"filter[users.email_address]": "alice@example.com"}),
    ("/permissions", {"filter[groups.users.email_address][startswith]": "a"}),
    ("/users", {"sort": "email_address"}),
    ("/users", {"sort": "-email_address"}),
    ("/users", {"sort": "name,-email_address"}),
    ("/users/1", {"fields": "email_address"}),
    ("/users/1", {"fields": "name,email_address"}),
    ("/groups/1", {"include": "users", "fields[users]": "email_address"}),
    ("/groups/1/users", {"fields": "email_address"}),
    ("/groups/1/users", {"filter[email_address]": "alice@example.com"}),
    ("/groups/1/users", {"filter[email_address][contains]": "a"}),
    ("/groups/1/users", {"sort": "email_address"}),
    ("/groups/1/users", {"sort": "-email_address"}),
    ("/users/1/groups", {"include": "users", "fields[users]": "email_address"}),
    ("/users/1/groups", {"filter[users.email_address]": "alice@example.com"}),
    ("/permissions/1/groups", {"include": "users", "fields[users]": "name,email_address"}),
]


@pytest.mark.parametrize(("path", "params"), PRIVATE_CHANNELS)
async def test_naming_email_address_without_a_token_is_403(
    client: httpx.AsyncClient, auth: dict[str, str], path: str, params: dict[str, str]
) -> None:
    problem = assert_problem(await client.get(path, params=params), 403)
    assert any(key.startswith(item["parameter"]) for item in problem["errors"] for key in params)
    with_token = await client.get(path, params=params, headers=auth)
    assert with_token.status_code == 200, with_token.text


async def test_with_a_token_email_address_filters_and_sorts(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    everyone = await client.get(
        "/users", params={"fields": "id,email_address", "limit": "500"}, headers=auth
    )
    addresses = {user["id"]: user["email_address"] for user in everyone.json()["data"]}
    assert len(addresses) == 60
    one = sorted(addresses.values())[7]
    exact = await client.get(
        "/users", params={"filter[email_address]": one, "fields": "email_address"}, headers=auth
    )
    assert exact.json()["data"] == [{"email_address": one}]
    needle = one.split("@")[0][:3].upper()
    contains = await client.get(
        "/users",
        params={"filter[email_address][contains]": needle, "fields": "id", "limit": "500"},
        headers=auth,
    )
    expected = {i for i, address in addresses.items() if needle.lower() in address.lower()}
    assert {user["id"] for user in contains.json()["data"]} == expected
    for sort, reverse in (("email_address", False), ("-email_address", True)):
        ordered = await client.get(
            "/users", params={"sort": sort, "fields": "email_address", "limit": "500"}, headers=auth
        )
        got = [user["email_address"] for user in ordered.json()["data"]]
        assert got == sorted(addresses.values(), reverse=reverse)


async def test_a_misspelt_name_never_suggests_the_private_attribute_anonymously(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for params in ({"fields": "email_adress"}, {"sort": "emailaddress"}):
        anonymous = assert_problem(await client.get("/users", params=params), 400)
        assert "email_address" not in anonymous["detail"]
        with_token = assert_problem(await client.get("/users", params=params, headers=auth), 400)
        assert "email_address" in with_token["detail"]


async def test_any_configured_token_opens_writes_whose_responses_may_hold_email_address(
    database_url: str, make_client: MakeClient
) -> None:
    client = await make_client(database_url, api_tokens=("other-token", TOKEN))
    token = _headers(f"Bearer {TOKEN}")
    created = await client.post("/users", json=USER, headers=token)
    for authorization in (f"bearer {TOKEN}", "Bearer other-token", "BEARER other-token"):
        name = f"u{len(authorization)}{authorization[1]}"
        body = {"name": name, "email_address": f"{name}@example.com"}
        response = await client.post("/users", json=body, headers=_headers(authorization))
        assert response.status_code == 201, (authorization, response.text)
    assert created.json()["data"]["email_address"] == "zed@example.com"
    shaped = await client.post(
        "/groups",
        params={"fields": "name", "include": "users", "fields[users]": "email_address"},
        json={"name": "crew", "user_ids": [created.json()["data"]["id"]]},
        headers=token,
    )
    assert shaped.status_code == 201, shaped.text
    assert shaped.json()["data"] == {
        "name": "crew",
        "users": [{"email_address": "zed@example.com"}],
    }
    patched = await client.patch(
        "/users/1", params={"fields": "email_address"}, json={"display_name": "Z"}, headers=token
    )
    assert patched.json() == {"data": {"email_address": "zed@example.com"}}
