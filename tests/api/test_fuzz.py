"""Arbitrary query strings at every GET route: never a 500, always JSON, problems for 4xx."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from tests.conftest import TOKEN, make_test_settings

ROUTES = (
    "/users", "/groups", "/permissions", "/users/1", "/groups/1", "/permissions/1",
    "/users/1/groups", "/groups/1/users", "/groups/1/permissions", "/permissions/1/groups",
)  # fmt: skip
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
            pairs=PAIRS,
            raw_tail=st.binary(max_size=20),
            token=st.sampled_from([None, TOKEN, "wrong"]),
        )
        def check(
            route: str, pairs: list[tuple[str, str]], raw_tail: bytes, token: str | None
        ) -> None:
            query = _query_string(pairs)
            if raw_tail:
                query += "&" + quote(raw_tail, safe="")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = runner.run(client.get(f"{route}?{query}", headers=headers))
            assert response.status_code < 500, (route, query, response.text)
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
