"""The columns loader and the ORM (selectinload) loader give the same bytes from the same SQL."""

from __future__ import annotations

import asyncio
import re

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.query.columns import build_children_select, build_page_select
from service.query.options import build_list_select
from service.query.params import parse_query_string
from service.query.plan import Limits, build_list_query
from tests.api.test_reads import SHAPES
from tests.conftest import AUTH, TOKEN, make_test_settings

RESOURCE_QUERIES = {
    "users": ["", "fields=name", "sort=-created,name", "filter[groups.name][startswith]=a",
              "sort=display_name&filter[display_name][isnull]=false", "fields=email_address,id"],
    "groups": ["", "sort=-display_name", "filter[users.id][lt]=20", "fields=created"],
    "permissions": ["", "sort=-name", "filter[description][contains]=e"],
}  # fmt: skip


def test_both_loaders_give_identical_bodies(seeded_url: str) -> None:
    with asyncio.Runner() as runner:
        apps = {
            loader: create_app(make_test_settings(seeded_url, cache_url="none", loader=loader))
            for loader in ("columns", "orm")
        }
        clients = {
            loader: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
            for loader, app in apps.items()
        }
        headers = {"Authorization": f"Bearer {TOKEN}"}

        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            shape=st.sampled_from(SHAPES),
            extra=st.data(),
            limit=st.integers(min_value=1, max_value=60),
        )
        def check(shape: tuple[str, tuple[str, ...]], extra: st.DataObject, limit: int) -> None:
            resource, include = shape
            query = extra.draw(st.sampled_from(RESOURCE_QUERIES[resource]))
            parts = [p for p in (query, f"limit={limit}") if p]
            if include:
                parts.append("include=" + ",".join(include))
            url = f"/{resource}?{'&'.join(parts)}"
            bodies = {
                name: runner.run(client.get(url, headers=headers))
                for name, client in clients.items()
            }
            assert bodies["columns"].status_code == bodies["orm"].status_code == 200, url
            assert bodies["columns"].content == bodies["orm"].content, url
            counts = {
                name: re.search(r'desc="(\d+) queries"', r.headers["server-timing"])
                for name, r in bodies.items()
            }
            assert counts["columns"]
            assert counts["orm"]
            # SQLAlchemy skips a level whose parents found nothing; the columns loader runs it.
            expected = 1 + len(include)
            assert int(counts["columns"].group(1)) == expected, url
            assert int(counts["orm"].group(1)) <= expected, url

        try:
            check()
        finally:
            for client in clients.values():
                runner.run(client.aclose())
            for app in apps.values():
                runner.run(app.state.services.db.engine.dispose())


def test_the_page_statement_selects_the_same_columns_as_the_orm_one() -> None:
    raw = parse_query_string("fields=name&include=groups&sort=-created")
    users = AUTH["users"]
    query = build_list_query(users, raw, private_ok=False, limits=Limits())
    orm_sql = str(build_list_select(query))
    columns_sql = str(build_page_select(query))
    assert columns_sql.split("FROM")[1] == orm_sql.split("FROM")[1]
    child = dict(query.plan.children)["groups"]
    children_sql = str(build_children_select(query.plan.join("groups"), child))
    assert "auth_user_group.user_id IN" in children_sql
    assert "ORDER BY auth_group.id" in children_sql


async def test_a_shaped_list_under_the_orm_loader_is_loaded_by_the_columns_loader(
    seeded_url: str,
) -> None:
    """`LOADER=orm` has no per-parent cut: a request shaping a list gets the same bytes and
    the same 1 + k statements as under the default loader."""
    url = (
        "/groups?fields=name&include=users.groups&fields[users]=name&sort[users]=-created"
        "&limit[users]=2&count[users]=true&count[users.groups]=true&limit=7"
    )
    responses = {}
    for loader in ("columns", "orm"):
        app = create_app(make_test_settings(seeded_url, cache_url="none", loader=loader))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                responses[loader] = await client.get(url)
        finally:
            await app.state.services.db.engine.dispose()
    assert responses["columns"].status_code == 200, responses["columns"].text
    assert responses["orm"].content == responses["columns"].content
    for response in responses.values():
        assert 'desc="3 queries"' in response.headers["server-timing"]
    groups = responses["orm"].json()["data"]
    assert all(len(group["users"]) <= 2 for group in groups)
    assert any(group["users_count"] > 2 for group in groups)
