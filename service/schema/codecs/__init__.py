"""One codec per column type: parse, check, order, format and describe its values in one place.

Adding a type is one class in the module of its family and one line in `codec_for`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, types

from service.schema.codecs.base import (
    EMAIL_PATTERN,
    EQUALITY,
    ORDERED,
    TEXT,
    Codec,
    Scalar,
    Schema,
)
from service.schema.codecs.choices import EnumCodec, JsonCodec, UuidCodec
from service.schema.codecs.moments import DateCodec, DateTimeCodec
from service.schema.codecs.numbers import DecimalCodec, FloatCodec, IntegerCodec, json_default
from service.schema.codecs.text import BooleanCodec, CodePoint, StringCodec

__all__ = [
    "EMAIL_PATTERN",
    "EQUALITY",
    "ORDERED",
    "TEXT",
    "BooleanCodec",
    "CodePoint",
    "Codec",
    "DateCodec",
    "DateTimeCodec",
    "DecimalCodec",
    "EnumCodec",
    "FloatCodec",
    "IntegerCodec",
    "JsonCodec",
    "Scalar",
    "Schema",
    "StringCodec",
    "UuidCodec",
    "codec_for",
    "json_default",
]


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
