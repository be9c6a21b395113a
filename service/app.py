"""create_app(settings): the FastAPI app, its routers, and the services its lifespan owns."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.types import Message, Receive, Scope, Send

from service import __version__
from service.api.deps import Services
from service.api.docs import install_docs
from service.api.health import router as health_router
from service.api.middleware import HEAD, DeadlineMiddleware, RequestContextMiddleware
from service.api.problems import install_problem_handlers
from service.api.read_path import ReadPath
from service.api.reads import make_read_router
from service.api.writes import make_write_router
from service.auth import TokenVerifier
from service.cache import ResponseCache, make_backend, make_positions
from service.db import autocommit_reads, make_engine, make_sessionmaker
from service.logs import configure_logging
from service.openapi import component_schemas, openapi_tags
from service.passwords import PasswordHasher
from service.process import settle_garbage_collector
from service.query.cursor import CursorCodec
from service.query.plan import Limits
from service.reading import Reader
from service.repository import Database
from service.repository.replicas import make_replicas
from service.schema import Registry, load_base, registry_of
from service.settings import Settings
from service.writing import Writer

logger = logging.getLogger("service")

DESCRIPTION = """GraphQL-style field selection on plain REST.

Name the attributes you want with `fields`, embed relationships with `include`, filter with
`filter[...]`, sort with `sort` and page with `cursor`. Every list request runs exactly
`1 + k` SQL statements for `k` include paths. Errors are `application/problem+json`.
"""


def make_services(settings: Settings) -> Services:
    """Engine and friends; nothing connects until the first request needs the database."""
    registry = registry_of(load_base(settings.models))
    engine = make_engine(settings)
    replicas = make_replicas(settings)
    db = Database(
        engine,
        make_sessionmaker(engine),
        autocommit_reads=autocommit_reads(engine, settings),
        connections=settings.pool_size + settings.max_overflow,
        wait_seconds=settings.pool_timeout,
        replicas=replicas,
    )
    secret = settings.cursor_secret.encode() or secrets.token_bytes(32)
    reader = Reader(
        db,
        CursorCodec(secret),
        max_embedded_rows=settings.max_embedded_rows,
        loader=settings.loader,
    )
    backend = make_backend(settings)
    cache = ResponseCache(
        backend,
        wait_seconds=settings.cache_wait_seconds,
        positions=make_positions(backend, settings) if replicas is not None else None,
    )
    writer = Writer(db, reader, PasswordHasher(settings), cache)
    return Services(
        settings=settings,
        limits=Limits.from_settings(settings),
        db=db,
        reader=reader,
        writer=writer,
        tokens=TokenVerifier(settings.api_tokens),
        cache=cache,
        registry=registry,
    )


class ServiceApp(FastAPI):
    """FastAPI, with every read of a resource answered before its stack (`serve_read`)."""

    reads: ReadPath | None = None  # None: the app is still being built

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if scope["method"] == "HEAD":
            # RFC 9110: HEAD is GET without the body, wherever GET is served.
            scope, send = {**scope, "method": "GET", HEAD: True}, _without_body(send)
        reads = self.reads
        if scope["method"] == "GET" and reads and await reads.serve_read(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


def _without_body(send: Send) -> Send:
    """The response's status and headers (Content-Length included), no body bytes."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return send_head


def create_app(settings: Settings) -> ServiceApp:
    services = make_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not settings.cursor_secret:
            logger.warning("CURSOR_SECRET is not set: cursors are valid for this process only")
        if not services.tokens.configured:
            logger.warning("API_TOKENS is empty: every write will be refused with 401")
        settle_garbage_collector()
        replicas = services.db.replicas
        if replicas is not None:
            replicas.start()
        yield
        services.writer.hasher.close()
        await services.cache.close()
        if replicas is not None:
            await replicas.stop()
        await services.db.engine.dispose()

    app = ServiceApp(
        title="service",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=openapi_tags(services.registry),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,  # a redirect would be built from the Host header; one URL each
        telemetry=_telemetry(settings.opentelemetry),
    )
    app.state.services = services
    install_problem_handlers(app)
    install_docs(app)
    app.include_router(health_router)
    for resource in services.registry.values():
        app.include_router(make_read_router(resource, settings))
        app.include_router(make_write_router(resource, settings))
    # Outermost last: request context (timed, counted, logged), then the deadline. Reads of
    # resources are answered before both (ReadPath runs the same two around what it does).
    app.add_middleware(
        DeadlineMiddleware,
        deadline_seconds=settings.request_timeout_seconds,
        # A COMMIT already sent is given as long as one statement may take (at least the
        # deadline again); past that its 503 says the outcome is undetermined.
        commit_seconds=max(settings.request_timeout_seconds, settings.statement_timeout_ms / 1000),
    )
    app.add_middleware(RequestContextMiddleware, max_url_bytes=settings.max_url_bytes)
    app.reads = ReadPath(
        services,
        max_url_bytes=settings.max_url_bytes,
        deadline_seconds=settings.request_timeout_seconds,
    )
    _add_components(app, services.registry)
    return app


def _telemetry(enabled: bool) -> TelemetryConfig:
    """FastAPI's OpenTelemetry bridge, when asked for. Off, it costs nothing; on, it looks
    for configured providers on every request (about 15 us), which /metrics does not need."""
    return {"tracing": enabled, "metrics": enabled, "logs": enabled}


def _add_components(app: FastAPI, registry: Registry) -> None:
    """Merge the registry's schemas into the generated OpenAPI document once."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _drop_impossible_422(schema)
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(component_schemas(registry))
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_impossible_422(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 for path parameters; here a bad id is a 400 problem instead,
    and only a request body can give a 422."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if "requestBody" not in operation:
                operation.get("responses", {}).pop("422", None)
    for name in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(name, None)


def app_factory() -> ServiceApp:
    """For `uvicorn --factory` and worker processes: settings from the environment."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
