"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from service.api.deps import ServicesDep
from service.errors import Unavailable

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="The process is up",
    response_class=Response,
    responses={200: {"description": "Up", "content": {"application/json": {}}}},
)
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/readyz",
    summary="The database answers",
    response_class=Response,
    responses={
        200: {"description": "Ready", "content": {"application/json": {}}},
        503: {"description": "The database is not reachable"},
    },
)
async def readyz(services: ServicesDep) -> Response:
    try:
        async with services.db.session() as session:
            await session.execute(text("SELECT 1"))
    except Unavailable as exc:
        raise Unavailable("the database is not reachable") from exc
    return Response(b'{"status":"ready"}', media_type="application/json")
