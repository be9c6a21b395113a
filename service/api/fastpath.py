"""Cache hits answered before routing: a GET whose response is current never reaches FastAPI.

It runs the same steps as the routed read (caller, memoized plan, canonical key, one
lookup) and sends the stored bytes. Anything unusual (an error to report, a bypass, a
miss) goes on to the routed request unchanged; a miss leaves its lookup in the request
state so the routed request does not look up again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.caching import CACHE_HEADERS, LOOKUP_STATE, asks_no_cache, etag_matches
from service.api.deps import Services
from service.api.targets import CacheTarget, item_target, list_target
from service.auth import Caller
from service.cache import CacheUnavailable, Served
from service.errors import ServiceError
from service.query.memo import plan_item, plan_list
from service.query.plan import Scope as Subcollection
from service.query.values import INT_MAX
from service.resources import RESOURCES
from service.timing import current_stats

_FIXED_HEADERS = [(k.lower().encode(), v.encode()) for k, v in CACHE_HEADERS.items()]


@dataclass(frozen=True, slots=True)
class RouteTemplate:
    """Stands in for the matched route in the scope, so metrics label the hit like the rest."""

    path: str


class CacheFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # One app's middleware sees one set of services, so a request's target depends only
        # on what the memo is keyed by. Errors raise and are not remembered.
        self._targets = lru_cache(maxsize=4096)(_target)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            headers = dict(scope["headers"])
            served = await self._try(scope, headers)
            if served is not None:
                await _send(send, served, if_none_match=_text(headers.get(b"if-none-match")))
                return
        await self.app(scope, receive, send)

    async def _try(self, scope: Scope, headers: dict[bytes, bytes]) -> Served | None:
        if asks_no_cache(_text(headers.get(b"cache-control"))):
            return None
        services: Services = scope["app"].state.services
        try:
            caller = services.tokens.caller(_text(headers.get(b"authorization")))
            if services.settings.read_requires_token and not caller.authenticated:
                return None
            found = self._targets(
                scope["path"], scope.get("root_path", ""), scope["query_string"], caller, services
            )
        except ServiceError:
            return None  # the routed request reports it properly
        if found is None:
            return None
        template, target = found
        try:
            served, lookup = await services.cache.hit(target.key, target.tables)
        except CacheUnavailable:
            return None
        if served is None:
            scope.setdefault("state", {})[LOOKUP_STATE] = (target.key, lookup)
            return None
        scope["route"] = RouteTemplate(template)
        return served


def _target(
    path: str, root: str, query_string: bytes, caller: Caller, services: Services
) -> tuple[str, CacheTarget] | None:
    """The route template and cache target of a cacheable read, or None for anything else."""
    found = _read_target(path, root, query_string, caller, services)
    if found is None or found[1].classes & services.settings.cache_skip:
        return None
    return found


def _read_target(
    path: str, root: str, query_string: bytes, caller: Caller, services: Services
) -> tuple[str, CacheTarget] | None:
    parts = path.strip("/").split("/")
    resource = RESOURCES.get(parts[0])
    if resource is None or len(parts) > 3 or path.endswith("/"):
        return None
    limits, access = services.limits, caller.access_class
    if len(parts) == 1:
        query = plan_list(
            resource.name,
            query_string,
            private_ok=caller.authenticated,
            limits=limits,
            scope=None,
            codec=services.reader.codec,
        )
        path = f"{root}/{resource.name}"
        return f"/{resource.name}", list_target(query, path=path, access=access, kind="list")
    identifier = _id(parts[1])
    if identifier is None:
        return None
    if len(parts) == 2:
        plan = plan_item(
            resource.name, query_string, private_ok=caller.authenticated, limits=limits
        )
        path = f"{root}/{resource.name}/{identifier}"
        return f"/{resource.name}/{{id}}", item_target(plan, path=path, access=access)
    relationship = resource.relationship(parts[2])
    if relationship is None:
        return None
    sub = Subcollection(parent=resource.name, relationship=relationship.name, parent_id=identifier)
    query = plan_list(
        relationship.target,
        query_string,
        private_ok=caller.authenticated,
        limits=limits,
        scope=sub,
        codec=services.reader.codec,
    )
    path = f"{root}/{resource.name}/{identifier}/{relationship.name}"
    template = f"/{resource.name}/{{id}}/{relationship.name}"
    return template, list_target(query, path=path, access=access, kind="related")


def _id(text: str) -> int | None:
    """Only the canonical spelling of a valid id; the router handles the rest."""
    if not text.isascii() or not text.isdigit() or text.startswith("0") or len(text) > 10:
        return None
    value = int(text)
    return value if value <= INT_MAX else None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def _send(send: Send, served: Served, *, if_none_match: str | None) -> None:
    stats = current_stats.get()
    if stats is not None:
        stats.cache = served.outcome.value
    headers = [*_FIXED_HEADERS, (b"etag", served.etag.encode())]
    if etag_matches(if_none_match, served.etag):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers += [
        (b"content-length", str(len(served.body)).encode()),
        (b"content-type", b"application/json"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": served.body})
