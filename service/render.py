"""Loaded items -> JSON bytes with orjson; the items already hold exactly the planned keys."""

from __future__ import annotations

from typing import Any

import orjson

from service.query.params import Count
from service.query.plan import ListQuery
from service.repository import Page
from service.repository.loaders import Item
from service.schema.codecs import json_default

JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def render_list(
    page: Page, query: ListQuery, *, next_cursor: str | None, next_link: str | None
) -> bytes:
    meta: dict[str, Any] = {"next_cursor": next_cursor}
    if page.total is not None:
        meta["total"] = page.total
    if query.count is Count.ESTIMATED:
        meta["estimated"] = page.estimated
    envelope = {"data": page.items, "meta": meta, "links": {"next": next_link}}
    return orjson.dumps(envelope, default=json_default, option=JSON_OPTIONS)


def render_items(items: list[Item], *, single: bool) -> bytes:
    """`{"data": item}` for one row asked by id, `{"data": [items]}` for a batch."""
    return orjson.dumps(
        {"data": items[0] if single else items}, default=json_default, option=JSON_OPTIONS
    )
