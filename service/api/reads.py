"""GET routes for every resource in the registry: lists, items and sub-collections."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from service.api import caching
from service.api.deps import ReadCallerDep, Services, ServicesDep, key_of
from service.api.targets import item_target, list_target
from service.auth import Caller
from service.openapi import (
    cached_responses,
    id_parameter,
    item_links,
    item_schema_name,
    list_parameters,
    problem_responses,
    shape_parameters,
    with_links,
)
from service.query.memo import plan_item, plan_list
from service.query.plan import ListQuery, Scope
from service.schema import Join, Resource
from service.settings import Settings
from service.timing import stage

READ_ERRORS = (400, 401, 403, 503)


def json_response(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def parse_list_query(
    request: Request,
    services: Services,
    caller: Caller,
    resource: Resource,
    scope: Scope | None = None,
) -> ListQuery:
    with stage("plan"):
        return plan_list(
            resource,
            request.scope["query_string"],
            private_ok=caller.authenticated,
            limits=services.limits,
            scope=scope,
            codec=services.reader.codec,
        )


async def serve_list(
    request: Request, services: Services, caller: Caller, query: ListQuery, *, path: str, kind: str
) -> Response:
    """A page through the cache; `path` is canonical, so equal requests share an entry."""
    link_path = str(request.scope.get("root_path", "")) + path
    target = list_target(query, path=link_path, access=caller.access_class, kind=kind)
    return await caching.serve(
        request,
        services,
        target,
        produce=lambda: services.reader.list_body(query, base_path=link_path),
    )


def make_read_router(resource: Resource, settings: Settings) -> APIRouter:
    """List, item and one sub-collection route per relationship, all from the declaration."""
    router = APIRouter(tags=[resource.name])
    schema = item_schema_name(resource)

    @router.get(
        f"/{resource.name}",
        summary=f"List {resource.name}",
        response_class=Response,
        responses={
            **with_links(
                cached_responses(f"{schema}List", f"A page of {resource.name}"),
                200,
                item_links(resource, f"$response.body#/data/0/{resource.key.name}"),
            ),
            **problem_responses(*READ_ERRORS),
        },
        openapi_extra={"parameters": list_parameters(resource, settings)},
        operation_id=f"list_{resource.name}",
    )
    async def list_rows(request: Request, services: ServicesDep, caller: ReadCallerDep) -> Response:
        query = parse_list_query(request, services, caller, resource)
        return await serve_list(
            request, services, caller, query, path=f"/{resource.name}", kind="list"
        )

    @router.get(
        f"/{resource.name}/{{id}}",
        summary=f"Get one of {resource.name}",
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
            "parameters": [id_parameter(resource), *shape_parameters(resource, settings)]
        },
        operation_id=f"get_{resource.name}",
    )
    async def get_row(request: Request, services: ServicesDep, caller: ReadCallerDep) -> Response:
        identifier = key_of(request, resource)
        with stage("plan"):
            plan = plan_item(
                resource,
                request.scope["query_string"],
                private_ok=caller.authenticated,
                limits=services.limits,
            )
        shown = resource.key.codec.format(identifier)
        path = str(request.scope.get("root_path", "")) + f"/{resource.name}/{shown}"
        target = item_target(plan, path=path, access=caller.access_class)
        return await caching.serve(
            request, services, target, produce=lambda: services.reader.item_body(plan, identifier)
        )

    for join in resource.relationships:
        if join.many:
            _add_sub_collection(router, resource, join, settings)
    return router


def _add_sub_collection(
    router: APIRouter, parent: Resource, join: Join, settings: Settings
) -> None:
    target = join.target
    schema = item_schema_name(target)

    @router.get(
        f"/{parent.name}/{{id}}/{join.name}",
        summary=f"List the {join.name} of one of {parent.name}",
        response_class=Response,
        responses={
            **with_links(
                cached_responses(f"{schema}List", f"A page of {target.name}"),
                200,
                item_links(target, f"$response.body#/data/0/{target.key.name}"),
            ),
            **problem_responses(*READ_ERRORS, 404),
        },
        openapi_extra={"parameters": [id_parameter(parent), *list_parameters(target, settings)]},
        operation_id=f"list_{parent.name}_{join.name}",
    )
    async def list_related(
        request: Request, services: ServicesDep, caller: ReadCallerDep
    ) -> Response:
        identifier = key_of(request, parent)
        query = parse_list_query(request, services, caller, target, Scope(join, identifier))
        path = f"/{parent.name}/{parent.key.codec.format(identifier)}/{join.name}"
        return await serve_list(request, services, caller, query, path=path, kind="related")
