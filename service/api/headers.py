"""Request headers read one way on every path: repeated list headers joined, others unique."""

from __future__ import annotations

from collections.abc import Iterable

from service.errors import InvalidHeader

Headers = dict[bytes, bytes]

# Headers whose repeats mean one comma-separated list (RFC 9110 5.3); any other header
# given twice is ambiguous, and the service must not pick one copy on one path and the
# other copy on another (two `Authorization`s would be two identities).
_LISTS = frozenset({b"cache-control", b"if-none-match"})
REPEATED = b"\x00repeated"  # stands for a header that is not a list and came more than once


def read_headers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Lower-case name -> value, as ASGI gives them, with repeats joined or marked."""
    headers: Headers = {}
    for name, value in raw:
        if name in headers:
            value = headers[name] + b", " + value if name in _LISTS else REPEATED
        headers[name] = value
    return headers


def header(headers: Headers, name: bytes) -> str | None:
    """The one value of `name`, or None; a header given more than once is a 400."""
    value = headers.get(name)
    if value is None:
        return None
    if value is REPEATED:
        shown = name.decode("latin-1").title()
        raise InvalidHeader(shown, f"the {shown} header is given more than once")
    return value.decode("latin-1")


def text_of(value: bytes | None) -> str | None:
    """A list header's joined value (or any raw value) as text."""
    return None if value is None else value.decode("latin-1")
