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


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request needs, built once by the app's lifespan."""

    settings: Settings
    limits: Limits
    db: Database
    reader: Reader
    writer: Writer
    tokens: TokenVerifier
    cache: ResponseCache


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_read_caller(request: Request) -> Caller:
    """Anonymous or token holder; a bad token is a 401 even on public reads."""
    services = get_services(request)
    caller = services.tokens.caller(request.headers.get("authorization"))
    if services.settings.read_requires_token and not caller.authenticated:
        raise invalid_token()
    return caller


def get_write_caller(request: Request) -> Caller:
    """Writes need a valid token; with no tokens configured, every write is refused."""
    services = get_services(request)
    caller = services.tokens.caller(request.headers.get("authorization"))
    if not caller.authenticated:
        raise invalid_token()
    return caller


ServicesDep = Annotated[Services, Depends(get_services)]
ReadCallerDep = Annotated[Caller, Depends(get_read_caller)]
WriteCallerDep = Annotated[Caller, Depends(get_write_caller)]
