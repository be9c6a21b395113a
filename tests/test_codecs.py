"""Codecs: parsing, cursors, bodies and schemas without a database; order and equality on both."""

from __future__ import annotations

import enum
import random
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ConfigDict, TypeAdapter, ValidationError
from sqlalchemy import (
    ARRAY,
    JSON,
    REAL,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Enum,
    Float,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Numeric,
    PickleType,
    SmallInteger,
    String,
    Table,
    Text,
    Time,
    TypeDecorator,
    Unicode,
    UnicodeText,
    Uuid,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.types import UserDefinedType

from service.errors import InvalidParameter
from service.schema.codecs import (
    EQUALITY,
    ORDERED,
    TEXT,
    BooleanCodec,
    Codec,
    CodePoint,
    DateCodec,
    DateTimeCodec,
    DecimalCodec,
    EnumCodec,
    FloatCodec,
    IntegerCodec,
    JsonCodec,
    StringCodec,
    UuidCodec,
    codec_for,
    json_default,
)
from tests.conftest import DatabaseFactory


class Size(enum.Enum):
    # Declared out of alphabetical order, by name and by value alike.
    SMALL = "s"
    MEDIUM = "m"
    LARGE = "l"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Alias(enum.Enum):
    RED = "red"
    CRIMSON = "red"  # an alias of RED
    BLUE = "blue"


class Ratio(enum.Enum):
    HALF = 0.5  # neither a string nor an integer: not served


def _values_of(enum_class: type[enum.Enum]) -> list[str]:
    return [member.value for member in enum_class]


def _enum(*args: Any, **kwargs: Any) -> EnumCodec:
    codec = EnumCodec.of(Enum(*args, **kwargs))
    assert codec is not None
    return codec


INT16, INT32, INT64 = IntegerCodec(bits=16), IntegerCodec(bits=32), IntegerCodec(bits=64)
SHORT = StringCodec(length=5)
EMAIL = StringCodec(length=255, email=True)
BOOL = BooleanCodec()
DOUBLE, SINGLE = FloatCodec(), FloatCodec(single=True)
MONEY = DecimalCodec(precision=10, scale=2)
WHOLE = DecimalCodec(precision=5)  # NUMERIC(5) has scale 0
EXACT = DecimalCodec()
DAY = DateCodec()
NAIVE, AWARE = DateTimeCodec(), DateTimeCodec(timezone=True)
UUID, UUID_TEXT = UuidCodec(), UuidCodec(as_uuid=False)
SIZE_BY_NAME = _enum(Size)
SIZE_BY_VALUE = _enum(Size, name="size_value", values_callable=_values_of)
GREEK = _enum("zeta", "alpha", "mid", name="greek")
PRIORITY = _enum(Priority)
ANY_JSON = JsonCodec()

U = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
CEST = timezone(timedelta(hours=2))


# -- parse ------------------------------------------------------------------------------

PARSE_GOOD: list[tuple[Codec, str, object]] = [
    (INT16, "12", 12),
    (INT16, " -5 ", -5),
    (INT16, "+7", 7),
    (INT16, "32767", 32767),
    (INT16, "-32768", -32768),
    (INT32, "2147483647", 2**31 - 1),
    (INT32, "007", 7),
    (INT64, "9223372036854775807", 2**63 - 1),
    (INT64, "-9223372036854775808", -(2**63)),
    (SHORT, "abc", "abc"),
    (SHORT, " a ", " a "),  # text is never stripped
    (SHORT, "x" * 20, "x" * 20),  # filters may be up to 4x the column
    (StringCodec(), "x" * 10_000, "x" * 10_000),
    (SHORT, "", ""),
    (BOOL, "true", True),
    (BOOL, "FALSE", False),
    (BOOL, " True ", True),
    (DOUBLE, "1.5", 1.5),
    (DOUBLE, "-2", -2.0),
    (DOUBLE, "1e3", 1000.0),
    (DOUBLE, ".5", 0.5),
    (DOUBLE, "5.", 5.0),
    (DOUBLE, "1E-3", 0.001),
    (DOUBLE, "1e300", 1e300),
    (SINGLE, "3e38", 3e38),
    (MONEY, "10.5", Decimal("10.50")),
    (MONEY, "10.500", Decimal("10.50")),  # trailing zeros are not digits lost
    (MONEY, "-0.01", Decimal("-0.01")),
    (MONEY, "1e2", Decimal("100.00")),
    (MONEY, "99999999.99", Decimal("99999999.99")),
    (WHOLE, "12345", Decimal("12345")),
    (EXACT, "1.23456789012345678901234567890", Decimal("1.23456789012345678901234567890")),
    (DAY, "2024-02-29", date(2024, 2, 29)),
    (DAY, " 2024-01-31 ", date(2024, 1, 31)),
    (NAIVE, "2024-01-31T12:00:00Z", datetime(2024, 1, 31, 12)),
    (NAIVE, "2024-01-31T12:00:00+02:00", datetime(2024, 1, 31, 10)),
    (NAIVE, "2024-01-31 12:00", datetime(2024, 1, 31, 12)),
    (NAIVE, "2024-01-31", datetime(2024, 1, 31)),
    (AWARE, "2024-01-31T12:00:00", datetime(2024, 1, 31, 12, tzinfo=UTC)),
    (AWARE, "2024-01-31T12:00:00+02:00", datetime(2024, 1, 31, 10, tzinfo=UTC)),
    (UUID, "123E4567-E89B-12D3-A456-426614174000", U),
    (UUID_TEXT, "123E4567-E89B-12D3-A456-426614174000", str(U)),
    (SIZE_BY_NAME, "s", Size.SMALL),
    (SIZE_BY_VALUE, "l", Size.LARGE),
    (GREEK, "alpha", "alpha"),
    (PRIORITY, "2", Priority.HIGH),
]

PARSE_BAD: list[tuple[Codec, str, str]] = [
    (INT16, "32768", "32768 is out of range for an integer attribute"),
    (INT16, "-32769", "out of range"),
    (INT32, "2147483648", "out of range"),
    (INT32, "12345678901", "'12345678901' is not an integer"),  # too many digits to try
    (INT64, "9223372036854775808", "out of range"),
    (INT32, "abc", "'abc' is not an integer"),
    (INT32, "1 2", "not an integer"),
    (INT32, "1.0", "not an integer"),
    (INT32, "", "not an integer"),
    (INT32, "+", "not an integer"),
    (INT32, "+-1", "not an integer"),
    (INT32, "\u0663", "not an integer"),  # ARABIC-INDIC DIGIT THREE
    (INT32, "1_000", "not an integer"),
    (INT32, "0x10", "not an integer"),
    (SHORT, "x" * 21, "longer"),
    (SHORT, "a\x00", "NUL"),
    (BOOL, "1", "not true or false"),
    (BOOL, "0", "not true or false"),
    (BOOL, "yes", "not true or false"),
    (BOOL, "", "not true or false"),
    (DOUBLE, "nan", "not a number"),
    (DOUBLE, "inf", "not a number"),
    (DOUBLE, "1e999", "out of range"),
    (DOUBLE, "0x1p3", "not a number"),
    (DOUBLE, "1_0", "not a number"),
    (DOUBLE, "", "not a number"),
    (DOUBLE, "1e", "not a number"),
    (SINGLE, "3.5e38", "out of range"),
    (MONEY, "10.555", "more than 2 digits after the decimal point"),
    (MONEY, "100000000", "out of range"),
    (MONEY, "NaN", "not a number"),
    (MONEY, "Infinity", "not a number"),
    (MONEY, "abc", "not a number"),
    (WHOLE, "1.5", "more than 0 digits"),
    (WHOLE, "123456", "out of range"),
    (EXACT, "1e200000", "out of range"),
    (EXACT, "1e-20000", "out of range"),
    (DAY, "2024-1-31", "not a YYYY-MM-DD date"),
    (DAY, "2024-02-30", "not a YYYY-MM-DD date"),
    (DAY, "2024-01-31T00:00", "not a YYYY-MM-DD date"),
    (DAY, "20240131", "not a YYYY-MM-DD date"),
    (DAY, "2024-W01-1", "not a YYYY-MM-DD date"),
    (NAIVE, "yesterday", "not an ISO 8601 timestamp"),
    (NAIVE, "2024-13-01", "not an ISO 8601 timestamp"),
    (NAIVE, "0001-01-01T00:00:00+01:00", "out of range"),
    (AWARE, "9999-12-31T23:00:00-02:00", "out of range"),
    (UUID, "123e4567e89b12d3a456426614174000", "not a UUID"),
    (UUID, "{123e4567-e89b-12d3-a456-426614174000}", "not a UUID"),
    (UUID, "urn:uuid:123e4567-e89b-12d3-a456-426614174000", "not a UUID"),
    (UUID, "xyz", "not a UUID"),
    (SIZE_BY_NAME, "SMALL", "'SMALL' is not one of s, m, l"),  # the stored name is not the value
    (SIZE_BY_NAME, "S", "not one of"),
    (GREEK, " alpha", "not one of"),
    (PRIORITY, "01", "not one of 1, 2"),
    (ANY_JSON, "{}", "JSON attributes cannot be filtered"),
]


@pytest.mark.parametrize(("codec", "raw", "expected"), PARSE_GOOD)
def test_parse_reads_good_values(codec: Codec, raw: str, expected: object) -> None:
    value = codec.parse(raw, parameter="filter[x]")
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("codec", "raw", "detail"), PARSE_BAD)
def test_parse_refuses_bad_values_naming_the_parameter(codec: Codec, raw: str, detail: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        codec.parse(raw, parameter="filter[x]")
    assert detail in caught.value.detail
    assert caught.value.errors[0].parameter == "filter[x]"


def test_decimal_parse_keeps_the_column_scale_in_its_text() -> None:
    assert MONEY.format(MONEY.parse("1e2", parameter="p")) == "100.00"
    assert MONEY.format(MONEY.parse("10.5", parameter="p")) == "10.50"


# -- format / parse round trip ------------------------------------------------------------

ROUND_TRIP: list[tuple[Codec, object]] = [
    (INT16, -32768),
    (INT64, 2**63 - 1),
    (SHORT, ""),
    (SHORT, "é 😀"),
    (SHORT, " pad "),
    (BOOL, True),
    (BOOL, False),
    (DOUBLE, 0.1),
    (DOUBLE, 1e300),
    (DOUBLE, 5e-324),
    (DOUBLE, -0.0),
    (DOUBLE, 0.10000000149011612),  # 0.1 as a REAL column hands it back on PostgreSQL
    (MONEY, Decimal("10.50")),
    (EXACT, Decimal("1.23E+5")),
    (EXACT, Decimal("-0.000001")),
    (DAY, date(1, 1, 1)),
    (DAY, date(9999, 12, 31)),
    (NAIVE, datetime(2024, 1, 31, 12, 0, 0, 1)),
    (NAIVE, datetime(1, 1, 1)),
    (NAIVE, datetime(9999, 12, 31, 23, 59, 59, 999999)),
    (AWARE, datetime(2024, 1, 31, 12, tzinfo=UTC)),
    (UUID, U),
    (UUID_TEXT, str(U)),
    (SIZE_BY_NAME, Size.MEDIUM),
    (SIZE_BY_VALUE, Size.MEDIUM),
    (GREEK, "mid"),
    (PRIORITY, Priority.LOW),
]


@pytest.mark.parametrize(("codec", "value"), ROUND_TRIP)
def test_format_then_parse_gives_the_value_back(codec: Codec, value: object) -> None:
    text = codec.format(value)
    again = codec.parse(text, parameter="p")
    assert again == value
    assert codec.format(again) == text


def test_format_spells_values_canonically() -> None:
    assert BOOL.format(True) == "true"
    assert NAIVE.format(datetime(2024, 1, 31, 12)) == "2024-01-31T12:00:00Z"
    assert AWARE.format(datetime(2024, 1, 31, 14, tzinfo=CEST)) == "2024-01-31T12:00:00Z"
    assert AWARE.format(datetime(2024, 1, 31, 12)) == "2024-01-31T12:00:00Z"  # SQLite's naive
    assert UUID.format(U) == "123e4567-e89b-12d3-a456-426614174000"
    assert UUID_TEXT.format(str(U).upper()) == str(U)
    assert SIZE_BY_NAME.format(Size.SMALL) == "s"
    assert PRIORITY.format(Priority.HIGH) == "2"
    assert DOUBLE.format(1e16) == "1e+16"


def test_aware_values_read_back_naive_from_sqlite_are_utc() -> None:
    naive = datetime(2024, 1, 31, 12)
    assert AWARE.order_value(naive) == datetime(2024, 1, 31, 12, tzinfo=UTC)
    assert AWARE.to_cursor(naive) == "2024-01-31T12:00:00+00:00"


# -- cursors --------------------------------------------------------------------------------

CURSOR_ROUND_TRIP: list[tuple[Codec, object, object]] = [
    (INT32, -(2**31), -(2**31)),
    (INT64, 2**63 - 1, 2**63 - 1),
    (SHORT, "abcde", "abcde"),
    (BOOL, False, False),
    (DOUBLE, 0.1, 0.1),
    (DOUBLE, 3.0, 3.0),
    (MONEY, Decimal("99999999.99"), "99999999.99"),
    (EXACT, Decimal("1.23456789012345678901234567890"), "1.23456789012345678901234567890"),
    (DAY, date(2024, 2, 29), "2024-02-29"),
    (NAIVE, datetime(2024, 1, 31, 12, 0, 0, 5), "2024-01-31T12:00:00.000005"),
    (AWARE, datetime(2024, 1, 31, 12, tzinfo=UTC), "2024-01-31T12:00:00+00:00"),
    (UUID, U, str(U)),
    (UUID_TEXT, str(U), str(U)),
    (SIZE_BY_NAME, Size.LARGE, "l"),
    (GREEK, "zeta", "zeta"),
    (PRIORITY, Priority.HIGH, 2),
]


@pytest.mark.parametrize(("codec", "value", "payload"), CURSOR_ROUND_TRIP)
def test_cursor_values_survive_json(codec: Codec, value: object, payload: object) -> None:
    written = codec.to_cursor(value)
    assert written == payload
    read = codec.from_cursor(orjson.loads(orjson.dumps(written)), parameter="cursor")
    assert read == value
    assert type(read) is type(value)


CURSOR_BAD: list[tuple[Codec, object]] = [
    (INT32, 2**31),
    (INT16, 40000),
    (INT64, 2**63),
    (INT32, True),
    (INT32, 1.0),
    (INT32, "1"),
    (INT32, None),
    (SHORT, "abcdef"),
    (SHORT, "a\x00"),
    (SHORT, 5),
    (BOOL, 1),
    (BOOL, "true"),
    (DOUBLE, "1.0"),
    (DOUBLE, True),
    (DOUBLE, float("nan")),
    (DOUBLE, float("inf")),
    (SINGLE, 1e39),
    (MONEY, 10.5),  # written as a string, so a number is not ours
    (MONEY, "10.555"),
    (MONEY, "1e10"),
    (MONEY, "abc"),
    (DAY, "2024-01-31T00:00:00"),
    (DAY, 20240131),
    (NAIVE, "2024-01-31T12:00:00+00:00"),
    (NAIVE, "2024-01-31T12:00:00Z"),
    (NAIVE, 1706702400),
    (NAIVE, "x" * 50),
    (AWARE, "2024-01-31T12:00:00"),
    (UUID, str(U).upper()),
    (UUID, U.hex),
    (UUID, 5),
    (SIZE_BY_NAME, "SMALL"),
    (SIZE_BY_NAME, "x"),
    (SIZE_BY_NAME, 1),
    (PRIORITY, "1"),
    (PRIORITY, True),
    (PRIORITY, 3),
    (ANY_JSON, {}),
]


@pytest.mark.parametrize(("codec", "value"), CURSOR_BAD)
def test_from_cursor_is_as_strict_as_the_column(codec: Codec, value: object) -> None:
    with pytest.raises(InvalidParameter) as caught:
        codec.from_cursor(value, parameter="cursor")
    assert caught.value.errors[0].parameter == "cursor"


# -- bodies ---------------------------------------------------------------------------------


def _adapter(codec: Codec, *, required: bool = False) -> TypeAdapter[Any]:
    # Bodies are orjson.loads output validated by strict models, as service.schemas does.
    return TypeAdapter(codec.annotation(required=required), config=ConfigDict(strict=True))


BODY_GOOD: list[tuple[Codec, bool, object, object]] = [
    (INT32, False, 3, 3),
    (INT32, False, 3.0, 3),
    (INT32, False, -(2**31), -(2**31)),
    (INT64, False, 2**63 - 1, 2**63 - 1),
    (SHORT, False, "", ""),
    (SHORT, True, "abcde", "abcde"),
    (EMAIL, True, "a@b.co", "a@b.co"),
    (BOOL, False, True, True),
    (DOUBLE, False, 1.5, 1.5),
    (DOUBLE, False, 2, 2.0),
    (SINGLE, False, 3e38, 3e38),
    (MONEY, False, 1.1, Decimal("1.10")),
    (MONEY, False, 3, Decimal("3.00")),
    (MONEY, False, "10.50", Decimal("10.50")),
    (EXACT, False, "0.30000000000000004", Decimal("0.30000000000000004")),
    (EXACT, False, 12345678901234567890, Decimal(12345678901234567890)),
    (DAY, False, "2024-01-31", date(2024, 1, 31)),
    (NAIVE, False, "2024-01-31T12:00:00Z", datetime(2024, 1, 31, 12)),
    (NAIVE, False, "2024-01-31T12:00:00.5+02:00", datetime(2024, 1, 31, 10, 0, 0, 500000)),
    (AWARE, False, "2024-01-31T12:00:00Z", datetime(2024, 1, 31, 12, tzinfo=UTC)),
    (AWARE, False, "2024-01-31T14:00:00+02:00", datetime(2024, 1, 31, 12, tzinfo=UTC)),
    (UUID, False, str(U).upper(), U),
    (UUID_TEXT, False, str(U).upper(), str(U)),
    (SIZE_BY_NAME, False, "s", Size.SMALL),
    (GREEK, False, "mid", "mid"),
    (PRIORITY, False, 1, Priority.LOW),
    (ANY_JSON, False, {"a": [1, None]}, {"a": [1, None]}),
    (ANY_JSON, False, "text", "text"),
]


@pytest.mark.parametrize(("codec", "required", "value", "expected"), BODY_GOOD)
def test_annotation_accepts_json_values(
    codec: Codec, required: bool, value: object, expected: object
) -> None:
    result = _adapter(codec, required=required).validate_python(value)
    assert result == expected
    assert type(result) is type(expected)


BODY_BAD: list[tuple[Codec, bool, object]] = [
    (INT32, False, 3.5),
    (INT32, False, "3"),
    (INT32, False, True),
    (INT32, False, 2**31),
    (INT32, False, None),
    (INT64, False, 9.3e18),
    (SHORT, False, "abcdef"),
    (SHORT, False, "a\x00"),
    (SHORT, False, 5),
    (SHORT, True, ""),
    (EMAIL, True, "nope"),
    (BOOL, False, 1),
    (BOOL, False, "true"),
    (DOUBLE, False, "1.5"),
    (DOUBLE, False, True),
    (SINGLE, False, 1e39),
    (MONEY, False, 1.005),
    (MONEY, False, "1.005"),
    (MONEY, False, True),
    (MONEY, False, "abc"),
    (MONEY, False, 1e10),
    (MONEY, False, []),
    (EXACT, False, 0.30000000000000004),  # more digits than a double keeps for sure
    (EXACT, False, 1.2345678901234568e29),  # what orjson makes of a 30-digit integer
    (DAY, False, "2024-01-31T00:00:00Z"),
    (DAY, False, 20240131),
    (DAY, False, "2024-02-30"),
    (NAIVE, False, "2024-01-31T12:00:00"),  # RFC 3339 needs a zone
    (NAIVE, False, "2024-01-31 12:00:00Z"),
    (NAIVE, False, "2024-01-31T12:00:00.1234567Z"),
    (NAIVE, False, "0001-01-01T00:00:00+01:00"),
    (NAIVE, False, 0),
    (UUID, False, U.hex),
    (UUID, False, 5),
    (SIZE_BY_NAME, False, "SMALL"),
    (SIZE_BY_NAME, False, 1),
    (PRIORITY, False, "1"),
    (PRIORITY, False, True),
    (PRIORITY, False, 1.0),
]


@pytest.mark.parametrize(("codec", "required", "value"), BODY_BAD)
def test_annotation_refuses_wrong_values(codec: Codec, required: bool, value: object) -> None:
    with pytest.raises(ValidationError):
        _adapter(codec, required=required).validate_python(value)


def test_annotation_json_schemas_describe_the_accepted_form() -> None:
    def schema(codec: Codec, **kwargs: bool) -> dict[str, Any]:
        result: dict[str, Any] = _adapter(codec, **kwargs).json_schema()
        return result

    assert schema(INT16) == {"type": "integer", "minimum": -32768, "maximum": 32767}
    assert schema(SHORT, required=True) == {"type": "string", "minLength": 1, "maxLength": 5}
    assert schema(EMAIL)["pattern"] == r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"
    assert schema(NAIVE)["format"] == "date-time"
    assert schema(DAY)["format"] == "date"
    assert schema(UUID)["format"] == "uuid"
    assert schema(SIZE_BY_NAME) == {"type": "string", "enum": ["s", "m", "l"]}
    assert {"type": "number"} in schema(MONEY)["anyOf"]
    assert schema(ANY_JSON) == {}


# -- schema, operators, codec_for -----------------------------------------------------------

SCHEMAS: list[tuple[Codec, dict[str, Any]]] = [
    (INT16, {"type": "integer", "minimum": -32768, "maximum": 32767}),
    (INT64, {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}),
    (SHORT, {"type": "string", "maxLength": 5}),
    (StringCodec(), {"type": "string"}),
    (EMAIL, {"type": "string", "maxLength": 255}),  # the pattern checks bodies, not the format
    (BOOL, {"type": "boolean"}),
    (DOUBLE, {"type": "number"}),
    (MONEY, {"type": "number"}),
    (DAY, {"type": "string", "format": "date"}),
    (AWARE, {"type": "string", "format": "date-time"}),
    (UUID, {"type": "string", "format": "uuid"}),
    (SIZE_BY_NAME, {"type": "string", "enum": ["s", "m", "l"]}),
    (SIZE_BY_VALUE, {"type": "string", "enum": ["s", "m", "l"]}),
    (GREEK, {"type": "string", "enum": ["zeta", "alpha", "mid"]}),
    (PRIORITY, {"type": "integer", "enum": [1, 2]}),
    (ANY_JSON, {}),
]


@pytest.mark.parametrize(("codec", "expected"), SCHEMAS)
def test_schema(codec: Codec, expected: dict[str, Any]) -> None:
    assert codec.schema() == expected


OPERATORS: list[tuple[Codec, frozenset[str], bool]] = [
    (INT32, ORDERED, True),
    (SHORT, TEXT, True),
    (BOOL, EQUALITY, True),
    (DOUBLE, ORDERED, True),
    (MONEY, ORDERED, True),
    (DAY, ORDERED, True),
    (NAIVE, ORDERED, True),
    (UUID, ORDERED, True),
    (GREEK, EQUALITY, True),
    (ANY_JSON, frozenset(), False),
]


@pytest.mark.parametrize(("codec", "operators", "sortable"), OPERATORS)
def test_operators_per_type(codec: Codec, operators: frozenset[str], sortable: bool) -> None:
    assert codec.operators == operators
    assert codec.sortable is sortable
    assert {"contains", "startswith"} <= codec.operators or codec.name != "string"


def test_operator_sets_nest() -> None:
    assert {"eq", "ne", "in", "isnull"} == EQUALITY < ORDERED < TEXT
    assert {"contains", "startswith"} == TEXT - ORDERED


class Upper(TypeDecorator[str]):
    impl = String(10)
    cache_ok = True


class Point(UserDefinedType[Any]):
    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "POINT"


def _column(kind: Any, **kwargs: Any) -> Column[Any]:
    return Column("c", kind, **kwargs)


CODEC_FOR: list[tuple[Column[Any], Codec | None]] = [
    (_column(SmallInteger), INT16),
    (_column(Integer), INT32),
    (_column(BigInteger), INT64),
    (_column(postgresql.BIGINT), INT64),
    (_column(Integer().with_variant(BigInteger, "postgresql")), INT32),
    (_column(String(16)), StringCodec(length=16)),
    (_column(String(16).with_variant(String(16, collation="C"), "postgresql")), StringCodec(16)),
    (_column(String), StringCodec()),
    (_column(Text), StringCodec()),
    (_column(Unicode(8)), StringCodec(length=8)),
    (_column(UnicodeText), StringCodec()),
    (_column(String(255), info={"format": "email"}), EMAIL),
    (_column(Boolean), BOOL),
    (_column(Float), DOUBLE),
    (_column(Double), DOUBLE),
    (_column(REAL), SINGLE),
    (_column(Float(precision=24)), SINGLE),
    (_column(Float(asdecimal=True)), EXACT),
    (_column(Numeric(10, 2)), MONEY),
    (_column(Numeric(5)), WHOLE),
    (_column(Numeric), EXACT),
    (_column(Numeric(10, 2, asdecimal=False)), DOUBLE),
    (_column(Date), DAY),
    (_column(DateTime), NAIVE),
    (_column(DateTime(timezone=True)), AWARE),
    (_column(postgresql.TIMESTAMP(timezone=True)), AWARE),
    (_column(Uuid), UUID),
    (_column(Uuid(as_uuid=False)), UUID_TEXT),
    (_column(postgresql.UUID()), UUID),
    (_column(Enum(Size)), SIZE_BY_NAME),
    (_column(Enum(Size, values_callable=_values_of)), SIZE_BY_VALUE),
    (_column(Enum("zeta", "alpha", "mid", name="greek")), GREEK),
    (_column(postgresql.ENUM("zeta", "alpha", "mid", name="greek")), GREEK),
    (_column(Enum(Priority)), PRIORITY),
    (_column(JSON), ANY_JSON),
    (_column(postgresql.JSONB), ANY_JSON),
    (_column(LargeBinary), None),
    (_column(ARRAY(Integer)), None),
    (_column(Interval), None),
    (_column(Time), None),
    (_column(PickleType), None),
    (_column(Upper), None),
    (_column(Point()), None),
    (_column(Enum(Ratio)), None),
]


@pytest.mark.parametrize(("column", "expected"), CODEC_FOR)
def test_codec_for_dispatches_on_the_column_type(
    column: Column[Any], expected: Codec | None
) -> None:
    assert codec_for(column) == expected


def test_enum_stored_strings_follow_sqlalchemy() -> None:
    # SQLAlchemy stores a Python enum's names unless values_callable says otherwise.
    assert SIZE_BY_NAME.stored == ("SMALL", "MEDIUM", "LARGE")
    assert SIZE_BY_VALUE.stored == ("s", "m", "l")
    assert SIZE_BY_NAME.values == SIZE_BY_VALUE.values == ("s", "m", "l")
    codec = _enum(Alias)
    assert codec.stored == ("RED", "BLUE")  # SQLAlchemy leaves aliases out
    assert codec.values == ("red", "blue")
    assert codec.parse("red", parameter="p") is Alias.RED


# -- JSON output ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("10.50"), b"10.50"),
        (Decimal("-0.01"), b"-0.01"),
        (Decimal("1.23456789012345678901234567890"), b"1.23456789012345678901234567890"),
        (Decimal("1E+2"), b"1E+2"),
        (Decimal("NaN"), b"null"),
        (Decimal("-Infinity"), b"null"),
    ],
)
def test_decimals_render_as_json_numbers_with_their_digits(value: Decimal, expected: bytes) -> None:
    rendered = orjson.dumps({"v": value}, default=json_default, option=orjson.OPT_NAIVE_UTC)
    assert rendered == b'{"v":' + expected + b"}"
    if value.is_finite():
        assert Decimal(str(orjson.loads(expected))) == value or b"." in expected


def test_json_default_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        orjson.dumps({"v": object()}, default=json_default)


# -- code point order in SQL ----------------------------------------------------------------

_COLLATED = Table(
    "collated",
    MetaData(),
    Column("plain", String(20)),
    Column("c_variant", String(20).with_variant(String(20, collation="C"), "postgresql")),
    Column("posix", String(20, collation="POSIX")),
    Column("nocase", String(20, collation="NOCASE")),
)


@pytest.mark.parametrize(
    ("column", "on_postgresql", "on_sqlite"),
    [
        ("plain", 'collated.plain COLLATE "C"', "collated.plain"),
        ("c_variant", "collated.c_variant", "collated.c_variant"),
        ("posix", "collated.posix", "collated.posix COLLATE BINARY"),
        ("nocase", 'collated.nocase COLLATE "C"', "collated.nocase COLLATE BINARY"),
    ],
)
def test_code_point_keeps_columns_already_collated_by_code_point(
    column: str, on_postgresql: str, on_sqlite: str
) -> None:
    key = StringCodec().order_key(_COLLATED.c[column])
    on_postgresql_dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    assert str(key.compile(dialect=on_postgresql_dialect)) == on_postgresql
    assert str(key.compile(dialect=sqlite.dialect())) == on_sqlite


def test_code_point_statements_are_cacheable_per_column() -> None:
    def key_of(column: str) -> object:
        statement = select(_COLLATED.c.plain).order_by(CodePoint(_COLLATED.c[column]))
        return statement._generate_cache_key()

    assert key_of("plain") is not None
    assert key_of("plain") == key_of("plain")
    assert key_of("plain") != key_of("nocase")


# -- on the databases -----------------------------------------------------------------------

_ROWS = 24
_TEXTS = ["a", "B", "b", "Z", "z", "é", "É", "ß", "aa", "A", "中", "😀", "ab", "Ä", "_", " ", "a b"]
_UUIDS = [
    uuid.UUID(int=0),
    uuid.UUID(int=2**128 - 1),
    uuid.UUID("00000000-0000-0000-0000-0000000000ff"),
    uuid.UUID("90000000-0000-0000-0000-000000000000"),
    uuid.UUID("a0000000-0000-0000-0000-000000000000"),
    uuid.UUID("0fffffff-ffff-ffff-ffff-ffffffffffff"),
    uuid.UUID("10000000-0000-0000-0000-000000000000"),
    *(uuid.UUID(int=random.Random(n).getrandbits(128)) for n in range(8)),
]
_COLUMNS: dict[str, tuple[Any, list[Any]]] = {
    "small": (SmallInteger, [-32768, 32767, 0, -1, 1, 300, -300]),
    "int32": (Integer, [-(2**31), 2**31 - 1, 0, 7, -7]),
    "int64": (BigInteger, [-(2**63), 2**63 - 1, 0, 2**40, -(2**40), 5]),
    "text": (String(40), _TEXTS),
    "text_c": (String(40).with_variant(String(40, collation="C"), "postgresql"), _TEXTS),
    # Collations that do not compare by code point, on each backend: the codec must undo them.
    "text_folded": (
        String(40, collation="NOCASE").with_variant(
            String(40, collation="und-x-icu"), "postgresql"
        ),
        _TEXTS,
    ),
    "flag": (Boolean, [True, False, True, False, True]),
    "double": (Double, [0.1, -0.1, 1e300, -1e300, 5e-324, 0.0, 2.5]),
    "single": (REAL, [0.1, -0.1, 1e30, -1e30, 2.5, 3.0]),
    "money": (
        Numeric(10, 2),
        [Decimal("10.50"), Decimal("-0.01"), Decimal("99999999.99"), Decimal("0.00")],
    ),
    "day": (Date, [date(1, 1, 1), date(9999, 12, 31), date(2024, 2, 29), date(1970, 1, 1)]),
    "naive": (
        DateTime,
        [
            datetime(2024, 1, 1, 0, 0, 0, 1),
            datetime(2024, 1, 1),
            datetime(1, 1, 1),
            datetime(9999, 12, 31, 23, 59, 59, 999999),
            datetime(1999, 12, 31, 23, 59, 59),
        ],
    ),
    "aware": (
        DateTime(timezone=True),
        [
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
        ],
    ),
    "ident": (Uuid, _UUIDS),
    "ident_text": (Uuid(as_uuid=False), [str(u) for u in _UUIDS]),
    "size": (Enum(Size), list(Size)),
    "size_value": (Enum(Size, name="size_value", values_callable=_values_of), list(Size)),
    "greek": (Enum("zeta", "alpha", "mid", name="greek"), ["zeta", "alpha", "mid"]),
}


def _table() -> tuple[Table, list[dict[str, Any]]]:
    """A table with one nullable column of each sortable type, filled in random order."""
    columns = [Column("id", Integer, primary_key=True, autoincrement=False)]
    columns += [Column(name, kind) for name, (kind, _) in _COLUMNS.items()]
    table = Table("typed", MetaData(), *columns)
    rng = random.Random(20240131)
    rows: list[dict[str, Any]] = [{"id": n} for n in range(_ROWS)]
    for name, (_, values) in _COLUMNS.items():
        filled = values + [None] * (_ROWS - len(values))
        rng.shuffle(filled)
        for row, value in zip(rows, filled, strict=True):
            row[name] = value
    return table, rows


async def _filled(url: str) -> tuple[Any, Table, list[dict[str, Any]]]:
    table, rows = _table()
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(table.metadata.create_all)
        await connection.execute(table.insert(), rows)
    return engine, table, rows


def _codec(table: Table, name: str) -> Codec:
    codec = codec_for(table.c[name])
    assert codec is not None
    return codec


async def _ids(connection: AsyncConnection, statement: Any) -> list[int]:
    return list((await connection.scalars(statement)).all())


async def test_order_key_sorts_alike_on_both_backends(databases: DatabaseFactory) -> None:
    engine, table, rows = await _filled(await databases.empty())
    try:
        async with engine.connect() as connection:
            for name in _COLUMNS:
                column, codec = table.c[name], _codec(table, name)
                statement = select(table.c.id).order_by(
                    column.is_(None), codec.order_key(column), table.c.id
                )

                def python_order(
                    row: dict[str, Any], name: str = name, codec: Codec = codec
                ) -> Any:
                    value = row[name]
                    return (
                        value is None,
                        0 if value is None else codec.order_value(value),
                        row["id"],
                    )

                expected = [row["id"] for row in sorted(rows, key=python_order)]
                assert await _ids(connection, statement) == expected, name
    finally:
        await engine.dispose()


async def test_order_key_compares_with_order_value(databases: DatabaseFactory) -> None:
    """The keyset condition's shape: `order_key(column) > order_value(v)`, per type."""
    engine, table, rows = await _filled(await databases.empty())
    try:
        async with engine.connect() as connection:
            for name, (_, values) in _COLUMNS.items():
                column, codec = table.c[name], _codec(table, name)
                pivot = codec.order_value(sorted(values, key=codec.order_value)[len(values) // 2])
                statement = select(table.c.id).where(codec.order_key(column) > pivot)
                expected = {
                    row["id"]
                    for row in rows
                    if row[name] is not None and codec.order_value(row[name]) > pivot
                }
                assert set(await _ids(connection, statement)) == expected, name
    finally:
        await engine.dispose()


async def test_formatted_values_find_their_rows(databases: DatabaseFactory) -> None:
    """Every value as the database hands it back, formatted then parsed, equals itself in SQL."""
    engine, table, _ = await _filled(await databases.empty())
    try:
        async with engine.connect() as connection:
            stored = (await connection.execute(select(table))).mappings().all()
            for row in stored:
                for name in _COLUMNS:
                    if row[name] is None:
                        continue
                    codec = _codec(table, name)
                    value = codec.parse(codec.format(row[name]), parameter=f"filter[{name}]")
                    found = await _ids(connection, select(table.c.id).where(table.c[name] == value))
                    assert row["id"] in found, (name, row[name])
    finally:
        await engine.dispose()


async def test_boolean_filters_match_on_both_backends(databases: DatabaseFactory) -> None:
    engine, table, rows = await _filled(await databases.empty())
    codec = BooleanCodec()
    try:
        async with engine.connect() as connection:
            for raw in ("true", "FALSE"):
                value = codec.parse(raw, parameter="filter[flag]")
                expected = sorted(row["id"] for row in rows if row["flag"] is value)
                column = table.c.flag
                assert await _ids(connection, select(table.c.id).where(column == value)) == expected
                in_list = select(table.c.id).where(column.in_([value])).order_by(table.c.id)
                assert await _ids(connection, in_list) == expected
    finally:
        await engine.dispose()
