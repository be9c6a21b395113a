"""The GET routes of every resource, as the OpenAPI document describes them.

Every GET of a resource is answered before routing, by `ReadPath.serve_read`
(service/api/read_path.py): these routes give the document its operations, parameters and
responses, and never run for a request that reached the app through `ServiceApp`.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from service.errors import ServiceError
from service.openapi import (
    cached_responses,
    id_parameter,
    item_links,
    item_schema_name,
    problem_responses,
    with_links,
)
from service.query_parameters import EXPLAIN, list_parameters, shape_parameters
from service.schema import Join, Resource
from service.settings import Settings

READ_ERRORS = (400, 401, 403, 503)
LIST_DESCRIPTION = (
    "A page in keyset order. Runs exactly 1 + k SQL statements for k include paths (one more "
    "with `count=true`, or per counted path that is not included); `explain=sql` shows them."
)
ITEM_DESCRIPTION = (
    "One row by its key, shaped like a list's rows. Runs 1 + k SQL statements for k include "
    "paths; `explain=sql` shows them."
)


def json_response(body: bytes) -> Response:
    return Response(body, media_type="application/json")


async def served_before_routing() -> Response:
    # Reached only by an app that bypassed `ServiceApp`: a reads path is not mounted. (No
    # docstring: FastAPI would show it as the operation's description.)
    raise ServiceError("reads are answered by ReadPath.serve_read, before routing")


def make_read_router(resource: Resource, settings: Settings) -> APIRouter:
    """List, item and one sub-collection route per to-many relationship."""
    router = APIRouter(tags=[resource.name])
    schema = item_schema_name(resource)
    key = resource.key.name
    router.add_api_route(
        f"/{resource.name}",
        served_before_routing,
        methods=["GET"],
        summary=f"List {resource.name}",
        description=LIST_DESCRIPTION,
        response_class=Response,
        responses={
            **with_links(
                cached_responses(f"{schema}List", f"A page of {resource.name}"),
                200,
                item_links(resource, f"$response.body#/data/0/{key}"),
            ),
            **problem_responses(*READ_ERRORS),
        },
        openapi_extra={
            "parameters": list_parameters(resource, settings),
            "security": read_security(settings),
        },
        operation_id=f"list_{resource.name}",
    )
    shape = shape_parameters(resource, settings)
    router.add_api_route(
        f"/{resource.name}/{{id}}",
        served_before_routing,
        methods=["GET"],
        summary=f"Get one of {resource.name}",
        description=ITEM_DESCRIPTION,
        response_class=Response,
        responses={
            **with_links(
                cached_responses(f"{schema}Item", f"One of {resource.name}"),
                200,
                item_links(resource, "$request.path.id"),
            ),
            **problem_responses(*READ_ERRORS, 404),
        },
        openapi_extra={
            "parameters": [
                id_parameter(resource),
                *shape[:2],
                EXPLAIN,
                *shape[2:],
            ],
            "security": read_security(settings),
        },
        operation_id=f"get_{resource.name}",
    )
    for join in resource.relationships:
        if join.many:
            _add_sub_collection(router, resource, join, settings)
    return router


def _add_sub_collection(
    router: APIRouter, parent: Resource, join: Join, settings: Settings
) -> None:
    target = join.target
    router.add_api_route(
        f"/{parent.name}/{{id}}/{join.name}",
        served_before_routing,
        methods=["GET"],
        summary=f"List the {join.name} of one of {parent.name}",
        description=LIST_DESCRIPTION + " A parent that does not exist is a 404.",
        response_class=Response,
        responses={
            **with_links(
                cached_responses(f"{item_schema_name(target)}List", f"A page of {target.name}"),
                200,
                item_links(target, f"$response.body#/data/0/{target.key.name}"),
            ),
            **problem_responses(*READ_ERRORS, 404),
        },
        openapi_extra={
            "parameters": [id_parameter(parent), *list_parameters(target, settings)],
            "security": read_security(settings),
        },
        operation_id=f"list_{parent.name}_{join.name}",
    )


def read_security(settings: Settings) -> list[dict[str, list[str]]]:
    """Reads take a bearer token when one is given (private attributes need it), so the docs
    page and generated clients send it; none is needed unless READ_REQUIRES_TOKEN is set."""
    bearer: dict[str, list[str]] = {"bearer": []}
    return [bearer] if settings.read_requires_token else [{}, bearer]
