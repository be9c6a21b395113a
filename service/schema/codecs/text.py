"""Strings, compared by code point on both backends, and booleans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    StringConstraints,
)
from sqlalchemy import ColumnElement, Integer, cast
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.visitors import InternalTraversal

from service.errors import InvalidParameter
from service.schema.codecs.base import (
    EMAIL_PATTERN,
    TEXT,
    Codec,
    Scalar,
    Schema,
    _shown,
)


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
