"""Every error leaves as application/problem+json (RFC 9457), FastAPI's own included."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from service.errors import (
    ErrorItem,
    HttpError,
    InvalidBody,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    ServiceError,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
logger = logging.getLogger("service.errors")


def problem_response(error: ServiceError, *, instance: str | None = None) -> Response:
    body = orjson.dumps(error.to_problem(instance))
    return Response(
        body, status_code=error.status, media_type=PROBLEM_MEDIA_TYPE, headers=error.headers
    )


def from_http_exception(exc: StarletteHTTPException) -> ServiceError:
    if exc.status_code == 404:
        return NotFound("no such resource")
    if exc.status_code == 405:
        error: ServiceError = MethodNotAllowed("method not allowed on this resource")
        allow = (exc.headers or {}).get("Allow")
        if allow:
            error.headers["Allow"] = allow
        return error
    return HttpError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


def from_validation_error(exc: RequestValidationError) -> ServiceError:
    """Path and query problems are 400s; body problems are 422s with JSON pointers."""
    items: list[ErrorItem] = []
    in_body = False
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        message = str(error.get("msg", "invalid value"))
        if location and location[0] == "body":
            in_body = True
            items.append(ErrorItem(message, pointer="/" + "/".join(location[1:])))
        else:
            items.append(ErrorItem(message, parameter=location[-1] if location else "request"))
    if in_body:
        return InvalidBody("the request body is not valid", tuple(items))
    first = items[0] if items else ErrorItem("invalid parameter", parameter="request")
    error = InvalidParameter(first.parameter or "request", first.detail)
    error.errors = tuple(items)
    return error


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this path, and HEAD wherever GET is."""
    methods = _methods(app.router.routes, {**scope, "method": "GET"})
    return sorted(methods | {"HEAD"} if "GET" in methods else methods)


def _methods(routes: Sequence[BaseRoute], scope: Scope) -> set[str]:
    methods: set[str] = set()
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router wrapper
        if included is not None:
            methods |= _methods(included.routes, scope)
        elif route.matches(scope)[0] is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return methods


def install_problem_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return problem_response(exc, instance=request.url.path)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = from_http_exception(exc)
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; list them all.
            error.headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return problem_response(error, instance=request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(from_validation_error(exc), instance=request.url.path)

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
