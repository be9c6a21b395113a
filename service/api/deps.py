"""Dependencies shared by the routers: the services bundle and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.auth import Caller, TokenVerifier, invalid_token
from service.cache import ResponseCache
from service.query.plan import Limits
from service.reading import Reader
from service.repository import Database
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
    caller = services.tokens.caller(request.headers.get("authorization"))
    if services.settings.read_requires_token and not caller.authenticated:
        raise invalid_token()
    return caller


async def get_write_caller(request: Request) -> Caller:
    """Writes need a valid token; with no tokens configured, every write is refused."""
    services = services_of(request)
    caller = services.tokens.caller(request.headers.get("authorization"))
    if not caller.authenticated:
        raise invalid_token()
    return caller


ServicesDep = Annotated[Services, Depends(get_services)]
ReadCallerDep = Annotated[Caller, Depends(get_read_caller)]
WriteCallerDep = Annotated[Caller, Depends(get_write_caller)]
