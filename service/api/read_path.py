"""Every GET of a resource, from the request to the bytes: `serve_read`, one path.

`ServiceApp` (service/app.py) hands each GET (and HEAD, as a GET without its body) to
`ReadPath.serve_read` before FastAPI's stack. In order:

1. the path names a resource, else the request is not a read and goes on to the routes
   (health, docs, metrics, and the router's 404);
2. the URL limit, the caller and the plan: one memoized `Read` per distinct request
   (caller class, path, query string), or the problem the request is;
3. the fast case: a current cache entry, sent with no more than the headers, the metrics
   and the log line (a lookup and two `send`s: most reads end here);
4. everything else in the request context (timed, counted) and under the deadline: the
   problem, or the body from the database through the cache (a miss, a bypass, a
   `no-cache` refresh, a 304).

The FastAPI read routes only describe these reads in the OpenAPI document.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.caching import CACHE_HEADERS, asks_no_cache, etag_matches
from service.api.deps import Services, parse_key
from service.api.headers import Headers, header, read_headers, text_of
from service.api.middleware import (
    DeadlineMiddleware,
    RequestContextMiddleware,
    method_of,
    record_request,
    request_id_from,
    url_bytes,
)
from service.api.problems import problem_response
from service.api.targets import CacheTarget, item_target, list_target
from service.auth import Caller, invalid_token
from service.cache import CacheUnavailable, Outcome, Served
from service.cache.backend import etag_of
from service.cache.layer import Lookup
from service.errors import NotFound, ServiceError, UriTooLong
from service.explain import explained, split_explain
from service.metrics import IN_FLIGHT
from service.query.memo import plan_item, plan_list
from service.query.plan import Scope as Subcollection
from service.reading import Reader
from service.repository.database import DRIVER_ERRORS, translate_error
from service.timing import current_stats, timing_tail

logger = logging.getLogger("service.requests")
_FIXED_HEADERS = [(k.lower().encode(), v.encode()) for k, v in CACHE_HEADERS.items()]
_HIT = Outcome.HIT.value
_HIT_BYTES = _HIT.encode()
_MEMO = 4096  # distinct reads remembered per app (a client cycling cursors cannot grow it)


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """Stands in for the matched route in the scope, so metrics label the read like the rest."""

    path: str


@dataclass(frozen=True, slots=True)
class Read:
    template: str
    target: CacheTarget
    produce: Callable[[Reader], Awaitable[bytes]]  # the body, from the database


class ReadPath:
    """Answers every read of a resource; owns the memo of planned reads (per app)."""

    def __init__(self, services: Services, *, max_url_bytes: int, deadline_seconds: float) -> None:
        self.services = services
        self.max_url_bytes = max_url_bytes
        self.deadline_seconds = deadline_seconds
        self.commit_seconds = deadline_seconds
        self._resources = frozenset(services.registry)  # the first test every GET meets
        # Pure in its arguments; a request that raises is not remembered.
        self._plan: Callable[[str, str, bytes, Caller], Read | None] = lru_cache(maxsize=_MEMO)(
            self._plan_read
        )

    async def serve_read(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """True when the request was a read of a resource and has been answered."""
        started = time.perf_counter()
        path: str = scope["path"]
        if path.split("/", 2)[1] not in self._resources:
            return False  # not a resource: health, docs, metrics, or the router's 404
        headers = read_headers(scope["headers"])
        query_string: bytes = scope["query_string"]
        explain: str | None = None
        try:
            if b"explain" in query_string or b"%" in query_string:
                explain, query_string = split_explain(query_string)
            read = self._read(scope, headers, query_string, explain=explain is not None)
        except ServiceError as error:
            problem = _problem(error, path)
            await self._in_context(scope, receive, send, problem, template=self._template(path))
            return True
        except Exception as error:  # a bug: the context logs it and answers a 500 problem
            await self._in_context(
                scope, receive, send, _raise(error), template=self._template(path)
            )
            return True
        if read is None:
            return False  # a path the resource does not have: the router's 404
        if explain is not None:
            answer = partial(self._explain, read, explain)
            await self._in_context(scope, receive, send, answer, template=read.template)
            return True
        refresh = asks_no_cache(text_of(headers.get(b"cache-control")))
        cached = not read.target.classes & self.services.settings.cache_skip
        lookup: Lookup | None = None
        if cached and not refresh:
            try:
                served, lookup = await self.services.cache.hit(read.target.key, read.target.tables)
            except CacheUnavailable:
                served = None
            if served is not None:
                await _send_hit(scope, send, served, headers, started, template=read.template)
                return True
        answer = partial(self._answer, read, lookup, headers, refresh=refresh, cached=cached)
        await self._in_context(scope, receive, send, answer, template=read.template)
        return True

    def _template(self, path: str) -> str | None:
        """The route a refused read was for, as metrics and logs label it; None for a path
        no route has (labels never take a client's text)."""
        parts = path.split("/")[1:]
        resource = self.services.registry.get(parts[0])
        if resource is None or "" in parts or len(parts) > 3:
            return None
        if len(parts) == 3:
            join = resource.relationship(parts[2])
            return f"/{parts[0]}/{{id}}/{parts[2]}" if join is not None and join.many else None
        return f"/{parts[0]}" if len(parts) == 1 else f"/{parts[0]}/{{id}}"

    def _read(
        self, scope: Scope, headers: Headers, query_string: bytes, *, explain: bool
    ) -> Read | None:
        """The memoized read of this request; the problem it is, raised. Seeing the SQL
        (`explain`) takes a valid token whatever reads need."""
        if url_bytes(scope) > self.max_url_bytes:
            raise UriTooLong(f"the URL is longer than {self.max_url_bytes} bytes")
        caller = self.services.tokens.caller(header(headers, b"authorization"))
        needs_token = explain or self.services.settings.read_requires_token
        if needs_token and not caller.authenticated:
            raise invalid_token()
        return self._plan(scope["path"], scope.get("root_path", ""), query_string, caller)

    def _plan_read(self, path: str, root: str, query_string: bytes, caller: Caller) -> Read | None:
        """What a read path means: its route template, cache target and body producer."""
        services = self.services
        parts = path.split("/")[1:]  # a resource has one URL: no empty segment anywhere
        resource = services.registry.get(parts[0])
        if resource is None or len(parts) > 3 or "" in parts:
            return None
        limits, access, codec = services.limits, caller.access_class, services.reader.codec
        private_ok = caller.authenticated
        if len(parts) == 1:
            query = plan_list(
                resource, query_string, private_ok=private_ok, limits=limits, scope=None,
                codec=codec,
            )  # fmt: skip
            link = f"{root}/{resource.name}"
            return Read(
                f"/{resource.name}",
                list_target(query, path=link, access=access, kind="list"),
                partial(Reader.list_body, query=query, base_path=link),
            )
        identifier = parse_key(resource, parts[1])
        if identifier is None:
            raise NotFound("no such resource")  # an id has one spelling
        if len(parts) == 2:
            plan = plan_item(resource, query_string, private_ok=private_ok, limits=limits)
            return Read(
                f"/{resource.name}/{{id}}",
                item_target(plan, path=f"{root}/{resource.name}/{parts[1]}", access=access),
                partial(Reader.item_body, plan=plan, identifier=identifier),
            )
        join = resource.relationship(parts[2])
        if join is None or not join.many:
            return None
        query = plan_list(
            join.target, query_string, private_ok=private_ok, limits=limits,
            scope=Subcollection(join, identifier), codec=codec,
        )  # fmt: skip
        link = f"{root}/{resource.name}/{parts[1]}/{join.name}"
        return Read(
            f"/{resource.name}/{{id}}/{join.name}",
            list_target(query, path=link, access=access, kind="related"),
            partial(Reader.list_body, query=query, base_path=link),
        )

    async def _in_context(
        self, scope: Scope, receive: Receive, send: Send, app: ASGIApp, *, template: str | None
    ) -> None:
        """`app` inside the request context (timed, counted, logged) and the deadline."""
        if template is not None:
            scope["route"] = RouteTemplate(template)
        inner = DeadlineMiddleware(
            app, deadline_seconds=self.deadline_seconds, commit_seconds=self.commit_seconds
        )
        await RequestContextMiddleware(inner, max_url_bytes=self.max_url_bytes)(
            scope, receive, send
        )

    async def _answer(
        self,
        read: Read,
        lookup: Lookup | None,
        headers: Headers,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        refresh: bool,
        cached: bool,
    ) -> None:
        """A read the fast case did not answer: through the cache, or past it."""
        services = self.services
        produce = partial(read.produce, services.reader)
        target = read.target
        try:
            if not cached:
                served = await services.cache.bypass(produce, target.tables)
            else:
                served = await services.cache.fetch(
                    target.key, target.tables, produce, refresh=refresh, looked_up=lookup
                )
        except ServiceError as error:
            await _problem(error, scope["path"])(scope, receive, send)
            return
        stats = current_stats.get()
        if stats is not None:
            stats.cache = served.outcome.value
        if_none_match = text_of(headers.get(b"if-none-match"))
        _status, start, body = served_messages(served, if_none_match)
        await send(start)
        await send(body)

    async def _explain(
        self, read: Read, mode: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """The read, run past the cache (never looked up, never stored), with the statements
        it ran (and their plans) in its body."""
        services = self.services
        stats = current_stats.get()
        assert stats is not None  # inside the request context
        stats.ran = []
        try:
            served = await services.cache.bypass(
                partial(read.produce, services.reader), read.target.tables
            )
            ran, stats.ran = stats.ran, None
            body = await explained(served.body, ran, mode)
        except ServiceError as error:
            await _problem(error, scope["path"])(scope, receive, send)
            return
        except DRIVER_ERRORS as exc:  # an EXPLAIN that failed
            await _problem(translate_error(exc), scope["path"])(scope, receive, send)
            return
        stats.cache = Outcome.BYPASS.value
        headers = [
            (b"cache-control", b"no-store"),
            (b"vary", b"Authorization"),
            (b"etag", etag_of(body).encode()),
            (b"content-length", b"%d" % len(body)),
            (b"content-type", b"application/json"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _raise(error: Exception) -> ASGIApp:
    async def app(_scope: Scope, _receive: Receive, _send: Send) -> None:
        raise error

    return app


def _problem(error: ServiceError, path: str) -> ASGIApp:
    instance = None if isinstance(error, UriTooLong) else path
    return problem_response(error, instance=instance)


async def _send_hit(
    scope: Scope, send: Send, served: Served, headers: Headers, started: float, *, template: str
) -> None:
    """A current entry: the same status, headers and body as the slow path would send."""
    request_id = request_id_from(headers.get(b"x-request-id"))
    timing = timing_tail(0, 0.0, time.perf_counter() - started)
    context = (
        (b"server-timing", timing.encode()),
        (b"x-request-id", request_id.encode()),
        (b"x-cache", _HIT_BYTES),
    )
    status, start, body = served_messages(served, text_of(headers.get(b"if-none-match")), context)
    IN_FLIGHT.inc()
    try:
        await send(start)
        await send(body)
    finally:
        IN_FLIGHT.dec()
    record_request(
        method_of(scope), template, status, time.perf_counter() - started,
        queries=0, cache=_HIT, request_id=request_id,
    )  # fmt: skip


def served_messages(
    served: Served, if_none_match: str | None, extra: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[int, Message, Message]:
    """Status, start and body messages for a served page: a 304 when the client holds its
    ETag, else 200 and the body; `extra` headers go last."""
    etag = served.etag
    status = 304 if etag_matches(if_none_match, etag) else 200
    headers = [*_FIXED_HEADERS, (b"etag", etag.encode())]
    body = served.body if status == 200 else b""
    if status == 200:
        headers += [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]
    headers += extra
    start: Message = {"type": "http.response.start", "status": status, "headers": headers}
    return status, start, {"type": "http.response.body", "body": body}
