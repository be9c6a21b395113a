"""HTTP around the response cache: which requests use it, ETag/304, and the cache headers."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from service.api.deps import Services
from service.api.headers import read_headers, text_of
from service.api.targets import CacheTarget
from service.cache import Served
from service.cache.layer import Produce
from service.timing import current_stats

# Revalidate every time (the ETag makes that cheap) and never let a shared cache mix callers.
CACHE_HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}
# Where the fast path leaves a lookup that missed, so the routed request does not repeat it.
LOOKUP_STATE = "cache_lookup"


async def serve(
    request: Request, services: Services, target: CacheTarget, *, produce: Produce
) -> Response:
    """Through the cache unless the request or the configuration says otherwise."""
    cache = services.cache
    headers = read_headers(request.scope["headers"])
    if target.classes & services.settings.cache_skip:
        served = await cache.bypass(produce)
    else:
        refresh = asks_no_cache(text_of(headers.get(b"cache-control")))
        looked_up = request.scope.get("state", {}).get(LOOKUP_STATE)
        if looked_up is not None and looked_up[0] != target.key:
            looked_up = None
        served = await cache.fetch(
            target.key,
            target.tables,
            produce,
            refresh=refresh,
            looked_up=None if looked_up is None else looked_up[1],
        )
    return respond(served, if_none_match=text_of(headers.get(b"if-none-match")))


def respond(served: Served, *, if_none_match: str | None) -> Response:
    stats = current_stats.get()
    if stats is not None:
        stats.cache = served.outcome.value
    headers = {**CACHE_HEADERS, "ETag": served.etag}
    if etag_matches(if_none_match, served.etag):
        return Response(status_code=304, headers=headers)
    return Response(served.body, media_type="application/json", headers=headers)


def asks_no_cache(cache_control: str | None) -> bool:
    if not cache_control:
        return False
    return any(
        part.strip() in ("no-cache", "no-store", "max-age=0")
        for part in cache_control.lower().split(",")
    )


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison: `*`, or any listed tag equal to ours ignoring `W/`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in tags
