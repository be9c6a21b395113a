"""Arbitrary query strings, id spellings, methods and headers at every read route: never a
500, always JSON, problems for 4xx, no body for HEAD."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.query.canonical import binding
from tests.conftest import TOKEN, make_test_settings
from tests.test_cursor import forge, make_query, sorts_private

SECRET = b"test-secret"  # make_test_settings' CURSOR_SECRET
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ROUTES = (
    "/users", "/groups", "/permissions", "/users/{id}", "/groups/{id}", "/permissions/{id}",
    "/users/{id}/groups", "/groups/{id}/users", "/groups/{id}/permissions",
    "/permissions/{id}/groups", "/{id}", "/users/", "//users", "/users//groups",
)  # fmt: skip
# Canonical ids and other spellings of them (only the canonical ones may find a row).
IDS = st.one_of(
    st.sampled_from(["1", "2", "01", "+1", "1_0", "%201", "1%20", "1.0", "-1", "0", "1e0",
                     "4294967296", "9" * 40, "%00", "%ff", "users"]),
    st.text(alphabet="0123456789+-_. %", max_size=6),
)  # fmt: skip
TOKENS = st.sampled_from([f"Bearer {TOKEN}", "Bearer wrong", "Basic abc", "", "Bearer"])
# Repeats of the headers both read paths read, list-valued and single ones alike.
HEADERS = st.lists(
    st.one_of(
        st.tuples(st.just("authorization"), TOKENS),
        st.tuples(st.just("if-none-match"), st.sampled_from(['"x"', "*", 'W/"y"', ""])),
        st.tuples(st.just("cache-control"), st.sampled_from(["no-cache", "max-age=0", "x"])),
        st.tuples(st.just("x-request-id"), st.sampled_from(["a", "b" * 200, "a\tb"])),
    ),
    max_size=4,
)
KEYS = (
    "fields", "include", "sort", "limit", "cursor", "count", "fields[groups]", "fields[users]",
    "fields[groups.permissions]", "filter[name]", "filter[id][gte]", "filter[created][lt]",
    "filter[groups.name]", "filter[display_name][contains]", "filter[id][in]", "filter[x][y][z]",
    "filter[email_address]", "fields[", "filter[]", "password",
)  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(["id", "name", "groups", "groups.permissions", "-created,name", "0", "500",
                     "2024-01-01T00:00:00Z", "true", "estimated", "email_address", "", ",", "a..b",
                     "9" * 30, "%00", "%ff", "users.groups.users.groups"]),
    st.text(max_size=30),
)  # fmt: skip
PAIRS = st.lists(
    st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), VALUES), max_size=6
)


def _query_string(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe='[].')}={quote(v, safe=',.-:')}" for k, v in pairs)


def test_arbitrary_query_strings_never_fail_the_server(seeded_url: str) -> None:
    with asyncio.Runner() as runner:
        app = create_app(make_test_settings(seeded_url))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            route=st.sampled_from(ROUTES),
            identifier=IDS,
            pairs=PAIRS,
            raw_tail=st.binary(max_size=20),
            method=st.sampled_from(["GET", "GET", "HEAD"]),
            headers=HEADERS,
        )
        def check(
            route: str,
            identifier: str,
            pairs: list[tuple[str, str]],
            raw_tail: bytes,
            method: str,
            headers: list[tuple[str, str]],
        ) -> None:
            query = _query_string(pairs)
            if raw_tail:
                query += "&" + quote(raw_tail, safe="")
            url = f"{route.replace('{id}', identifier)}?{query}"
            response = runner.run(client.request(method, url, headers=headers))
            assert response.status_code < 500, (url, headers, response.text)
            if response.status_code == 304:
                return
            if method == "HEAD":
                assert response.content == b""
                get = runner.run(client.get(url, headers=headers))
                assert (get.status_code, get.headers["content-type"]) == (
                    response.status_code,
                    response.headers["content-type"],
                )
                return
            authorizations = [value for name, value in headers if name == "authorization"]
            if len(authorizations) > 1:  # no identity: nothing is served
                assert response.status_code in (400, 404), (url, headers)
            content_type = response.headers["content-type"]
            if response.status_code >= 400:
                assert content_type == "application/problem+json"
                problem = response.json()
                assert problem["status"] == response.status_code
                assert problem["detail"]
            else:
                assert content_type == "application/json"
                assert "data" in response.json()
                assert "password" not in response.text

        try:
            check()
        finally:
            runner.run(client.aclose())
            runner.run(app.state.services.db.engine.dispose())


# Forged cursors, signed (or sealed) with the test secret, so they pass the MAC: their values
# are whatever a client with the secret could put there.
SORTS = ("", "sort=name", "sort=-created,name", "sort=display_name", "sort=-email_address")
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["2024-01-01T00:00:00", "2024-01-01T00:00:00+02:00", "9999-12-31T23:59:59"]),
)


def test_forged_cursors_are_typed_or_refused_never_a_server_error(seeded_url: str) -> None:
    with asyncio.Runner() as runner:
        app = create_app(make_test_settings(seeded_url))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            sort=st.sampled_from(SORTS),
            values=st.lists(JSON_SCALARS, max_size=4),
            method=st.sampled_from(["GET", "HEAD"]),
        )
        def check(sort: str, values: list[object], method: str) -> None:
            query = make_query(sort, "users")
            token = forge(
                json.dumps(values).encode(),
                binding(query),
                sealed=sorts_private(query),
                secret=SECRET,
            )
            url = f"/users?{sort}&cursor={quote(token)}"
            response = runner.run(client.request(method, url, headers=AUTH))
            assert response.status_code in (200, 400), (url, values, response.text)
            if response.status_code == 400 and method == "GET":
                assert response.json()["errors"][0]["parameter"] == "cursor"

        try:
            check()
        finally:
            runner.run(client.aclose())
            runner.run(app.state.services.db.engine.dispose())
