"""POST, PATCH and DELETE for every resource in the registry, behind a bearer token."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api.body import read_json
from service.api.deps import ServicesDep, WriteCallerDep, key_of
from service.api.reads import json_response
from service.openapi import (
    create_body,
    created_response,
    id_parameter,
    item_links,
    item_schema_name,
    no_content,
    ok_response,
    problem_responses,
    update_body,
    with_links,
)
from service.query.params import Endpoint, parse_query_string
from service.query.plan import Plan, build_plan
from service.query_parameters import shape_parameters
from service.schema import Resource
from service.schemas import parse_create_body, parse_update_body
from service.settings import Settings
from service.timing import stage

WRITE_ERRORS = (400, 401, 409, 413, 415, 422, 503)


def response_plan(request: Request, services: ServicesDep, resource: Resource) -> Plan:
    """The shape of a write's response: `fields` and `include`, as on an item read."""
    with stage("plan"):
        raw = parse_query_string(request.scope["query_string"], endpoint=Endpoint.ITEM)
        return build_plan(resource, raw, private_ok=True, limits=services.limits)


def make_write_router(resource: Resource, settings: Settings) -> APIRouter:
    router = APIRouter(tags=[resource.name])
    schema = item_schema_name(resource)
    security: list[dict[str, list[str]]] = [{"bearer": []}]

    @router.post(
        f"/{resource.name}",
        summary=f"Create one or a batch of {resource.name}",
        status_code=201,
        response_class=Response,
        responses={**created_response(resource), **problem_responses(*WRITE_ERRORS)},
        openapi_extra={
            "parameters": shape_parameters(resource, settings),
            "requestBody": create_body(resource, settings),
            "security": security,
        },
        operation_id=f"create_{resource.name}",
    )
    async def create(request: Request, services: ServicesDep, _caller: WriteCallerDep) -> Response:
        plan = response_plan(request, services, resource)
        payload = await read_json(request, max_bytes=services.settings.max_body_bytes)
        items, single = parse_create_body(resource, payload, max_batch=services.settings.max_batch)
        body, keys = await services.writer.create(resource, items, single=single, plan=plan)
        response = json_response(body)
        response.status_code = 201
        if single:
            response.headers["Location"] = f"/{resource.name}/{resource.key.codec.format(keys[0])}"
        return response

    @router.patch(
        f"/{resource.name}/{{id}}",
        summary=f"Change one of {resource.name}",
        response_class=Response,
        responses={
            **with_links(
                ok_response(f"{schema}Item", "The changed row"),
                200,
                item_links(resource, "$request.path.id"),
            ),
            **problem_responses(*WRITE_ERRORS, 404),
        },
        openapi_extra={
            "parameters": [id_parameter(resource), *shape_parameters(resource, settings)],
            "requestBody": update_body(resource),
            "security": security,
        },
        operation_id=f"update_{resource.name}",
    )
    async def update(request: Request, services: ServicesDep, _caller: WriteCallerDep) -> Response:
        identifier = key_of(request, resource)
        plan = response_plan(request, services, resource)
        payload = await read_json(request, max_bytes=services.settings.max_body_bytes)
        patch = parse_update_body(resource, payload)
        return json_response(await services.writer.update(resource, identifier, patch, plan=plan))

    @router.delete(
        f"/{resource.name}/{{id}}",
        summary=f"Delete one of {resource.name}",
        status_code=204,
        response_class=Response,
        responses={
            **no_content("Deleted, with its links; no body"),
            **problem_responses(400, 401, 404, 503),
        },
        openapi_extra={"parameters": [id_parameter(resource)], "security": security},
        operation_id=f"delete_{resource.name}",
    )
    async def delete(request: Request, services: ServicesDep, _caller: WriteCallerDep) -> Response:
        identifier = key_of(request, resource)
        parse_query_string(request.scope["query_string"], endpoint=Endpoint.ITEM)
        await services.writer.delete(resource, identifier)
        return Response(status_code=204)

    return router
