"""GET reads answered in plain ASGI: FastAPI's routing and dependencies are for the rest.

Two paths share one memoized target per distinct request (caller class, path and query
string -> route template, cache key, tables, and how to produce the body):

- `HitPath` (service/api/hits.py), ahead of the whole middleware stack, answers current
  cache entries; a miss leaves its lookup in the request state so it is not repeated.
- `ReadPath` sits inside the deadline and serves everything else a read can be: a miss,
  a bypass, a `Cache-Control: no-cache` refresh, a 304, or the problem a read raised.

A request whose target cannot be worked out (a bad parameter, a missing token where one
is required, anything not a read) goes on to the routes, which report it; the routes
also describe the reads in the OpenAPI document. Both paths run the same steps as the
routed read (service/api/reads.py), so a response does not depend on which one served it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.caching import CACHE_HEADERS, LOOKUP_STATE, asks_no_cache, etag_matches
from service.api.deps import Services, parse_key
from service.api.headers import Headers, header, read_headers, text_of
from service.api.problems import problem_response
from service.api.targets import CacheTarget, item_target, list_target
from service.auth import Caller
from service.cache import Served
from service.errors import ServiceError
from service.query.memo import plan_item, plan_list
from service.query.plan import Scope as Subcollection
from service.reading import Reader
from service.timing import current_stats

READ_STATE = "read"  # where HitPath leaves the read it worked out
_FIXED_HEADERS = [(k.lower().encode(), v.encode()) for k, v in CACHE_HEADERS.items()]


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
    """Every other outcome of a read, inside the deadline; anything else to the routes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            headers = read_headers(scope["headers"])
            services: Services = scope["app"].state.services
            read = scope.get("state", {}).get(READ_STATE) or read_of(scope, headers, services)
            if read is not None:
                scope["route"] = RouteTemplate(read.template)
                await self._serve(scope, receive, send, headers, services, read)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Headers,
        services: Services,
        read: Read,
    ) -> None:
        produce = partial(read.produce, services.reader)
        target, cache = read.target, services.cache
        try:
            if target.classes & services.settings.cache_skip:
                served = await cache.bypass(produce)
            else:
                looked_up = scope.get("state", {}).get(LOOKUP_STATE)
                served = await cache.fetch(
                    target.key,
                    target.tables,
                    produce,
                    refresh=asks_no_cache(text_of(headers.get(b"cache-control"))),
                    looked_up=looked_up[1] if looked_up and looked_up[0] == target.key else None,
                )
        except ServiceError as error:
            instance = Request(scope).url.path
            await problem_response(error, instance=instance)(scope, receive, send)
            return
        await _send(send, served, if_none_match=text_of(headers.get(b"if-none-match")))


def read_of(scope: Scope, headers: Headers, services: Services) -> Read | None:
    """The request's read, or None when the routes should answer it."""
    try:
        caller = services.tokens.caller(header(headers, b"authorization"))
        if services.settings.read_requires_token and not caller.authenticated:
            return None
        return _memoized_read(
            scope["path"], scope.get("root_path", ""), scope["query_string"], caller, services
        )
    except ServiceError:
        return None  # the routed request reports it properly


@lru_cache(maxsize=4096)
def _memoized_read(
    path: str, root: str, query_string: bytes, caller: Caller, services: Services
) -> Read | None:
    """Pure in its arguments (services compare by identity); errors raise, never remembered."""
    parts = path.split("/")[1:]  # a resource has one URL: no empty segment anywhere
    resource = services.registry.get(parts[0])
    if resource is None or len(parts) > 3 or "" in parts:
        return None
    limits, access, codec = services.limits, caller.access_class, services.reader.codec
    private_ok = caller.authenticated
    if len(parts) == 1:
        query = plan_list(
            resource, query_string, private_ok=private_ok, limits=limits, scope=None, codec=codec
        )
        link = f"{root}/{resource.name}"
        return Read(
            f"/{resource.name}",
            list_target(query, path=link, access=access, kind="list"),
            partial(Reader.list_body, query=query, base_path=link),
        )
    identifier = parse_key(resource, parts[1])
    if identifier is None:
        return None
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


async def _send(send: Send, served: Served, *, if_none_match: str | None) -> None:
    stats = current_stats.get()
    if stats is not None:
        stats.cache = served.outcome.value
    _status, start, body = served_messages(served, if_none_match)
    await send(start)
    await send(body)


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
