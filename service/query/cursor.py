"""Signed keyset cursors: the last row's sort values, bound to the query they were made for."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import replace
from datetime import datetime

import orjson

from service.errors import InvalidParameter
from service.query.canonical import binding
from service.query.plan import ListQuery
from service.query.values import Scalar
from service.resources import RESOURCES, AttrType

_MAC_BYTES = 16


class CursorCodec:
    """Encodes and verifies cursors with HMAC-SHA256 under one secret."""

    __slots__ = ("_key",)

    def __init__(self, secret: bytes) -> None:
        self._key = secret

    def encode(self, values: tuple[Scalar | None, ...], *, binding: str) -> str:
        payload = orjson.dumps([_to_json(value) for value in values])
        mac = self._mac(payload, binding)
        return _b64(payload) + "." + _b64(mac)

    def decode(
        self, token: str, *, binding: str, types: tuple[AttrType, ...]
    ) -> tuple[Scalar | None, ...]:
        """The values of a cursor made for `binding`; anything else is a 400."""
        try:
            payload_text, mac_text = token.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise _invalid() from None
        if f"{_b64(payload)}.{_b64(mac)}" != token:
            raise _invalid()  # one spelling per cursor, so one cache entry per page
        if not hmac.compare_digest(mac, self._mac(payload, binding)):
            raise _invalid()
        try:
            raw = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise _invalid() from None
        if not isinstance(raw, list) or len(raw) != len(types):
            raise _invalid()
        return tuple(_from_json(value, kind) for value, kind in zip(raw, types, strict=True))

    def _mac(self, payload: bytes, binding: str) -> bytes:
        message = hashlib.sha256(binding.encode()).digest() + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _invalid() -> InvalidParameter:
    return InvalidParameter(
        "cursor", "the cursor is not valid for this query (it is bound to its sort and filters)"
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _to_json(value: Scalar | None) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _from_json(value: object, kind: AttrType) -> Scalar | None:
    # The MAC already vouches for the payload; these checks guard against our own drift.
    if value is None:
        return None
    if kind is AttrType.INTEGER and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is AttrType.STRING and isinstance(value, str):
        return value
    if kind is AttrType.DATETIME and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise _invalid() from None
    raise _invalid()


def attach_cursor(query: ListQuery, token: str, codec: CursorCodec) -> ListQuery:
    """The query continued after the row the cursor names; a cursor from another query is a 400."""
    resource = RESOURCES[query.resource]
    types = tuple(attr.type for key in query.sort if (attr := resource.attribute(key.name)))
    after = codec.decode(token, binding=binding(query), types=types)
    return replace(query, after=after, cursor=token)
