"""One codec per column type: parse, check, order, format and describe its values in one place."""

from __future__ import annotations

import enum
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Context, Decimal
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)
from sqlalchemy import Column, ColumnElement, Integer, case, cast, types
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from service.errors import InvalidParameter

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


def _integral(value: object) -> object:
    """JSON has one number type: 3.0 is the integer 3 (a fraction or a string stays an error)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


@dataclass(frozen=True)
class IntegerCodec(Codec):
    """SmallInteger, Integer, BigInteger: the column's two's-complement range, on every backend."""

    bits: int = 32
    name = "integer"
    operators = ORDERED

    @property
    def minimum(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def maximum(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def parse(self, raw: str, *, parameter: str) -> int:
        text = raw.strip()
        digits = text[1:] if text[:1] in ("+", "-") else text
        if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(self.maximum)):
            raise InvalidParameter(parameter, f"{raw[:40]!r} is not an integer")
        return self._check(int(text), parameter=parameter)

    def from_cursor(self, value: object, *, parameter: str) -> int:
        if type(value) is not int:  # a bool is an int to Python, not to the columns
            raise InvalidParameter(parameter, f"{_shown(value)} is not an integer")
        return self._check(value, parameter=parameter)

    def _check(self, value: int, *, parameter: str) -> int:
        if not self.minimum <= value <= self.maximum:
            raise InvalidParameter(parameter, f"{value} is out of range for an integer attribute")
        return value

    def annotation(self, *, required: bool = False) -> Any:
        return Annotated[
            Annotated[int, Field(ge=self.minimum, le=self.maximum)], BeforeValidator(_integral)
        ]

    def schema(self) -> Schema:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


@dataclass(frozen=True)
class StringCodec(Codec):
    """String, Text, Unicode, UnicodeText: no NUL (PostgreSQL cannot store it), at most
    `length` characters when the column has one; compared by code point."""

    length: int | None = None
    email: bool = False
    name = "string"
    operators = TEXT

    def parse(self, raw: str, *, parameter: str) -> str:
        # A filter value may be longer than what is stored (a pattern, a probe), within reason.
        longest = None if self.length is None else self.length * 4
        return self._check(raw, longest=longest, parameter=parameter)

    def from_cursor(self, value: object, *, parameter: str) -> str:
        if not isinstance(value, str):
            raise InvalidParameter(parameter, f"{_shown(value)} is not text")
        return self._check(value, longest=self.length, parameter=parameter)

    def _check(self, value: str, *, longest: int | None, parameter: str) -> str:
        if "\x00" in value:
            raise InvalidParameter(parameter, "NUL characters are not allowed")
        if longest is not None and len(value) > longest:
            raise InvalidParameter(parameter, "value is longer than this attribute can be")
        return value

    def order_key(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return CodePoint(column)

    def annotation(self, *, required: bool = False) -> Any:
        constraints = StringConstraints(
            min_length=1 if required else None,
            max_length=self.length,
            pattern=EMAIL_PATTERN if self.email else None,
        )
        return Annotated[str, constraints, AfterValidator(_no_nul)]

    def schema(self) -> Schema:
        schema: Schema = {"type": "string"}
        if self.length is not None:
            schema["maxLength"] = self.length
        # No `format: email`: the service's own check (EMAIL_PATTERN, on writes) is looser
        # than the format's RFC 5321 grammar, and a stored value is what it is.
        return schema


class CodePoint(ColumnElement[Any]):
    """A text column as it compares by code point, compiled per backend (below).

    A column already collated that way stays the plain column, so its indexes serve ORDER BY
    (the built-in models declare `COLLATE "C"` on PostgreSQL). The column counts in
    SQLAlchemy's cache key: statements stay cacheable and two columns never share SQL."""

    inherit_cache = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type


def _collation(element: CodePoint, dialect: str) -> str | None:
    """The collation the column's type has on `dialect` (its variant there, if any)."""
    kind = element.type._variant_mapping.get(dialect, element.type)
    collation: str | None = getattr(kind, "collation", None)
    return collation


@compiles(CodePoint)
def _compile_code_point(element: CodePoint, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    if _collation(element, compiler.dialect.name) in (None, "BINARY"):
        return column  # SQLite's default, BINARY, compares UTF-8 bytes: code point order
    return f"{column} COLLATE BINARY"


@compiles(CodePoint, "postgresql")
def _compile_code_point_postgresql(element: CodePoint, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    if _collation(element, "postgresql") in ("C", "POSIX"):
        return column
    return f'{column} COLLATE "C"'


@dataclass(frozen=True)
class BooleanCodec(Codec):
    """Boolean: `true`/`false` in any case, nothing else (`1`/`0` would be a second spelling).

    On SQLite the column holds 0/1; a Python bool binds as that, so filters match."""

    name = "boolean"

    def parse(self, raw: str, *, parameter: str) -> bool:
        text = raw.strip().lower()
        if text not in ("true", "false"):
            raise InvalidParameter(parameter, f"{raw[:40]!r} is not true or false")
        return text == "true"

    def from_cursor(self, value: object, *, parameter: str) -> bool:
        if not isinstance(value, bool):
            raise InvalidParameter(parameter, f"{_shown(value)} is not a boolean")
        return value

    def format(self, value: Scalar) -> str:
        return "true" if value else "false"

    def order_key(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # SQLAlchemy refuses `column > True`, PostgreSQL `boolean > integer`: keyset
        # conditions compare 0/1 instead (false before true on both backends).
        return cast(column, Integer)

    def order_value(self, value: Scalar) -> Any:
        return int(value)

    def annotation(self, *, required: bool = False) -> Any:
        return bool

    def schema(self) -> Schema:
        return {"type": "boolean"}


@dataclass(frozen=True)
class FloatCodec(Codec):
    """Float, Double, REAL: finite numbers; `single` columns (4-byte REAL on PostgreSQL) hold
    magnitudes up to 3.4e38 only."""

    single: bool = False
    name = "number"
    operators = ORDERED

    @property
    def maximum(self) -> float:
        return _FLOAT32_MAX if self.single else math.inf

    def parse(self, raw: str, *, parameter: str) -> float:
        text = raw.strip()
        if len(text) > _MAX_NUMBER_TEXT or not _NUMBER.match(text):
            raise InvalidParameter(parameter, f"{raw[:40]!r} is not a number")
        return self._check(float(text), parameter=parameter)

    def from_cursor(self, value: object, *, parameter: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidParameter(parameter, f"{_shown(value)} is not a number")
        try:
            return self._check(float(value), parameter=parameter)
        except OverflowError:  # an int past any double
            raise InvalidParameter(parameter, f"{_shown(value)} is out of range") from None

    def _check(self, value: float, *, parameter: str) -> float:
        if not (math.isfinite(value) and abs(value) <= self.maximum):
            raise InvalidParameter(parameter, f"{value} is out of range for a number attribute")
        return value

    def format(self, value: Scalar) -> str:
        return repr(float(value))  # the shortest text that reads back as the same double

    def annotation(self, *, required: bool = False) -> Any:
        if self.single:
            return Annotated[float, Field(ge=-_FLOAT32_MAX, le=_FLOAT32_MAX, allow_inf_nan=False)]
        return Annotated[float, Field(allow_inf_nan=False)]

    def schema(self) -> Schema:
        return {"type": "number"}


@dataclass(frozen=True)
class DecimalCodec(Codec):
    """Numeric: exact decimals. With a precision, at most `precision` digits of which `scale`
    (0 when only the precision is given, as PostgreSQL has it) after the point; more
    fractional digits are an error, never rounded. Without one, PostgreSQL's own limits."""

    precision: int | None = None
    scale: int | None = None
    name = "decimal"
    operators = ORDERED

    def parse(self, raw: str, *, parameter: str) -> Decimal:
        try:
            return self._read(raw.strip())
        except ValueError as exc:
            raise InvalidParameter(parameter, f"{raw[:40]!r} {exc}") from None

    def to_cursor(self, value: Scalar) -> object:
        return str(value)  # a JSON string keeps every digit; a JSON number would not

    def from_cursor(self, value: object, *, parameter: str) -> Decimal:
        if not isinstance(value, str):
            raise InvalidParameter(parameter, f"{_shown(value)} is not a decimal")
        try:
            return self._read(value)
        except ValueError as exc:
            raise InvalidParameter(parameter, f"{value[:40]!r} {exc}") from None

    def _read(self, text: str) -> Decimal:
        if len(text) > _MAX_NUMBER_TEXT or not _NUMBER.match(text):
            raise ValueError("is not a number")
        return self._check(Decimal(text))

    def _check(self, value: Decimal) -> Decimal:
        """`value` as the column holds it (to its scale), or ValueError saying why not
        (the message follows the value: "'1.005' has more than 2 digits ...")."""
        if not value.is_finite():
            raise ValueError("is not a finite number")
        if self.precision is None:
            # numeric: up to 131072 digits before the point and 16383 after it
            if value.adjusted() >= 131072 or int(value.as_tuple().exponent) < -16383:
                raise ValueError("is out of range for a decimal attribute")
            return value
        scale = self.scale or 0
        # copy_abs, not abs(): abs() rounds to the context's 28 digits
        if value.copy_abs() >= Decimal(10) ** (self.precision - scale):
            raise ValueError("is out of range for a decimal attribute")
        exact = value.quantize(Decimal(1).scaleb(-scale), context=Context(prec=self.precision + 1))
        if exact != value:
            raise ValueError(f"has more than {scale} digits after the decimal point")
        return exact

    def annotation(self, *, required: bool = False) -> Any:
        return Annotated[
            Decimal,
            PlainValidator(self._from_json),
            WithJsonSchema(
                {"anyOf": [{"type": "number"}, {"type": "string", "pattern": NUMBER_PATTERN}]}
            ),
        ]

    def _from_json(self, value: object) -> Decimal:
        """A JSON number, or a string of one (the only way to send more than 15 exact digits:
        the body parser reads every JSON fraction as a double)."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("expected a number")
        if isinstance(value, float) and len(Decimal(repr(value)).as_tuple().digits) > _EXACT_DIGITS:
            raise ValueError(
                f"{value!r} has more than {_EXACT_DIGITS} significant digits, which a JSON "
                "number does not carry exactly here: send it as a string"
            )
        try:
            if isinstance(value, str):
                return self._read(value)
            # repr: 1.1 stays 1.1, not 1.100000000000000088...
            return self._check(Decimal(value if isinstance(value, int) else repr(value)))
        except ValueError as exc:
            raise ValueError(f"{value!r:.42} {exc}") from None

    def schema(self) -> Schema:
        return {"type": "number"}


def json_default(value: object) -> object:
    """orjson's `default=`: a Decimal as a JSON number of exactly its digits (not a double),
    and what else a driver hands back that orjson does not know."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None  # PostgreSQL's numeric NaN and Infinity have no JSON form
        return orjson.Fragment(str(value))
    if isinstance(value, uuid.UUID):
        return str(value)  # asyncpg's own UUID class, which orjson does not know
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


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


def codec_for(column: Column[Any]) -> Codec | None:
    """The codec of a column's type, or None for a type the API does not serve.

    Subclasses come before their bases (Boolean and Enum before String, BigInteger before
    Integer). A TypeDecorator is not served, whatever its impl: its Python values are its
    own (process_bind_param / process_result_value), so the impl's codec would bind wrong
    values. A type's dialect variants are taken to hold the same values as the type itself."""
    kind = column.type
    if isinstance(kind, types.TypeDecorator):
        return None
    if isinstance(kind, types.Boolean):
        return BooleanCodec()
    if isinstance(kind, types.Enum):
        return EnumCodec.of(kind)
    if isinstance(kind, types.String):
        return StringCodec(length=kind.length, email=column.info.get("format") == "email")
    if isinstance(kind, types.Integer):
        bits = 64 if isinstance(kind, types.BigInteger) else 32
        return IntegerCodec(bits=16 if isinstance(kind, types.SmallInteger) else bits)
    if isinstance(kind, (types.Float, types.Numeric)):  # siblings since SQLAlchemy 2.1
        # asdecimal decides what the driver hands back: Float(asdecimal=True) gives
        # Decimals, Numeric(asdecimal=False) floats.
        if kind.asdecimal:
            if isinstance(kind, types.Float):
                return DecimalCodec()  # a Float's precision counts bits, not digits
            return DecimalCodec(precision=kind.precision, scale=kind.scale)
        single = isinstance(kind, types.REAL) or (
            isinstance(kind, types.Float) and kind.precision is not None and kind.precision <= 24
        )
        return FloatCodec(single=single)
    if isinstance(kind, types.DateTime):
        return DateTimeCodec(timezone=bool(kind.timezone))
    if isinstance(kind, types.Date):
        return DateCodec()
    if isinstance(kind, types.Uuid):
        return UuidCodec(as_uuid=kind.as_uuid)
    if isinstance(kind, types.JSON):
        return JsonCodec()
    return None
