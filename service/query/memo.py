"""A raw query string -> its plan: parse, validate, attach the cursor.

Memoized by the caller (`ReadPath` keeps one planned read per distinct request, per app)."""

from __future__ import annotations

from service.query.cursor import CursorCodec, attach_cursor
from service.query.params import Endpoint, parse_query_string
from service.query.plan import Limits, ListQuery, Plan, Scope, build_list_query, build_plan
from service.schema import Resource


def plan_list(
    resource: Resource,
    query_string: bytes,
    *,
    private_ok: bool,
    limits: Limits,
    scope: Scope | None,
    codec: CursorCodec,
) -> ListQuery:
    raw = parse_query_string(query_string, endpoint=Endpoint.LIST)
    query = build_list_query(resource, raw, private_ok=private_ok, limits=limits, scope=scope)
    if raw.cursor is not None:
        query = attach_cursor(query, raw.cursor, codec)
    return query


def plan_item(resource: Resource, query_string: bytes, *, private_ok: bool, limits: Limits) -> Plan:
    raw = parse_query_string(query_string, endpoint=Endpoint.ITEM)
    return build_plan(resource, raw, private_ok=private_ok, limits=limits)
