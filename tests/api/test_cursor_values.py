"""Forged cursor values are a 400 before any SQL; cursors of private sorts hide their values."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlalchemy.sql import Executable

from service.db import make_engine
from service.errors import InvalidParameter, ServiceError, Unavailable
from service.models import User
from service.query.canonical import binding
from service.query.params import parse_query_string
from service.query.plan import Limits, ListQuery, build_list_query
from service.repository import Database, translate_error
from service.settings import Settings
from tests.api.test_query_language import assert_problem, walk
from tests.conftest import AUTH, StatementLog
from tests.test_cursor import b64, decodings, forge, sorts_private, unb64

SECRET = b"test-secret"  # make_test_settings' CURSOR_SECRET


def list_query(query_string: str, resource: str = "users") -> ListQuery:
    raw = parse_query_string(query_string)
    return build_list_query(AUTH[resource], raw, private_ok=True, limits=Limits())


def bound(query_string: str, resource: str = "users") -> str:
    """The binding the service gives a cursor of this list request."""
    return binding(list_query(query_string, resource))


def signed(query_string: str, values: list[Any]) -> str:
    """A cursor holding exactly `values` (any JSON, fitting the sort or not), signed or, for
    a private sort, sealed as the service makes them with the test secret. The service's
    encoder writes only values of the sort's own types, so the token is made by `forge`,
    whose formats test_cursor.py pins to the encoder's."""
    query = list_query(query_string)
    return forge(orjson.dumps(values), binding(query), sealed=sorts_private(query), secret=SECRET)


# --- forged values: a 400 before any SQL ------------------------------------------------------

FORGED = [
    ("fields=id", [2**31], "an integer past 2**31 - 1"),
    ("fields=id", [-(2**31) - 1], "an integer below -2**31"),
    ("fields=id", [2**63], "an integer past 2**63"),
    ("fields=id", [True], "a bool where an integer is expected"),
    ("fields=id&sort=name", ["ali\x00ce", 5], "a NUL-bearing string"),
    ("fields=id&sort=name", ["x" * 17, 5], "a string longer than name can be"),
    ("fields=id&sort=name", [None, 5], "NULL for a key that cannot be NULL"),
    ("fields=id&sort=-created", ["2024-01-01T00:00:00+00:00", 5], "a timestamp with a zone"),
    ("fields=id&sort=-created", ["2024-01-01T00:00:00+05:30", 5], "a timestamp with an offset"),
    ("fields=id&sort=-created", ["yesterday", 5], "a timestamp that is not ISO 8601"),
    ("fields=id&sort=-created", [1704067200, 5], "a timestamp as a number"),
    ("fields=id&sort=name", [5], "too few values"),
    ("fields=id&sort=name", ["alice", 5, 6], "too many values"),
    ("fields=id&sort=email_address", ["a\x00@example.org", 5], "NUL in a private key"),
    ("fields=id&sort=email_address", ["a" * 256, 5], "a private key longer than it can be"),
    ("fields=id&sort=email_address", [2**63, 5], "a number for a private text key"),
]


@pytest.mark.parametrize(("query_string", "values", "why"), FORGED, ids=[f[2] for f in FORGED])
async def test_a_forged_cursor_value_is_a_400_before_any_sql(
    client: httpx.AsyncClient,
    statements: StatementLog,
    auth: dict[str, str],
    query_string: str,
    values: list[Any],
    why: str,
) -> None:
    cursor = signed(query_string, values)
    response = await client.get(f"/users?{query_string}&cursor={cursor}", headers=auth)
    assert_problem(response, 400, "cursor")
    assert len(statements) == 0, why


# --- private sort keys: encrypted cursors -----------------------------------------------------


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("email_address", lambda user: (user["email_address"], user["id"])),
        ("-email_address,name", lambda user: (user["email_address"], user["name"])),
    ],
    ids=["email_address", "-email_address,name"],
)
async def test_a_private_sort_pages_with_cursors_that_do_not_reveal_the_value(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    sort: str,
    key: Callable[[dict[str, Any]], Any],
) -> None:
    every = await client.get(
        "/users", params={"fields": "id,name,email_address", "limit": "500"}, headers=auth
    )
    users = every.json()["data"]
    expected = [u["id"] for u in sorted(users, key=key, reverse=sort.startswith("-"))]
    params = [("fields", "id,email_address"), ("sort", sort), ("limit", "7")]
    result = await walk(client, "/users", params, headers=auth)
    assert result.ids == expected  # every row once, in order
    cursors = [page["meta"]["next_cursor"] for page in result.pages[:-1]]
    assert len(cursors) >= 8
    for page, cursor in zip(result.pages[:-1], cursors, strict=True):
        assert cursor.startswith("~")
        email = page["data"][-1]["email_address"]
        assert email not in cursor
        assert email not in page["links"]["next"]
        local = email.split("@")[0].encode()
        assert not any(local in decoded for decoded in decodings(cursor)), cursor


async def test_a_tampered_or_foreign_kind_of_cursor_is_a_400(
    client: httpx.AsyncClient, statements: StatementLog, auth: dict[str, str]
) -> None:
    private, public = "fields=id&sort=email_address&limit=5", "fields=id&sort=name&limit=5"
    cursor = (await client.get(f"/users?{private}", headers=auth)).json()["meta"]["next_cursor"]
    assert cursor.startswith("~")
    sealed = unb64(cursor[1:])
    cases = [
        (private, "~" + b64(sealed[:i] + bytes([sealed[i] ^ 1]) + sealed[i + 1 :]))
        for i in (0, 8, 16, len(sealed) - 1)
    ]
    cases += [
        # signed but not sealed, for a private sort; and sealed for a public one
        (private, forge(b'["a@example.org",5]', bound(private), sealed=False, secret=SECRET)),
        (public, forge(b'["alice",5]', bound(public), sealed=True, secret=SECRET)),
    ]
    for query, token in cases:
        statements.clear()
        response = await client.get(f"/users?{query}&cursor={token}", headers=auth)
        assert_problem(response, 400, "cursor")
        assert len(statements) == 0
    genuine = await client.get(f"/users?{private}&cursor={cursor}", headers=auth)
    assert genuine.status_code == 200


# --- translate_error, with what the drivers really raise ---------------------------------------


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(Settings(database_url=database_url))
    yield engine
    await engine.dispose()


BAD_VALUES: dict[str, Executable] = {
    "nul": select(User.id).where(User.name > "a\x00b"),
    "zoned": select(User.id).where(User.created > datetime(2024, 1, 1, tzinfo=UTC)),
    "int32": select(User.id).where(User.id > 2**31),
    "int64": select(User.id).where(User.id > 2**63),
    "division": text("SELECT 1 / 0"),  # a data error the server itself raises (22012)
}


async def raised(engine: AsyncEngine, statement: Executable) -> BaseException | None:
    try:
        async with engine.connect() as connection:
            await connection.execute(statement)
    except Exception as exc:
        return exc
    return None


async def test_what_the_drivers_raise_for_values_they_refuse(engine: AsyncEngine) -> None:
    errors = {name: await raised(engine, statement) for name, statement in BAD_VALUES.items()}
    if engine.dialect.name == "postgresql":
        sqlstates = {
            name: getattr(getattr(exc, "orig", None), "sqlstate", None)
            for name, exc in errors.items()
        }
        assert all(type(exc) is sa_exc.DBAPIError for exc in errors.values()), errors
        assert sqlstates == {
            "nul": "22021",  # character_not_in_repertoire, from the server
            "zoned": "22000",  # asyncpg's DataError: refused before it is sent
            "int32": "22000",
            "int64": "22000",
            "division": "22012",
        }
    else:
        assert errors["nul"] is None  # stored as it is
        assert errors["zoned"] is None  # stored as its text, zone and all
        assert errors["int32"] is None  # SQLite's integers are 64-bit
        assert type(errors["int64"]) is OverflowError  # bare: SQLAlchemy does not wrap it
        assert errors["division"] is None  # SQLite's 1 / 0 is NULL
    for name, exc in errors.items():
        if exc is not None:
            error = translate_error(exc)
            assert isinstance(error, InvalidParameter), (name, exc)
            assert error.status == 400
            assert error.errors[0].parameter == "query"


async def test_database_read_and_session_answer_a_refused_value_with_a_400(
    engine: AsyncEngine,
) -> None:
    db = Database(engine, async_sessionmaker(engine, expire_on_commit=False))

    async def work(connection: AsyncConnection) -> object:
        return (await connection.execute(BAD_VALUES["int64"])).all()

    with pytest.raises(ServiceError) as read:
        await db.read(work)
    with pytest.raises(ServiceError) as session:
        async with db.session(read_only=True) as opened:
            await opened.execute(BAD_VALUES["int64"])
    for info in (read, session):
        assert isinstance(info.value, InvalidParameter), info.value
        assert info.value.status == 400


async def test_a_real_outage_is_still_a_503(engine: AsyncEngine) -> None:
    closed = make_engine(Settings(database_url=_unreachable(str(engine.url))))
    try:
        refused = await raised(closed, text("SELECT 1"))
    finally:
        await closed.dispose()
    assert refused is not None
    assert isinstance(translate_error(refused), Unavailable)
    if engine.dialect.name == "postgresql":
        async with engine.connect() as connection:
            await connection.execute(text("SET statement_timeout = 50"))
            try:
                await connection.execute(text("SELECT pg_sleep(1)"))
            except sa_exc.DBAPIError as exc:
                canceled: BaseException = exc
            else:
                pytest.fail("the statement timeout did not fire")
        assert getattr(canceled.orig, "sqlstate", None) == "57014"  # type: ignore[attr-defined]
        assert isinstance(translate_error(canceled), Unavailable)


def _unreachable(url: str) -> str:
    """The same database behind a port nothing listens on (SQLite: a directory that is not)."""
    if url.startswith("sqlite"):
        return "sqlite+aiosqlite:////nonexistent-directory/service.db"
    return re.sub(r"@[^/]+/", "@127.0.0.1:9/", url)
