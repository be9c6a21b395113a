"""UUIDs, enums and JSON: values the API passes through in one spelling."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from pydantic import (
    PlainValidator,
    WithJsonSchema,
)
from sqlalchemy import ColumnElement, case, types

from service.errors import InvalidParameter
from service.schema.codecs.base import (
    _UUID,
    ORDERED,
    UUID_PATTERN,
    Codec,
    Scalar,
    Schema,
    _shown,
)
from service.schema.codecs.numbers import json_default


@dataclass(frozen=True)
class UuidCodec(Codec):
    """Uuid: the hyphenated form in any case (no other spelling), lower-case out. Values are
    `uuid.UUID`, or canonical strings for `as_uuid=False` columns.

    PostgreSQL's uuid compares its 16 bytes; SQLite's CHAR(32) its lower-case hex digits
    (BINARY): the same order, which Python's for UUIDs and for canonical strings is too."""

    as_uuid: bool = True
    name = "uuid"
    operators = ORDERED

    def parse(self, raw: str, *, parameter: str) -> uuid.UUID | str:
        try:
            return self._read(raw.strip())
        except ValueError:
            raise InvalidParameter(parameter, f"{raw[:40]!r} is not a UUID") from None

    def _read(self, value: object) -> uuid.UUID | str:
        if not isinstance(value, str) or not _UUID.match(value):
            raise ValueError("expected a UUID such as 123e4567-e89b-12d3-a456-426614174000")
        return uuid.UUID(value) if self.as_uuid else value.lower()

    def to_cursor(self, value: Scalar) -> object:
        return self.format(value)

    def from_cursor(self, value: object, *, parameter: str) -> uuid.UUID | str:
        if not isinstance(value, str) or not _UUID.match(value) or value != value.lower():
            raise InvalidParameter(parameter, f"{_shown(value)} is not a lower-case UUID")
        return self._read(value)

    def format(self, value: Scalar) -> str:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(value))

    def annotation(self, *, required: bool = False) -> Any:
        return Annotated[
            uuid.UUID | str,
            PlainValidator(self._read),
            WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
        ]

    def schema(self) -> Schema:
        return {"type": "string", "format": "uuid"}


@dataclass(frozen=True)
class EnumCodec(Codec):
    """Enum: the API speaks each member's value; the column stores `stored` (a Python enum's
    names by default, its values with `values_callable`) and sorts in declaration order.

    `members` are what SQLAlchemy hands back (enum members, or the strings themselves),
    parallel to `stored`; `values` their API values (str or int)."""

    stored: tuple[str, ...]
    members: tuple[Any, ...]
    name = "enum"
    values: tuple[str | int, ...] = field(init=False)
    _by_text: dict[str, Any] = field(init=False, compare=False, repr=False)
    _rank: dict[Any, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        unique = list(dict.fromkeys(self.members))  # an enum alias is its canonical member
        values = tuple(m.value if isinstance(m, enum.Enum) else m for m in unique)
        object.__setattr__(self, "values", values)
        object.__setattr__(
            self, "_by_text", {str(v): m for v, m in zip(values, unique, strict=True)}
        )
        object.__setattr__(self, "_rank", {m: rank for rank, m in enumerate(unique)})

    @classmethod
    def of(cls, kind: types.Enum) -> EnumCodec | None:
        """The codec of an Enum type; None when its values are not all strings or integers."""
        # `_object_lookup` is SQLAlchemy's own stored-string -> Python object map.
        lookup = kind._object_lookup
        codec = cls(stored=tuple(kind.enums), members=tuple(lookup[s] for s in kind.enums))
        kinds = {type(v) for v in codec.values}
        if not codec.values or not (kinds <= {str} or kinds <= {int}):
            return None
        return codec

    def parse(self, raw: str, *, parameter: str) -> Any:
        if raw not in self._by_text:
            choices = ", ".join(list(self._by_text)[:10]) + (
                ", ..." if len(self.values) > 10 else ""
            )
            raise InvalidParameter(parameter, f"{raw[:40]!r} is not one of {choices}")
        return self._by_text[raw]

    def to_cursor(self, value: Scalar) -> object:
        return self._value(value)

    def from_cursor(self, value: object, *, parameter: str) -> Any:
        try:
            return self._from_json(value)
        except ValueError:
            raise InvalidParameter(
                parameter, f"{_shown(value)} is not a value of this enum"
            ) from None

    def _from_json(self, value: object) -> Any:
        if type(value) not in (str, int) or str(value) not in self._by_text:
            raise ValueError(f"expected one of {', '.join(map(repr, self.values[:10]))}")
        member = self._by_text[str(value)]
        if type(self._value(member)) is not type(value):  # 1 is not "1", nor the reverse
            raise ValueError(f"expected one of {', '.join(map(repr, self.values[:10]))}")
        return member

    def _value(self, member: Any) -> str | int:
        value: str | int = member.value if isinstance(member, enum.Enum) else member
        return value

    def format(self, value: Scalar) -> str:
        return str(self._value(value))

    def order_key(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # PostgreSQL's native enum sorts by declaration, SQLite's VARCHAR by text: a rank
        # sorts the same on both. `column == s` binds `s` with the column's (enum) type.
        ranks = [(s, self._rank[m]) for s, m in zip(self.stored, self.members, strict=True)]
        return case(*((column == stored, rank) for stored, rank in ranks))

    def order_value(self, value: Scalar) -> Any:
        return self._rank[value]

    def annotation(self, *, required: bool = False) -> Any:
        return Annotated[Any, PlainValidator(self._from_json), WithJsonSchema(self.schema())]

    def schema(self) -> Schema:
        kind = "string" if isinstance(self.values[0], str) else "integer"
        return {"type": kind, "enum": list(self.values)}


@dataclass(frozen=True)
class JsonCodec(Codec):
    """JSON, JSONB: any JSON value, selected and written as is; never filtered nor sorted."""

    name = "json"
    operators = frozenset()
    sortable = False

    def parse(self, raw: str, *, parameter: str) -> Any:
        raise InvalidParameter(parameter, "JSON attributes cannot be filtered")

    def from_cursor(self, value: object, *, parameter: str) -> Any:
        raise InvalidParameter(parameter, "JSON attributes cannot be sorted")

    def format(self, value: Scalar) -> str:
        return orjson.dumps(value, default=json_default, option=orjson.OPT_SORT_KEYS).decode()

    def annotation(self, *, required: bool = False) -> Any:
        return Any

    def schema(self) -> Schema:
        return {}
