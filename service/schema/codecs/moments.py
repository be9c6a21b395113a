"""Dates and timestamps: ISO 8601 in, RFC 3339 out, naive values as UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import (
    PlainValidator,
    WithJsonSchema,
)

from service.errors import InvalidParameter
from service.schema.codecs.base import (
    _DATE,
    _TIMESTAMP,
    DATE_PATTERN,
    ORDERED,
    TIMESTAMP_PATTERN,
    Codec,
    Scalar,
    Schema,
    _shown,
)


@dataclass(frozen=True)
class DateCodec(Codec):
    """Date: `YYYY-MM-DD` and nothing else (no time part, no week dates)."""

    name = "date"
    operators = ORDERED

    def parse(self, raw: str, *, parameter: str) -> date:
        try:
            return _read_date(raw.strip())
        except ValueError:
            raise InvalidParameter(parameter, f"{raw[:40]!r} is not a YYYY-MM-DD date") from None

    def to_cursor(self, value: Scalar) -> object:
        return self.format(value)

    def from_cursor(self, value: object, *, parameter: str) -> date:
        try:
            return _read_date(value)
        except ValueError:
            raise InvalidParameter(parameter, f"{_shown(value)} is not a YYYY-MM-DD date") from None

    def format(self, value: Scalar) -> str:
        text: str = value.isoformat()
        return text

    def annotation(self, *, required: bool = False) -> Any:
        return Annotated[
            date,
            PlainValidator(_read_date),
            WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
        ]

    def schema(self) -> Schema:
        return {"type": "string", "format": "date"}


def _read_date(value: object) -> date:
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError("expected a YYYY-MM-DD date")
    return date.fromisoformat(value)


@dataclass(frozen=True)
class DateTimeCodec(Codec):
    """DateTime: naive columns hold naive UTC, `timezone=True` ones aware UTC values (SQLite
    keeps no zone and hands those back naive: they are UTC too). Text ends in `Z`."""

    timezone: bool = False
    name = "timestamp"
    operators = ORDERED

    def parse(self, raw: str, *, parameter: str) -> datetime:
        """ISO 8601 with or without a zone; a value without one is UTC."""
        text = raw.strip()
        try:
            if not text.isascii() or len(text) > 40:
                raise ValueError
            return self._stored(datetime.fromisoformat(text))
        except ValueError:
            raise InvalidParameter(
                parameter, f"{raw[:40]!r} is not an ISO 8601 timestamp"
            ) from None
        except OverflowError:
            raise InvalidParameter(parameter, f"{raw[:40]!r} is out of range") from None

    def _stored(self, value: datetime) -> datetime:
        """`value` as the column holds it; OverflowError when UTC is out of Python's range."""
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC) if self.timezone else value
        value = value.astimezone(UTC)
        return value if self.timezone else value.replace(tzinfo=None)

    def to_cursor(self, value: Scalar) -> object:
        text: str = self._stored(value).isoformat()
        return text

    def from_cursor(self, value: object, *, parameter: str) -> datetime:
        """As `to_cursor` writes it: no zone for naive columns, one for aware ones."""
        try:
            if not isinstance(value, str) or not value.isascii() or len(value) > 40:
                raise ValueError
            moment = datetime.fromisoformat(value)
            if (moment.tzinfo is not None) != self.timezone:
                raise ValueError
            return self._stored(moment)
        except (ValueError, OverflowError):
            raise InvalidParameter(
                parameter, f"{_shown(value)} is not a timestamp as this attribute stores it"
            ) from None

    def format(self, value: Scalar) -> str:
        moment = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return f"{moment.isoformat()}Z"

    def order_value(self, value: Scalar) -> Any:
        return self._stored(value)  # naive on SQLite, aware on PostgreSQL: one kind to compare

    def annotation(self, *, required: bool = False) -> Any:
        return Annotated[
            datetime,
            PlainValidator(self._from_json),
            WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}),
        ]

    def _from_json(self, value: object) -> datetime:
        """RFC 3339 exactly: the zone is required, fractions stop at microseconds."""
        if not isinstance(value, str) or not _TIMESTAMP.match(value):
            raise ValueError("expected an RFC 3339 timestamp such as 2024-01-31T12:00:00Z")
        try:
            return self._stored(datetime.fromisoformat(value))
        except OverflowError:
            raise ValueError("timestamp out of range") from None

    def schema(self) -> Schema:
        return {"type": "string", "format": "date-time"}
