"""Filter values parsed by their attribute's codec, and rendered back canonically."""

from __future__ import annotations

from service.errors import InvalidParameter
from service.schema import Attribute
from service.schema.codecs import Scalar

Value = Scalar | tuple[Scalar, ...] | None

TEXT_OPS = frozenset({"contains", "startswith"})


def parse_filter_value(
    attribute: Attribute, op: str, raw: str, *, parameter: str, max_in_values: int
) -> Value:
    """The typed value a filter compares with; a bad value is a 400 naming the parameter."""
    codec = attribute.codec
    if not codec.operators:
        raise InvalidParameter(parameter, f"{attribute.name} ({codec.name}) cannot be filtered by")
    if op not in codec.operators:
        if op in TEXT_OPS:
            raise InvalidParameter(parameter, f"{op} applies to text attributes only")
        raise InvalidParameter(parameter, f"{op} does not apply to {codec.name} attributes")
    if op == "isnull":
        text = raw.strip().lower()
        if text not in ("true", "false"):
            raise InvalidParameter(parameter, "isnull takes true or false")
        return text == "true"
    if op == "in":
        items = raw.split(",")
        if codec.name != "string":
            items = [item.strip() for item in items if item.strip()]
        if not items or len(items) > max_in_values:
            raise InvalidParameter(
                parameter, f"in takes 1 to {max_in_values} comma-separated values"
            )
        values = {codec.parse(item, parameter=parameter) for item in items}
        return tuple(sorted(values, key=codec.order_value))
    return codec.parse(raw, parameter=parameter)


def format_value(attribute: Attribute, value: Scalar) -> str:
    """The canonical text of a filter value, as links and cache keys spell it."""
    if value is None:
        return ""
    if isinstance(value, bool) and attribute.codec.name != "boolean":
        return "true" if value else "false"  # isnull's operand
    return attribute.codec.format(value)
