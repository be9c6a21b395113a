"""Parse a raw query string into plain values; knows no resources or models."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from urllib.parse import parse_qsl

from service.errors import InvalidParameter, suggest

Path = tuple[str, ...]

MAX_PATH_NAMES = 32  # far past any configured depth; bounds the work on a hostile path
OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith", "isnull")

_KEY = re.compile(r"^([a-z_]+)((?:\[[^\[\]]*\])*)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Count(Enum):
    NONE = "false"
    EXACT = "true"
    ESTIMATED = "estimated"


class Endpoint(Enum):
    """Which parameters a route takes: items and writes shape their output only."""

    LIST = "list"
    ITEM = "item"


@dataclass(frozen=True, slots=True)
class FilterSpec:
    path: Path  # the relationships crossed, then the attribute
    op: str
    raw: str
    parameter: str


@dataclass(frozen=True, slots=True)
class SortKey:
    name: str
    descending: bool


@dataclass(frozen=True, slots=True)
class RawQuery:
    fields: tuple[tuple[Path, tuple[str, ...]], ...] = ()  # () is the primary resource
    include: tuple[Path, ...] = ()  # every path, parents included, sorted
    filters: tuple[FilterSpec, ...] = ()
    sort: tuple[SortKey, ...] | None = None
    limit: int | None = None
    cursor: str | None = None
    count: Count = Count.NONE
    # The embedded lists' shape, by path: sort[path], limit[path], and the counted paths.
    path_sort: tuple[tuple[Path, tuple[SortKey, ...]], ...] = ()
    path_limit: tuple[tuple[Path, int], ...] = ()
    path_count: tuple[tuple[Path, bool], ...] = ()  # `false` is checked, then ignored


_SHAPE_PARAMETERS = ("fields", "fields[...]", "include", "sort[...]", "limit[...]", "count[...]")
_LIST_PARAMETERS = (*_SHAPE_PARAMETERS, "filter[...]", "sort", "limit", "cursor", "count")


def parse_query_string(raw: bytes | str, *, endpoint: Endpoint = Endpoint.LIST) -> RawQuery:
    """Split `fields=...&include=...` into values, rejecting repeats and unknown parameters."""
    pairs = _decode_pairs(raw)
    allowed = _LIST_PARAMETERS if endpoint is Endpoint.LIST else _SHAPE_PARAMETERS
    seen: set[str] = set()
    fields: dict[Path, tuple[str, ...]] = {}
    include: tuple[Path, ...] = ()
    filters: list[FilterSpec] = []
    sort: tuple[SortKey, ...] | None = None
    limit: int | None = None
    cursor: str | None = None
    count = Count.NONE
    path_sort: dict[Path, tuple[SortKey, ...]] = {}
    path_limit: dict[Path, int] = {}
    path_count: dict[Path, bool] = {}
    per_path_seen: set[tuple[str, Path]] = set()
    for key, value in pairs:
        if key in seen:
            raise InvalidParameter(key, f"parameter {_shown(key)} is given more than once")
        seen.add(key)
        base, brackets = _split_key(key)
        family = base if not brackets else f"{base}[...]"
        if family not in allowed:
            raise InvalidParameter(key, _unknown_parameter(key, family, allowed))
        if brackets and base in ("sort", "limit", "count"):
            path = _parse_bracket_path(key, brackets)
            if (base, path) in per_path_seen:
                raise InvalidParameter(key, f"{base} for {_shown(key)} is given more than once")
            per_path_seen.add((base, path))
            if base == "sort":
                path_sort[path] = parse_sort(value, parameter=key)
            elif base == "limit":
                path_limit[path] = _parse_positive_int(key, value)
            else:
                path_count[path] = _parse_flag(key, value)
        elif base == "fields":
            path = _parse_bracket_path(key, brackets) if brackets else ()
            if path in fields:
                raise InvalidParameter(key, f"fields for {_shown(key)} are given more than once")
            fields[path] = parse_name_list(key, value)
        elif base == "include":
            include = parse_include(value)
        elif base == "filter":
            spec = _parse_filter(key, brackets, value)
            if any(f.path == spec.path and f.op == spec.op for f in filters):
                raise InvalidParameter(key, f"filter {_shown(key)} repeats another filter")
            filters.append(spec)
        elif base == "sort":
            sort = parse_sort(value)
        elif base == "limit":
            limit = _parse_positive_int(key, value)
        elif base == "cursor":
            cursor = _require_value(key, value)
        elif base == "count":
            count = _parse_count(value)
    return RawQuery(
        fields=tuple(sorted(fields.items())),
        include=include,
        filters=tuple(filters),
        sort=sort,
        limit=limit,
        cursor=cursor,
        count=count,
        path_sort=tuple(sorted(path_sort.items())),
        path_limit=tuple(sorted(path_limit.items())),
        path_count=tuple(sorted(path_count.items())),
    )


def _decode_pairs(raw: bytes | str) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidParameter("query", "the query string is not valid UTF-8") from exc
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise InvalidParameter(key.replace("\x00", ""), "NUL characters are not allowed")
    return pairs


def _split_key(key: str) -> tuple[str, tuple[str, ...]]:
    match = _KEY.fullmatch(key)
    if match is None:
        return key, ()
    brackets = tuple(part[1:] for part in match.group(2).split("]") if part)
    return match.group(1), brackets


def _unknown_parameter(key: str, family: str, allowed: tuple[str, ...]) -> str:
    if family in _LIST_PARAMETERS:
        takes = ", ".join(allowed)
        return f"parameter {_shown(key)} is not accepted here; this endpoint takes {takes}"
    if f"{family}[...]" in allowed:
        return f"{family} takes brackets: {family}[attribute]"
    bases = [name.removesuffix("[...]") for name in allowed]
    return f"unknown parameter {_shown(key)}{suggest(key.split('[')[0], bases)}"


def parse_name_list(parameter: str, value: str) -> tuple[str, ...]:
    """'id, name,id' -> ('id', 'name'): spaces and repeats do not matter; empty is an error."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not names:
        raise InvalidParameter(parameter, f"{parameter} must name at least one attribute")
    for name in names:
        _check_name(parameter, name)
    return names


def _check_name(parameter: str, name: str) -> None:
    if not _NAME.match(name) or len(name) > 64:
        raise InvalidParameter(parameter, f"{name[:64]!r} is not a valid name")


def parse_include(value: str) -> tuple[Path, ...]:
    """'groups.permissions,groups' -> (('groups',), ('groups', 'permissions'))."""
    paths: set[Path] = set()
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        path = _split_path("include", item)
        for name in path:
            if not name:
                raise InvalidParameter("include", f"bad include path {item[:100]!r}")
            _check_name("include", name)
        paths.update(path[:depth] for depth in range(1, len(path) + 1))
    if not paths:
        raise InvalidParameter("include", "include must name at least one relationship")
    return tuple(sorted(paths))


def _split_path(parameter: str, dotted: str) -> Path:
    """'a.b' -> ('a', 'b'); refused past MAX_PATH_NAMES before any per-name work."""
    if dotted.count(".") >= MAX_PATH_NAMES:
        raise InvalidParameter(parameter, f"a path has at most {MAX_PATH_NAMES} names")
    return tuple(name.strip() for name in dotted.split("."))


def _shown(text: str) -> str:
    """A client's text quoted in a problem, cut short: errors must not echo a whole URL."""
    return repr(text[:100] + "…") if len(text) > 100 else repr(text)


def _parse_bracket_path(key: str, brackets: tuple[str, ...]) -> Path:
    if len(brackets) != 1 or not brackets[0].strip():
        family = key.split("[", 1)[0]
        raise InvalidParameter(key, f"expected {family}[path], got {_shown(key)}")
    path = _split_path(key, brackets[0])
    for name in path:
        _check_name(key, name)
    return path


def _parse_filter(key: str, brackets: tuple[str, ...], value: str) -> FilterSpec:
    if len(brackets) not in (1, 2) or not brackets[0].strip():
        raise InvalidParameter(
            key, f"expected filter[attribute] or filter[attribute][op], got {_shown(key)}"
        )
    path = _split_path(key, brackets[0])
    for name in path:
        _check_name(key, name)
    op = brackets[1].strip() if len(brackets) == 2 else "eq"
    if op not in OPERATORS:
        raise InvalidParameter(key, f"unknown operator {op[:32]!r}{suggest(op, OPERATORS)}")
    return FilterSpec(path=path, op=op, raw=value, parameter=key)


def parse_sort(value: str, *, parameter: str = "sort") -> tuple[SortKey, ...]:
    """'-created,name' -> (created desc, name asc); naming a key twice both ways is an error."""
    keys: dict[str, SortKey] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        descending = item.startswith("-")
        name = item[1:].strip() if item[0] in "+-" else item
        _check_name(parameter, name)
        previous = keys.get(name)
        if previous is not None and previous.descending != descending:
            raise InvalidParameter(
                parameter, f"{parameter} names {name!r} both ascending and descending"
            )
        keys.setdefault(name, SortKey(name, descending))
    if not keys:
        raise InvalidParameter(parameter, f"{parameter} must name at least one attribute")
    return tuple(keys.values())


def _parse_positive_int(parameter: str, value: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise InvalidParameter(parameter, f"{parameter} must be a positive integer")
    return int(text)


def _require_value(parameter: str, value: str) -> str:
    if not value.strip():
        raise InvalidParameter(parameter, f"{parameter} must not be empty")
    return value.strip()


def _parse_flag(parameter: str, value: str) -> bool:
    text = value.strip().lower()
    if text not in ("true", "false"):
        raise InvalidParameter(parameter, f"{parameter} must be true or false")
    return text == "true"


def _parse_count(value: str) -> Count:
    try:
        return Count(value.strip().lower())
    except ValueError:
        raise InvalidParameter("count", "count must be true, false or estimated") from None
