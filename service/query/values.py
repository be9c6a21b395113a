"""Parse filter values by the attribute's type, and render them back canonically."""

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
    if attribute.max_length is not None and len(raw) > attribute.max_length * 4:
        raise InvalidParameter(parameter, f"value is longer than {attribute.name} can be")
    return raw


def parse_int(raw: str, *, parameter: str) -> int:
    text = raw.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 10:
        raise InvalidParameter(parameter, f"{raw[:40]!r} is not an integer")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise InvalidParameter(parameter, f"{value} is out of range for an integer attribute")
    return value


def parse_datetime(raw: str, *, parameter: str) -> datetime:
    """ISO 8601 with or without a zone; zoned values are converted to UTC (the stored zone)."""
    text = raw.strip()
    if not text.isascii() or len(text) > 40:
        raise InvalidParameter(parameter, f"{raw[:40]!r} is not an ISO 8601 timestamp")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidParameter(parameter, f"{raw[:40]!r} is not an ISO 8601 timestamp") from None
    if value.tzinfo is not None:
        try:
            value = value.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise InvalidParameter(parameter, f"{raw[:40]!r} is out of range") from None
    return value


def format_scalar(value: Scalar | None) -> str:
    """The canonical text of a value, as links and cache keys spell it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    return str(value)
