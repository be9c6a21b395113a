"""Current cache entries, answered before FastAPI's middleware stack is entered.

A hit is the commonest answer and the cheapest: a lookup and two `send`s. Inside the
stack it paid for layers that have nothing to do on it (the error page, the body limit,
the request context's wrapped `send`), about as much again as its own work. So the app
(`ServiceApp`) tries this path first for every GET, and does here, once, what the request
context does for the rest: the URL limit, the request id, `Server-Timing`, the metrics and
the log line. Anything it does not answer goes on through the stack, with the read and
the lookup it worked out left in the scope for `ReadPath`.
"""

from __future__ import annotations

import logging
import time

from starlette.types import Message, Scope, Send

from service.api.caching import LOOKUP_STATE, asks_no_cache
from service.api.deps import Services
from service.api.fastpath import READ_STATE, Read, read_of, served_messages
from service.api.headers import Headers, read_headers, text_of
from service.api.middleware import method_of, record_request, request_id_from, url_bytes
from service.cache import CacheUnavailable, Outcome, Served
from service.metrics import IN_FLIGHT
from service.timing import timing_tail

logger = logging.getLogger("service.requests")
_HIT = Outcome.HIT.value
_HIT_BYTES = _HIT.encode()


class HitPath:
    """Answers a GET from a current cache entry, or says it did not."""

    __slots__ = ("max_url_bytes", "services")

    def __init__(self, services: Services, *, max_url_bytes: int) -> None:
        self.services = services
        self.max_url_bytes = max_url_bytes

    async def answer(self, scope: Scope, send: Send) -> bool:
        """True when the response has been sent; False leaves the request to the stack."""
        started = time.perf_counter()
        headers = read_headers(scope["headers"])
        cache = self.services.cache
        try:
            read = self._read(scope, headers)
            if read is None:
                return False
            target = read.target
            served, lookup = await cache.hit(target.key, target.tables)
        except CacheUnavailable:
            return False
        except Exception:
            # The stack runs the same steps and turns the failure into a problem response.
            logger.exception("the cache fast path failed; the request goes the long way")
            return False
        if served is None:
            scope["state"][LOOKUP_STATE] = (target.key, lookup)
            return False
        request_id = request_id_from(headers.get(b"x-request-id"))
        status, start, body = _hit_response(served, headers, started, request_id)
        IN_FLIGHT.inc()
        try:
            await send(start)
            await send(body)
        finally:
            IN_FLIGHT.dec()
        seconds = time.perf_counter() - started
        record_request(
            method_of(scope),
            read.template,
            status,
            seconds,
            queries=0,
            cache=_HIT,
            request_id=request_id,
        )
        return True

    def _read(self, scope: Scope, headers: Headers) -> Read | None:
        """The read to look up, or None when the cache is not to be asked."""
        if url_bytes(scope) > self.max_url_bytes:
            return None  # the stack's 414
        if asks_no_cache(text_of(headers.get(b"cache-control"))):
            return None
        services = self.services
        read = read_of(scope, headers, services)
        if read is None:
            return None
        scope.setdefault("state", {})[READ_STATE] = read  # ReadPath need not work it out
        if read.target.classes & services.settings.cache_skip:
            return None
        return read


def _hit_response(
    served: Served, headers: Headers, started: float, request_id: str
) -> tuple[int, Message, Message]:
    """The same status, headers and body as the stack would send for this entry."""
    timing = timing_tail(0, 0.0, time.perf_counter() - started)
    context = (
        (b"server-timing", timing.encode()),
        (b"x-request-id", request_id.encode()),
        (b"x-cache", _HIT_BYTES),
    )
    return served_messages(served, text_of(headers.get(b"if-none-match")), context)
