"""Integers, floats and decimals: range- and digit-checked on both backends."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Annotated, Any

import orjson
from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    WithJsonSchema,
)

from service.errors import InvalidParameter
from service.schema.codecs.base import (
    _EXACT_DIGITS,
    _FLOAT32_MAX,
    _MAX_NUMBER_TEXT,
    _NUMBER,
    NUMBER_PATTERN,
    ORDERED,
    Codec,
    Scalar,
    Schema,
    _shown,
)


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
