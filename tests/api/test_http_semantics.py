"""HTTP as RFC 9110 has it, the same on every path a read can take: HEAD, one URL per
resource, one identity per request, and request headers read one way (SPEC, Errors).

Each read check runs twice where it can: once cold (the slow case of serve_read) and once
warm (a cache hit, its fast case), so the two cases cannot differ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.api.test_writes import AUTH, assert_problem, user
from tests.conftest import TOKEN

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
SAME = ("content-type", "content-length", "etag", "cache-control", "vary", "allow")


@pytest.fixture
async def reader(seeded_url: str, make_client: MakeClient) -> httpx.AsyncClient:
    return await make_client(seeded_url)


HEAD_PATHS = [
    "/users?fields=id,name&include=groups&limit=3",
    "/users/2?include=groups",
    "/groups/1/users?limit=2",
    "/users/999999",
    "/users?fields=nmae",
    "/nowhere",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/docs",
]


@pytest.mark.parametrize("path", HEAD_PATHS)
async def test_head_answers_wherever_get_does_with_no_body(
    reader: httpx.AsyncClient, path: str
) -> None:
    for _ in range(2):  # a miss, then (where cached) a hit
        got = await reader.get(path)
        head = await reader.head(path)
        assert head.status_code == got.status_code, path
        assert head.content == b""
        assert [head.headers.get(k) for k in SAME] == [got.headers.get(k) for k in SAME]
        assert head.headers["x-request-id"]
        assert head.headers["server-timing"]


async def test_head_of_a_method_the_path_lacks_is_405_listing_head(
    reader: httpx.AsyncClient,
) -> None:
    response = await reader.put("/users/1")
    assert_problem(response, 405)
    assert response.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert (await reader.head("/users/1")).status_code == 200


# (`%31` is not among them: RFC 3986 makes it the same URL as `1`.)
ODD_IDS = ["01", "+1", "1_0", "%201", "1%20", "1.0", "-1", "0", "1e0", "one", "99999999999"]


@pytest.mark.parametrize("spelling", ODD_IDS)
async def test_an_id_has_one_spelling(reader: httpx.AsyncClient, spelling: str) -> None:
    canonical = await reader.get("/users/1")
    assert canonical.status_code == 200
    assert (await reader.get("/users/1")).status_code == 200  # cached: the hit path knows it
    for path in (f"/users/{spelling}", f"/users/{spelling}/groups", f"/users/{spelling}?fields=id"):
        assert_problem(await reader.get(path), 404)
        assert (await reader.head(path)).status_code == 404


@pytest.mark.parametrize("spelling", ["01", "+1", "1_0", "%201", "1.0"])
async def test_writes_know_one_spelling_of_an_id_too(
    database_url: str, make_client: MakeClient, spelling: str
) -> None:
    api = await make_client(database_url)
    assert (await api.post("/users", json=user("solo"), headers=AUTH)).status_code == 201
    changed = await api.patch(f"/users/{spelling}", json={"display_name": "x"}, headers=AUTH)
    assert_problem(changed, 404)
    assert_problem(await api.delete(f"/users/{spelling}", headers=AUTH), 404)
    assert (await api.get("/users/1")).json()["data"]["display_name"] is None


@pytest.mark.parametrize(
    "path", ["//users", "/users/", "/users//groups", "/users/1/", "/users/1/groups/", "///"]
)
async def test_a_resource_has_one_url_and_no_redirect_uses_the_host(
    reader: httpx.AsyncClient, path: str
) -> None:
    assert (await reader.get("/users")).status_code == 200
    response = await reader.get(path, headers={"Host": "evil.example"})
    assert_problem(response, 404)
    assert "location" not in response.headers


AUTHORIZATIONS = [
    ("invalid then valid", ["Bearer wrong", f"Bearer {TOKEN}"]),
    ("valid then invalid", [f"Bearer {TOKEN}", "Bearer wrong"]),
    ("valid twice", [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]),
]


@pytest.mark.parametrize(("case", "values"), AUTHORIZATIONS)
@pytest.mark.parametrize(
    "path",
    ["/users?fields=id,email_address", "/users?fields=id,name", "/users/1", "/users/1/groups"],
)
async def test_two_authorization_headers_are_refused_on_reads(
    reader: httpx.AsyncClient, case: str, values: list[str], path: str
) -> None:
    assert (await reader.get(path, headers=AUTH)).status_code == 200  # cached for the token
    headers = [("authorization", value) for value in values]
    response = await reader.get(path, headers=headers)
    problem = assert_problem(response, 400)
    assert problem["errors"][0]["parameter"] == "Authorization", case


@pytest.mark.parametrize(("case", "values"), AUTHORIZATIONS)
async def test_two_authorization_headers_are_refused_on_writes_and_write_nothing(
    database_url: str, make_client: MakeClient, case: str, values: list[str]
) -> None:
    api = await make_client(database_url)
    headers = [("authorization", value) for value in values]
    assert_problem(await api.post("/users", json=user("twice"), headers=headers), 400)
    assert (await api.get("/users")).json()["data"] == [], case


async def test_repeated_list_headers_are_read_as_one_list_on_every_path(
    reader: httpx.AsyncClient,
) -> None:
    path = "/groups?limit=2"
    first = await reader.get(path)
    etag = first.headers["etag"]
    # If-None-Match and Cache-Control are lists: repeats join (RFC 9110 5.3).
    revalidated = await reader.get(
        path, headers=[("if-none-match", '"x"'), ("if-none-match", etag)]
    )
    assert revalidated.status_code == 304
    refreshed = await reader.get(
        path, headers=[("cache-control", "max-stale"), ("cache-control", "no-cache")]
    )
    assert refreshed.headers["x-cache"] == "BYPASS"
    # X-Request-ID is not: two of them are no one id, so the service makes its own.
    twice = await reader.get(path, headers=[("x-request-id", "a"), ("x-request-id", "b")])
    assert twice.headers["x-request-id"] not in ("a", "b", "a, b")


@pytest.mark.parametrize(
    "order", [("text/plain", "application/json"), ("application/json", "text/plain")]
)
async def test_two_content_types_are_refused(
    database_url: str, make_client: MakeClient, order: tuple[str, str]
) -> None:
    api = await make_client(database_url)
    headers = [*AUTH.items(), *(("content-type", value) for value in order)]
    body = b'{"name": "ct", "email_address": "c@t.io"}'
    response = await api.post("/users", content=body, headers=headers)
    problem = assert_problem(response, 400)
    assert problem["errors"][0]["parameter"] == "Content-Type"
    assert (await api.get("/users")).json()["data"] == []
