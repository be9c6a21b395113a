"""What the tests see of the service: responses, problem documents, keyset walks and the SQL."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import httpx

from tests.conftest import TOKEN

PROBLEM = "application/problem+json"
NO_CACHE = {"Cache-Control": "no-cache"}
BEARER = {"Authorization": f"Bearer {TOKEN}"}
Params = Mapping[str, str]


def body(response: httpx.Response) -> Any:
    """The JSON body, numbers with a fraction as Decimals (every digit the server sent)."""
    return json.loads(response.content, parse_float=Decimal)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem document with this status."""
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"] == PROBLEM, response.headers
    document: dict[str, Any] = response.json()
    assert document["status"] == status
    assert document["title"]
    assert document["detail"]
    return document


def pointers(document: dict[str, Any]) -> list[str]:
    return [item["pointer"] for item in document.get("errors", []) if "pointer" in item]


def server_timing_queries(response: httpx.Response) -> int:
    match = re.search(r'db;dur=[\d.]+;desc="(\d+) queries"', response.headers["server-timing"])
    assert match, response.headers["server-timing"]
    return int(match.group(1))


def selected_columns(statement: str) -> set[str]:
    """`SELECT a.x, b.y AS z FROM ...` -> {'a.x', 'b.y'} (quotes dropped)."""
    head = re.split(r"\s+FROM\s+", statement, maxsplit=1)[0]
    head = re.sub(r"^\s*SELECT\s+(DISTINCT\s+)?", "", head)
    names = {re.sub(r"\s+AS\s+\S+$", "", part.strip()) for part in head.split(",")}
    return {name.replace('"', "").replace("`", "") for name in names}


def named_columns(statement: str) -> set[str]:
    """Every `table.column` the statement names anywhere (quotes dropped)."""
    pairs = re.findall(r"\b(\w+)\.(\w+)\b", statement.replace('"', ""))
    return {f"{table}.{column}" for table, column in pairs}


async def walk(
    client: httpx.AsyncClient,
    path: str,
    params: Params,
    *,
    key: str,
    limit: int,
    headers: Mapping[str, str] | None = None,
) -> list[str]:
    """Follow `links.next` from the first page to the last; the keys seen, as text."""
    response = await client.get(path, params=params, headers=headers)
    keys: list[str] = []
    pages = 0
    while True:
        assert response.status_code == 200, (response.request.url, response.text)
        page = response.json()
        pages += 1
        assert len(page["data"]) <= limit
        keys.extend(str(item[key]) for item in page["data"])
        link = page["links"]["next"]
        assert (link is None) == (page["meta"]["next_cursor"] is None), page["meta"]
        if link is None:
            return keys
        assert page["data"], "a page with a next link must hold rows"
        assert pages <= 1000, "the walk does not end"
        response = await client.get(link, headers=headers)
