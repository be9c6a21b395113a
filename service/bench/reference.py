"""Reference apps for honest ratios: the service's users page answered without the service.

Each answers `GET /users` for one fixed shape, the one the endpoints benchmark measures
(`fields=id,name,email_address&include=groups&fields[groups]=id,name`, `limit`, a bearer
token): (a) the way a careful FastAPI + SQLAlchemy developer would write it by hand,
(b) Starlette on the bare asyncpg driver with orjson, and two floors for the cached paths,
(c) a constant body and (d) the body from one Redis GET. They are benchmark code only,
never routes of the service, and each is built by a factory for `uvicorn --factory`,
configured through the environment variables below. Like the service, each settles its
garbage collector at startup, so no side pays for the heap its imports left behind.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import asyncpg  # type: ignore[import-untyped]
import orjson
import redis.asyncio as redis
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import load_only, selectinload
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.models import Group, User
from service.process import settle_garbage_collector

DATABASE_URL_VARIABLE = "BENCH_DATABASE_URL"  # postgresql+asyncpg://...
TOKEN_VARIABLE = "BENCH_TOKEN"
BODY_FILE_VARIABLE = "BENCH_BODY_FILE"
REDIS_URL_VARIABLE = "BENCH_REDIS_URL"
REDIS_KEY_VARIABLE = "BENCH_REDIS_KEY"
SHAPE = "fields=id,name,email_address&include=groups&fields[groups]=id,name"
USERS_SQL = "SELECT id, name, email_address FROM auth_user ORDER BY id LIMIT $1"
GROUPS_SQL = (
    "SELECT ug.user_id, g.id, g.name FROM auth_user_group ug "
    "JOIN auth_group g ON g.id = ug.group_id WHERE ug.user_id = ANY($1::int[]) ORDER BY g.id"
)


def envelope_tail(last_id: int | None, limit: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """meta and links of the same size class as the service's (a plain id as the cursor)."""
    if last_id is None:
        return {"next_cursor": None}, {"next": None}
    cursor = str(last_id)
    return {"next_cursor": cursor}, {"next": f"/users?{SHAPE}&limit={limit}&cursor={cursor}"}


def token_ok(authorization: str | None, token: str) -> bool:
    return authorization is not None and hmac.compare_digest(authorization, f"Bearer {token}")


# (a) FastAPI + SQLAlchemy, hand-tuned: selectinload + load_only, pydantic response model.


class GroupOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email_address: str
    groups: list[GroupOut]


class Meta(BaseModel):
    next_cursor: str | None


class Links(BaseModel):
    next: str | None


class UsersPage(BaseModel):
    data: list[UserOut]
    meta: Meta
    links: Links


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as session:
        yield session


async def _bearer(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    if not token_ok(authorization, request.app.state.token):
        raise HTTPException(status_code=401, detail="a valid bearer token is required")


SessionDep = Annotated[AsyncSession, Depends(_session)]


def make_fastapi_app() -> FastAPI:
    # Ten connections and no overflow, like the service and the asyncpg pool: overflow
    # connections are opened and closed over and over under sustained load.
    engine = create_async_engine(os.environ[DATABASE_URL_VARIABLE], pool_size=10, max_overflow=0)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settle_garbage_collector()
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    app.state.token = os.environ[TOKEN_VARIABLE]

    @app.get("/users", response_model=UsersPage, dependencies=[Depends(_bearer)])
    async def list_users(
        db: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> UsersPage:
        statement = (
            select(User)
            .options(
                load_only(User.id, User.name, User.email_address),
                selectinload(User.groups).load_only(Group.id, Group.name),
            )
            .order_by(User.id)
            .limit(limit + 1)
        )
        rows = (await db.scalars(statement)).all()
        page = rows[:limit]
        meta, links = envelope_tail(page[-1].id if len(rows) > limit else None, limit)
        return UsersPage(
            data=[UserOut.model_validate(row) for row in page],
            meta=Meta(**meta),
            links=Links(**links),
        )

    return app


# (b) Starlette + asyncpg + orjson, written by hand: two statements, dicts, one dumps.


Page = Callable[[asyncpg.Connection, int], Awaitable[bytes]]  # a connection, the limit


def asyncpg_endpoint(path: str, page: Page) -> Starlette:
    """One hand-written GET endpoint: a pool of 10, the token and `limit` checked by hand,
    then `page` builds the body on a pooled connection."""
    url = make_url(os.environ[DATABASE_URL_VARIABLE]).set(drivername="postgresql")
    dsn = url.render_as_string(hide_password=False)
    token = os.environ[TOKEN_VARIABLE]
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pools.append(await asyncpg.create_pool(dsn, min_size=1, max_size=10))
        settle_garbage_collector()
        try:
            yield
        finally:
            await pools[0].close()

    async def endpoint(request: Request) -> Response:
        if not token_ok(request.headers.get("authorization"), token):
            return Response(b'{"detail":"unauthorized"}', 401, media_type="application/json")
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 500:
            return Response(b'{"detail":"bad limit"}', 400, media_type="application/json")
        async with pools[0].acquire() as connection:
            body = await page(connection, limit)
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route(path, endpoint)], lifespan=lifespan)


async def _users_page(connection: asyncpg.Connection, limit: int) -> bytes:
    rows = await connection.fetch(USERS_SQL, limit + 1)
    items: list[dict[str, Any]] = []
    by_id: dict[int, list[dict[str, Any]]] = {}
    for row in rows[:limit]:
        groups: list[dict[str, Any]] = []
        items.append({"id": row[0], "name": row[1], "email_address": row[2], "groups": groups})
        by_id[row[0]] = groups
    for owner, group_id, name in await connection.fetch(GROUPS_SQL, list(by_id)):
        by_id[owner].append({"id": group_id, "name": name})
    meta, links = envelope_tail(items[-1]["id"] if len(rows) > limit else None, limit)
    return orjson.dumps({"data": items, "meta": meta, "links": links})


def make_asyncpg_app() -> Starlette:
    return asyncpg_endpoint("/users", _users_page)


# (c) and (d): the floors under the cached paths.


def make_constant_app() -> Starlette:
    """The captured body of the service's page, from memory, on every request."""
    body = Path(os.environ[BODY_FILE_VARIABLE]).read_bytes()

    async def users(_request: Request) -> Response:
        return Response(body, media_type="application/json")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        settle_garbage_collector()
        yield

    return Starlette(routes=[Route("/users", users)], lifespan=lifespan)


def make_redis_app() -> Starlette:
    """The same body from one Redis GET per request (a pooled async client)."""
    client = redis.Redis.from_url(os.environ[REDIS_URL_VARIABLE], socket_timeout=5.0)
    key = os.environ[REDIS_KEY_VARIABLE]

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        settle_garbage_collector()
        try:
            yield
        finally:
            await client.aclose()

    async def users(_request: Request) -> Response:
        body = await client.get(key)
        if body is None:
            return Response(b'{"detail":"no body"}', 404, media_type="application/json")
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/users", users)], lifespan=lifespan)
