"""Pure ASGI middleware: request id, URL limit, Server-Timing, metrics, log line; the deadline.

`RequestContextMiddleware` wraps everything, cache hits included. `DeadlineMiddleware` sits
inside the cache fast path: only a request that goes on to the routes can wait on the
database, so only those pay for the task that lets the deadline answer on time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_response
from service.errors import ServiceError, Unavailable, UriTooLong
from service.metrics import IN_FLIGHT, observe_request
from service.timing import RequestStats, current_stats

logger = logging.getLogger("service.requests")
_REQUEST_ID_MAX = 128


class RequestContextMiddleware:
    """Stats in a context variable; headers, metrics and the log line on the way out."""

    def __init__(self, app: ASGIApp, *, max_url_bytes: int) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stats = RequestStats()
        token = current_stats.set(stats)
        request_id = _request_id(scope)
        response = _ResponseState()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.started = True
                response.status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", stats.server_timing().encode()))
                headers.append((b"x-request-id", request_id.encode()))
                if stats.cache is not None:
                    headers.append((b"x-cache", stats.cache.encode()))
                message["headers"] = headers
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self._handle(scope, receive, send_with_headers, request_id, response)
        finally:
            IN_FLIGHT.dec()
            current_stats.reset(token)
            _record(scope, stats, response.status, request_id)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, response: _ResponseState
    ) -> None:
        url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(
            scope["query_string"]
        )
        if url_bytes > self.max_url_bytes:
            error: ServiceError = UriTooLong(f"the URL is longer than {self.max_url_bytes} bytes")
            await problem_response(error)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": request_id})
            if response.started:
                raise
            await problem_response(ServiceError("an unexpected error occurred"))(
                scope, receive, send
            )


class DeadlineMiddleware:
    """A 503 when the request outlives its deadline, sent on time.

    The handler runs in its own task: cancelling it can take a while (a dead database
    connection is closed with its own timeout), and that cleanup must not hold the reply.
    A late send from it is dropped.
    """

    def __init__(self, app: ASGIApp, *, deadline_seconds: float) -> None:
        self.app = app
        self.deadline_seconds = deadline_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = _ResponseState()

        async def guarded_send(message: Message) -> None:
            if not response.abandoned:
                response.started = True
                await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        try:
            async with asyncio.timeout(self.deadline_seconds):
                await asyncio.shield(handler)
        except TimeoutError:
            response.abandoned = True
            handler.cancel()
            handler.add_done_callback(_forget)
            if response.started:
                return  # the client sees a cut-off response; nothing better can be sent now
            late = Unavailable(f"the request took longer than {self.deadline_seconds:g} s")
            await problem_response(late)(scope, receive, send)
        except asyncio.CancelledError:
            handler.cancel()
            raise


def _record(scope: Scope, stats: RequestStats, status: int, request_id: str) -> None:
    route = scope.get("route")
    template = getattr(route, "path", None) or "unmatched"
    seconds = time.perf_counter() - stats.started
    observe_request(scope["method"], template, status, seconds, stats.queries)
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "request",
            extra={
                "method": scope["method"],
                "route": template,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "queries": stats.queries,
                "cache": stats.cache,
                "request_id": request_id,
            },
        )


class _ResponseState:
    __slots__ = ("abandoned", "started", "status")

    def __init__(self) -> None:
        self.started = False
        self.status = 500
        self.abandoned = False


def _forget(task: asyncio.Future[None]) -> None:
    """An abandoned handler's outcome is of no use any more; retrieve it so none is logged."""
    if not task.cancelled():
        task.exception()


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= _REQUEST_ID_MAX and text.isprintable() and text.isascii():
                return text
            break
    # An identifier, not a secret: the non-cryptographic generator (no system call, unlike
    # uuid4, which cost ~14 us a request here) is plenty to tell requests apart.
    return f"{random.getrandbits(128):032x}"
