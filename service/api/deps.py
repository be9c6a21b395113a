"""Dependencies shared by the routers: the services bundle and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from service.api.headers import header, read_headers
from service.auth import Caller, TokenVerifier, invalid_token
from service.cache import ResponseCache
from service.errors import InvalidParameter, NotFound
from service.query.plan import Limits
from service.reading import Reader
from service.repository import Database
from service.schema import Registry, Resource
from service.settings import Settings
from service.writing import Writer


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity
class Services:
    """Everything a request needs, built once by the app's lifespan."""

    settings: Settings
    limits: Limits
    db: Database
    reader: Reader
    writer: Writer
    tokens: TokenVerifier
    cache: ResponseCache
    registry: Registry


# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a
# worker thread, two thread hops per request for a few attribute reads.


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_read_caller(request: Request) -> Caller:
    """Anonymous or token holder; a bad token is a 401 even on public reads."""
    services = services_of(request)
    caller = services.tokens.caller(authorization_of(request))
    if services.settings.read_requires_token and not caller.authenticated:
        raise invalid_token()
    return caller


async def get_write_caller(request: Request) -> Caller:
    """Writes need a valid token; with no tokens configured, every write is refused."""
    services = services_of(request)
    caller = services.tokens.caller(authorization_of(request))
    if not caller.authenticated:
        raise invalid_token()
    return caller


def authorization_of(request: Request) -> str | None:
    """The one `Authorization` header, read as every other path reads it."""
    return header(read_headers(request.scope["headers"]), b"authorization")


def parse_key(resource: Resource, text: str) -> Any | None:
    """The key a path segment spells in its one canonical form, or None: `1`, never `01`,
    `+1`, `1_0` or ` 1`; a UUID in lower case. A resource has one URL."""
    codec = resource.key.codec
    try:
        value = codec.parse(text, parameter="id")
    except InvalidParameter:
        return None
    return value if codec.format(value) == text else None


def key_of(request: Request, resource: Resource) -> Any:
    """The route's `{id}` as the resource's key; any other spelling names nothing (404)."""
    value = parse_key(resource, str(request.path_params.get("id", "")))
    if value is None:
        raise NotFound("no such resource")
    return value


ServicesDep = Annotated[Services, Depends(get_services)]
ReadCallerDep = Annotated[Caller, Depends(get_read_caller)]
WriteCallerDep = Annotated[Caller, Depends(get_write_caller)]
