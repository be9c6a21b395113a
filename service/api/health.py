"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from service.api.deps import ServicesDep
from service.errors import Unavailable
from service.metrics import render_metrics

router = APIRouter(tags=["operations"])
JSON = {"application/json": {"schema": {"type": "object"}}}


@router.get(
    "/healthz",
    summary="The process is up",
    response_class=Response,
    responses={200: {"description": "Up", "content": JSON}},
)
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/readyz",
    summary="The database answers",
    response_class=Response,
    responses={
        200: {"description": "Ready", "content": JSON},
        503: {"description": "The database is not reachable"},
    },
)
async def readyz(services: ServicesDep) -> Response:
    try:
        async with asyncio.timeout(services.settings.pool_timeout + 1):
            async with services.db.session() as session:
                await session.execute(text("SELECT 1"))
    except TimeoutError:
        raise Unavailable("the database did not answer in time") from None
    return Response(b'{"status":"ready"}', media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"description": "Exposition format", "content": {"text/plain": {}}}},
)
async def metrics() -> Response:
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
