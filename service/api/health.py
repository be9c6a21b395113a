"""Liveness, readiness and the Prometheus scrape endpoint."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from service.api.deps import Services, ServicesDep
from service.errors import ServiceError, Unavailable
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
    operation_id="healthz",
    summary="The process is up",
    response_class=Response,
    responses={
        200: {"description": "Up", "headers": COMMON_HEADERS, "content": _status("ok")},
        **problem_responses(),
    },
)
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


_DATABASE_STATE = {
    "type": "object",
    "required": ["state"],
    "properties": {
        "state": {"enum": ["up", "down"]},
        "role": {"enum": ["primary", "replica"]},
        "replayed_bytes": {"type": "integer", "description": "WAL replayed (replicas)"},
        "lag_bytes": {"type": "integer", "description": "WAL behind the primary (replicas)"},
        "error": {"type": "string", "description": "why it is down (an exception class)"},
    },
}
_READY = {
    "type": "object",
    "required": ["status", "databases"],
    "properties": {
        "status": {"const": "ready"},
        "databases": {"type": "object", "additionalProperties": _DATABASE_STATE},
    },
}


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="A database answers",
    description="200 while the primary or a replica answers, else 503; the body tells each "
    "database's state (replicas: how far they have replayed and trail the primary).",
    response_class=Response,
    responses={
        200: {
            "description": "Ready",
            "headers": COMMON_HEADERS,
            "content": {"application/json": {"schema": _READY}},
        },
        **problem_responses(),
    },
)
async def readyz(services: ServicesDep) -> Response:
    db = services.db
    databases: dict[str, dict[str, object]] = {}
    primary_up = await _answers(services)
    databases["primary"] = {"role": "primary", "state": "up" if primary_up else "down"}
    replicas = db.replicas
    any_up = primary_up
    if replicas is not None:
        await replicas.poll()  # now, not what the last background poll saw
        for replica in replicas.replicas:
            state: dict[str, object] = {"role": "replica", "state": "up" if replica.up else "down"}
            if replica.up:
                state |= {"replayed_bytes": replica.replayed, "lag_bytes": replica.lag_bytes}
            elif replica.failure:
                state["error"] = replica.failure
            databases[replica.name] = state
            any_up = any_up or replica.up
    if any_up:
        body = {"status": "ready", "databases": databases}
        return Response(orjson.dumps(body), media_type="application/json")
    error = Unavailable("no database answers")
    problem = {**error.to_problem("/readyz"), "databases": databases}  # an extension member
    return Response(
        orjson.dumps(problem),
        status_code=error.status,
        media_type="application/problem+json",
        headers=error.headers,
    )


async def _answers(services: Services) -> bool:
    """Whether the primary answers `SELECT 1` within the pool's wait (and a second)."""
    try:
        async with asyncio.timeout(services.settings.pool_timeout + 1):
            async with services.db.session(read_only=True) as session:
                await session.execute(text("SELECT 1"))
    except (TimeoutError, ServiceError):
        return False
    return True


@router.get(
    "/metrics",
    operation_id="metrics",
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
