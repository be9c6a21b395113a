"""Pure ASGI middleware: request id, URL limit, Server-Timing, metrics, log line; the deadline.

Both wrap every request that FastAPI's stack handles, and `ReadPath.serve_read` runs them
around every read it does not answer from a current cache entry: a hit never waits on the
database, so only the rest pay for the task that lets the deadline answer on time.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.headers import read_headers
from service.api.problems import problem_response
from service.errors import RequestTimeout, ServiceError, Unavailable, UriTooLong
from service.metrics import IN_FLIGHT, observe_request
from service.timing import RequestStats, current_stats

logger = logging.getLogger("service.requests")
_REQUEST_ID_MAX = 128
HEAD = "service.head"  # scope key: a HEAD request, served as a GET without its body


def method_of(scope: Scope) -> str:
    """The request's method as the client sent it (HEAD runs as GET inside)."""
    return "HEAD" if scope.get(HEAD) else str(scope["method"])


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
        request_id = request_id_from(read_headers(scope["headers"]).get(b"x-request-id"))
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
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            seconds = time.perf_counter() - stats.started
            record_request(
                method_of(scope), route, response.status, seconds,
                queries=stats.queries, cache=stats.cache, request_id=request_id,
            )  # fmt: skip

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, response: _ResponseState
    ) -> None:
        if url_bytes(scope) > self.max_url_bytes:
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

    def __init__(self, app: ASGIApp, *, deadline_seconds: float, commit_seconds: float) -> None:
        self.app = app
        self.deadline_seconds = deadline_seconds
        self.commit_seconds = commit_seconds  # how long a COMMIT already sent is waited for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = _ResponseState()
        body = _BodyState()

        async def guarded_send(message: Message) -> None:
            if not response.abandoned:
                response.started = True
                await send(message)

        async def watched_receive() -> Message:
            body.reading = True
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body.complete = True
            return message

        handler = asyncio.ensure_future(self.app(scope, watched_receive, guarded_send))
        try:
            async with asyncio.timeout(self.deadline_seconds):
                await asyncio.shield(handler)
        except TimeoutError:
            if _commit_sent():
                # A write whose COMMIT is on its way is answered with its outcome: a 503 now
                # could tell the client "not written" about a write that then lands. The
                # wait for it is bounded (past it, the outcome is undetermined: a 503).
                done, _ = await asyncio.wait({handler}, timeout=self.commit_seconds)
                if done:
                    handler.result()
                    return
            response.abandoned = True
            handler.cancel()
            handler.add_done_callback(_forget)
            if response.started:
                return  # the client sees a cut-off response; nothing better can be sent now
            late: ServiceError = Unavailable(
                f"the request took longer than {self.deadline_seconds:g} s"
            )
            if body.waiting:
                # The app was still waiting for the client's body: a slow client, not a 5xx.
                late = RequestTimeout(
                    f"the request body did not arrive within {self.deadline_seconds:g} s"
                )
            await problem_response(late)(scope, receive, send)
        except asyncio.CancelledError:
            handler.cancel()
            raise


def _commit_sent() -> bool:
    stats = current_stats.get()
    return stats is not None and stats.committing


def record_request(
    method: str,
    route: str,
    status: int,
    seconds: float,
    *,
    queries: int,
    cache: str | None,
    request_id: str,
) -> None:
    """A finished request into the metrics and, at INFO, the log."""
    observe_request(method, route, status, seconds, queries)
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "request",
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "queries": queries,
                "cache": cache,
                "request_id": request_id,
            },
        )


def url_bytes(scope: Scope) -> int:
    return len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])


class _BodyState:
    """Whether the app has been handed the last chunk of the request body."""

    __slots__ = ("complete", "reading")

    def __init__(self) -> None:
        self.complete = False
        self.reading = False

    @property
    def waiting(self) -> bool:
        return self.reading and not self.complete


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


def request_id_from(header: bytes | None) -> str:
    """The client's `X-Request-ID` when it is a sensible one, else a new one."""
    if header is not None and 0 < len(header) <= _REQUEST_ID_MAX:
        text = header.decode("latin-1")
        if text.isprintable() and text.isascii():
            return text
    # An identifier, not a secret: the non-cryptographic generator (no system call, unlike
    # uuid4, which cost ~14 us a request here) is plenty to tell requests apart.
    return f"{random.getrandbits(128):032x}"
