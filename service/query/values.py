"""Parse and check values by the attribute's type (filters, cursors), and render them back."""

from __future__ import annotations

from datetime import UTC, datetime

from service.errors import InvalidParameter
from service.resources import Attribute, AttrType

Scalar = int | str | datetime | bool
Value = Scalar | tuple[Scalar, ...] | None

INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # the columns are 32-bit INTEGER on PostgreSQL
ORDERED_OPS = frozenset({"lt", "lte", "gt", "gte"})
TEXT_OPS = frozenset({"contains", "startswith"})


def parse_filter_value(
    attribute: Attribute, op: str, raw: str, *, parameter: str, max_in_values: int
) -> Value:
    """The typed value a filter compares with; a bad value is a 400 naming the parameter."""
    if op == "isnull":
        text = raw.strip().lower()
        if text not in ("true", "false"):
            raise InvalidParameter(parameter, "isnull takes true or false")
        return text == "true"
    if op in TEXT_OPS and attribute.type is not AttrType.STRING:
        raise InvalidParameter(parameter, f"{op} applies to text attributes only")
    if op == "in":
        items = [item for item in raw.split(",")]
        if attribute.type is not AttrType.STRING:
            items = [item.strip() for item in items if item.strip()]
        if not items or len(items) > max_in_values:
            raise InvalidParameter(
                parameter, f"in takes 1 to {max_in_values} comma-separated values"
            )
        return tuple(sorted({parse_scalar(attribute, item, parameter=parameter) for item in items}))
    return parse_scalar(attribute, raw, parameter=parameter)


def parse_scalar(attribute: Attribute, raw: str, *, parameter: str) -> Scalar:
    if attribute.type is AttrType.INTEGER:
        return parse_int(raw, parameter=parameter)
    if attribute.type is AttrType.DATETIME:
        return parse_datetime(raw, parameter=parameter)
    longest = None if attribute.max_length is None else attribute.max_length * 4
    return check_text(raw, name=attribute.name, max_length=longest, parameter=parameter)


def check_stored(attribute: Attribute, value: object, *, parameter: str) -> Scalar | None:
    """`value` if the attribute's column could hold it as the service stores it (a keyset
    cursor's values are such): strictly typed, in range, naive UTC timestamps; else a 400."""
    if value is None:
        if not attribute.nullable:
            raise InvalidParameter(parameter, f"{attribute.name} is never null")
        return None
    if attribute.type is AttrType.INTEGER:
        return check_int(value, parameter=parameter)
    if attribute.type is AttrType.STRING:
        return check_text(
            value, name=attribute.name, max_length=attribute.max_length, parameter=parameter
        )
    if not isinstance(value, str):
        raise InvalidParameter(parameter, f"{str(value)[:40]!r} is not an ISO 8601 timestamp")
    moment = read_datetime(value, parameter=parameter)
    if moment.tzinfo is not None:
        raise InvalidParameter(parameter, f"{value[:40]!r} is not a naive UTC timestamp")
    return moment


def parse_int(raw: str, *, parameter: str) -> int:
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
        raise InvalidParameter(parameter, f"{raw[:40]!r} is not an integer")
    return check_int(int(text), parameter=parameter)


def check_int(value: object, *, parameter: str) -> int:
    """`value` if it is an integer the columns hold (a bool is not one)."""
    if type(value) is not int:
        raise InvalidParameter(parameter, f"{str(value)[:40]!r} is not an integer")
    if not INT_MIN <= value <= INT_MAX:
        raise InvalidParameter(parameter, f"{value} is out of range for an integer attribute")
    return value


def check_text(value: object, *, name: str, max_length: int | None, parameter: str) -> str:
    """`value` if it is text of at most `max_length` characters without NUL, which
    PostgreSQL's text types cannot hold."""
    if not isinstance(value, str):
        raise InvalidParameter(parameter, f"{str(value)[:40]!r} is not text")
    if "\x00" in value:
        raise InvalidParameter(parameter, "NUL characters are not allowed")
    if max_length is not None and len(value) > max_length:
        raise InvalidParameter(parameter, f"value is longer than {name} can be")
    return value


def parse_datetime(raw: str, *, parameter: str) -> datetime:
    """ISO 8601 with or without a zone; zoned values are converted to UTC (the stored zone)."""
    value = read_datetime(raw, parameter=parameter)
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise InvalidParameter(parameter, f"{raw[:40]!r} is out of range") from None
    return value


def read_datetime(raw: str, *, parameter: str) -> datetime:
    """ISO 8601 as written, its zone (if any) kept."""
    text = raw.strip()
    if not text.isascii() or len(text) > 40:
        raise InvalidParameter(parameter, f"{raw[:40]!r} is not an ISO 8601 timestamp")
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(parameter, f"{raw[:40]!r} is not an ISO 8601 timestamp") from None


def format_scalar(value: Scalar | None) -> str:
    """The canonical text of a value, as links and cache keys spell it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    return str(value)
