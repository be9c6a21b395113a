"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from service.api.deps import ServicesDep
from service.errors import Unavailable
from service.metrics import render_metrics
from service.openapi import COMMON_HEADERS, problem_responses

router = APIRouter(tags=["operations"])


def _status(value: str) -> dict[str, object]:
    schema = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": value}},
        "additionalProperties": False,
    }
    return {"application/json": {"schema": schema}}


@router.get(
    "/healthz",
    summary="The process is up",
    response_class=Response,
    responses={
        200: {"description": "Up", "headers": COMMON_HEADERS, "content": _status("ok")},
        **problem_responses(),
    },
)
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/readyz",
    summary="The database answers",
    response_class=Response,
    responses={
        200: {"description": "Ready", "headers": COMMON_HEADERS, "content": _status("ready")},
        **problem_responses(),
    },
)
async def readyz(services: ServicesDep) -> Response:
    try:
        async with asyncio.timeout(services.settings.pool_timeout + 1):
            async with services.db.session(read_only=True) as session:
                await session.execute(text("SELECT 1"))
    except TimeoutError:
        raise Unavailable("the database did not answer in time") from None
    return Response(b'{"status":"ready"}', media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "headers": COMMON_HEADERS,
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **problem_responses(),
    },
)
async def metrics() -> Response:
    body, content_type = render_metrics()
    return Response(body, media_type=content_type)
