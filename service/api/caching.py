"""HTTP around the response cache: which requests use it, ETag/304, and the cache headers."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from service.api.deps import Services
from service.cache import Served
from service.cache.layer import Produce
from service.timing import current_stats

# Revalidate every time (the ETag makes that cheap) and never let a shared cache mix callers.
CACHE_HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}


async def serve(
    request: Request,
    services: Services,
    *,
    key: str,
    tables: tuple[str, ...],
    produce: Produce,
    classes: frozenset[str],
) -> Response:
    """Through the cache unless the request or the configuration says otherwise."""
    cache = services.cache
    if classes & services.settings.cache_skip:
        served = await cache.bypass(produce)
    else:
        refresh = _asks_no_cache(request)
        served = await cache.fetch(key, tables, produce, refresh=refresh)
    return respond(request, served)


def respond(request: Request, served: Served) -> Response:
    stats = current_stats.get()
    if stats is not None:
        stats.cache = served.outcome.value
    headers = {**CACHE_HEADERS, "ETag": served.etag}
    if _matches(request.headers.get("if-none-match"), served.etag):
        return Response(status_code=304, headers=headers)
    return Response(served.body, media_type="application/json", headers=headers)


def _asks_no_cache(request: Request) -> bool:
    directives = request.headers.get("cache-control", "").lower()
    return any(
        part.strip() in ("no-cache", "no-store", "max-age=0") for part in directives.split(",")
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison: `*`, or any listed tag equal to ours ignoring `W/`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in tags
