"""See the SQL: the statements a read ran, shown to a token holder who asks with `explain`.

`explain=sql` adds an `explain` member to the read's usual body: the database that served it,
each statement as the driver received it (placeholders, not values), the type of each
parameter, and the time each took. `explain=plan` adds each statement's plan: PostgreSQL's
`EXPLAIN (ANALYZE, FORMAT JSON)` (the SELECT runs once more; a read changes nothing)
or SQLite's `EXPLAIN QUERY PLAN`. The values stay out: they are the caller's filters or keys
read from the database, and a plan that quotes one is shown only to the same token holder.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import unquote_plus, unquote_to_bytes

import orjson
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.db import UNCOUNTED
from service.errors import InvalidParameter
from service.timing import Ran

PARAMETER = "explain"
MODES = ("sql", "plan")
_KEY = PARAMETER.encode()
_PLANNED = ("select", "with")  # what EXPLAIN takes (an estimated count is an EXPLAIN itself)


def _shown(statement: Ran) -> dict[str, Any]:
    return {
        "sql": statement.sql,
        "parameters": _types_of(statement.parameters),
        "duration_ms": round(statement.seconds * 1000, 3),
    }


def split_explain(query_string: bytes) -> tuple[str | None, bytes]:
    """The `explain` mode asked for, and the query string without it (the read it explains
    is the same read, with the same cache key and links, as without it)."""
    kept: list[bytes] = []
    modes: list[str] = []
    for part in query_string.split(b"&"):
        key, _, value = part.partition(b"=")
        if key != _KEY and (_decoded_length(key) != len(_KEY) or unquote_to_bytes(key) != _KEY):
            kept.append(part)
            continue
        modes.append(unquote_plus(value.decode("utf-8", "replace")).strip())
    if not modes:
        return None, query_string
    if len(modes) > 1:
        raise InvalidParameter(PARAMETER, f"parameter {PARAMETER!r} is given more than once")
    if modes[0] not in MODES:
        raise InvalidParameter(PARAMETER, f"{PARAMETER} must be one of {', '.join(MODES)}")
    return modes[0], b"&".join(kept)


def _decoded_length(key: bytes) -> int:
    """The length of a percent-encoded key once decoded (a cheap test before decoding)."""
    return len(key) - 2 * key.count(b"%")


async def explained(body: bytes, ran: list[Ran], mode: str) -> bytes:
    """`body` with the `explain` member: what ran, and with `plan` how the database ran it."""
    statements = [_shown(statement) for statement in ran]
    if mode == "plan":
        async with contextlib.AsyncExitStack() as stack:
            connections: dict[Engine, AsyncConnection] = {}  # one per database that served
            for shown, statement in zip(statements, ran, strict=True):
                if statement.engine not in connections:
                    engine = AsyncEngine(statement.engine)
                    connections[statement.engine] = await stack.enter_async_context(
                        engine.connect()
                    )
                shown["plan"] = await _plan_of(statement, connections[statement.engine])
    report = {
        "database": ", ".join(dict.fromkeys(statement.database for statement in ran)) or None,
        "count": len(ran),
        "duration_ms": round(sum(statement.seconds for statement in ran) * 1000, 3),
        "statements": statements,
    }
    return orjson.dumps({**orjson.loads(body), PARAMETER: report})


async def _plan_of(statement: Ran, connection: AsyncConnection) -> Any:
    """The statement's plan on the database that ran it, with the same parameters."""
    if not statement.sql.lstrip().lower().startswith(_PLANNED):
        return None
    postgres = connection.dialect.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, FORMAT JSON) " if postgres else "EXPLAIN QUERY PLAN "
    result = await connection.exec_driver_sql(
        prefix + statement.sql, statement.parameters, execution_options={UNCOUNTED: True}
    )
    rows = result.all()
    if postgres:
        plan = rows[0][0]
        return orjson.loads(plan) if isinstance(plan, str | bytes) else plan
    return [row[-1] for row in rows]  # SQLite: (id, parent, notused, detail)


def _types_of(parameters: Any) -> Any:
    """Each parameter's type, a list as its length and item types: never the values."""
    if isinstance(parameters, dict):
        return {key: _type_of(value) for key, value in parameters.items()}
    if isinstance(parameters, list | tuple):
        return [_type_of(value) for value in parameters]
    return _type_of(parameters)


def _type_of(value: Any) -> str:
    if isinstance(value, list | tuple):
        kinds = sorted({type(item).__name__ for item in value})
        return f"{len(value)} x {' | '.join(kinds) or 'value'}"
    return type(value).__name__
