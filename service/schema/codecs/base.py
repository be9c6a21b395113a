"""The codec interface, the operator sets and the patterns every codec shares."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement

Scalar = Any  # a Python value a column holds: int, str, bool, float, Decimal, date, ...
Schema = dict[str, Any]

EQUALITY = frozenset({"eq", "ne", "in", "isnull"})
ORDERED = EQUALITY | {"lt", "lte", "gt", "gte"}
TEXT = ORDERED | {"contains", "startswith"}

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"
NUMBER_PATTERN = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# RFC 3339 as bodies must write it: a zone, at most microseconds (nothing silently cut).
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
UUID_PATTERN = r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$"

_NUMBER = re.compile(NUMBER_PATTERN)
_DATE = re.compile(DATE_PATTERN)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_UUID = re.compile(UUID_PATTERN)
_MAX_NUMBER_TEXT = 1100  # PostgreSQL declares numeric precision up to 1000 digits
_FLOAT32_MAX = 3.4028234663852886e38
_EXACT_DIGITS = 15  # every decimal of at most 15 significant digits survives a double


def _shown(value: object) -> str:
    return repr(value if isinstance(value, str) else str(value))[:42]


class Codec:
    """What the service knows about the values of one column type.

    Adding a type is one subclass here and one line in `codec_for`. Every stage asks the
    attribute's codec: the filter parser (`parse`), the cursor (`to_cursor`/`from_cursor`),
    links and cache keys (`format`), ORDER BY and keyset conditions (`order_key`), request
    bodies (`annotation`) and the OpenAPI document (`schema`, `operators`). None is the
    caller's business (nullability is the column's, not the type's).
    """

    name: str = "value"  # the type's name in messages and docs
    operators: frozenset[str] = EQUALITY  # the filter operators it takes
    sortable: bool = True  # usable in sort and therefore in cursors

    def parse(self, raw: str, *, parameter: str) -> Scalar:
        """A filter value as written in a query string; a bad one is InvalidParameter(parameter)."""
        raise NotImplementedError

    def to_cursor(self, value: Scalar) -> object:
        """A stored value as JSON (a cursor's payload)."""
        return value

    def from_cursor(self, value: object, *, parameter: str) -> Scalar:
        """The inverse of `to_cursor`, as strict as the column: a value the database would
        refuse (out of range, NUL, too long, wrong type) is InvalidParameter(parameter)."""
        raise NotImplementedError

    def format(self, value: Scalar) -> str:
        """The canonical text of a value (links, cache keys): `parse(format(v)) == v`."""
        return str(value)

    def order_key(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """The expression ORDER BY, keyset conditions and range filters compare, identical in
        order on both backends (text by code point, enums by declaration)."""
        return column

    def order_value(self, value: Scalar) -> Any:
        """A value as `order_key` compares it (the bound side of a comparison)."""
        return value

    def annotation(self, *, required: bool = False) -> Any:
        """The pydantic type a request body's value must have (strict: JSON types only);
        `required` values must not be empty (it matters to strings only)."""
        raise NotImplementedError

    def schema(self) -> Schema:
        """The JSON Schema of one value, as responses carry it."""
        raise NotImplementedError
