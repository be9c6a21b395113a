"""HTTP around the response cache: the cache headers, `no-cache`, and ETag matching."""

from __future__ import annotations

# Revalidate every time (the ETag makes that cheap) and never let a shared cache mix callers.
CACHE_HEADERS = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}


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
