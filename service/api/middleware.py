"""Pure ASGI middleware: request id, URL limit, Server-Timing, and a last-resort 500 problem."""

from __future__ import annotations

import logging
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_response
from service.errors import ServiceError, UriTooLong
from service.timing import RequestStats, current_stats

logger = logging.getLogger("service.requests")
_REQUEST_ID_MAX = 128


class RequestContextMiddleware:
    """Wraps every HTTP request: stats in a context variable, headers on the way out."""

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
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", stats.server_timing().encode()))
                headers.append((b"x-request-id", request_id.encode()))
                if stats.cache is not None:
                    headers.append((b"x-cache", stats.cache.encode()))
                message["headers"] = headers
            await send(message)

        try:
            url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(
                scope["query_string"]
            )
            if url_bytes > self.max_url_bytes:
                error: ServiceError = UriTooLong(
                    f"the URL is longer than {self.max_url_bytes} bytes"
                )
                await problem_response(error)(scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": request_id})
            if started:
                raise
            await problem_response(ServiceError("an unexpected error occurred"))(
                scope, receive, send_with_headers
            )
        finally:
            current_stats.reset(token)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= _REQUEST_ID_MAX and text.isprintable() and text.isascii():
                return text
            break
    return uuid.uuid4().hex
