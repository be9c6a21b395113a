"""The docs pages work offline; the OpenAPI document spells out the allowed names."""

from __future__ import annotations

import re

import httpx
import pytest

from service.app import create_app
from tests.conftest import make_test_settings


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_page_has_no_external_url_and_its_assets_are_served(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), html
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert assets
    for asset in assets:
        fetched = await client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 100


async def test_openapi_lists_attribute_and_include_names(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    parameters = {p["name"]: p for p in spec["paths"]["/users"]["get"]["parameters"]}
    assert {"fields", "include", "sort", "limit", "cursor", "count"} <= set(parameters)
    assert {"fields[groups]", "fields[groups.permissions]", "fields[groups.users]"} <= set(
        parameters
    )
    for name in ("`id`", "`name`", "`display_name`", "`created`", "`email_address`"):
        assert name in parameters["fields"]["description"]
    assert "`groups.permissions`" in parameters["include"]["description"]
    assert parameters["limit"]["schema"]["minimum"] == 1
    assert parameters["limit"]["schema"]["maximum"] == 500
    for name, schema in spec["components"]["schemas"].items():
        if not name.endswith(("Create", "Update")):
            assert "password" not in str(schema), name
    assert spec["components"]["schemas"]["UserCreate"]["properties"]["password"]["writeOnly"]
    user = spec["components"]["schemas"]["User"]
    assert set(user["properties"]) == {
        "id",
        "name",
        "display_name",
        "created",
        "email_address",
        "groups",
        "groups_count",
    }
    for family in ("sort", "limit", "count"):
        assert f"{family}[groups.users]" in parameters, family  # a to-many path below another
        assert f"{family}[groups.users.groups]" in parameters, family
    assert parameters["limit[groups.users]"]["schema"]["maximum"] == 500
    sub = spec["paths"]["/groups/{id}/permissions"]["get"]
    assert "fields[groups]" in {p["name"] for p in sub["parameters"]}  # the target's parameters


async def test_reads_declare_the_token_required_when_reads_need_one(
    database_url: str,
) -> None:
    app = create_app(make_test_settings(database_url, read_requires_token=True))
    operation = app.openapi()["paths"]["/users"]["get"]
    assert operation["security"] == [{"bearer": []}]
    await app.state.services.db.engine.dispose()
