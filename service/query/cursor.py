"""Keyset cursors: the last row's sort values, bound to their query, signed or sealed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import replace

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from service.errors import InvalidParameter
from service.query.canonical import binding
from service.query.plan import ListQuery
from service.schema import Attribute
from service.schema.codecs import Scalar

_MAC_BYTES = 16
# Base64url never writes '~': a sealed cursor cannot be read as a signed one, nor the reverse.
_SEALED = "~"
_KEY_LABEL = b"service keyset cursors: AES-SIV key"
# Sealed payloads are padded to a multiple of this, so a cursor's length says little of
# the length of the value it hides.
_BLOCK = 32


class CursorCodec:
    """Signs cursors with HMAC-SHA256 under one secret; seals them with AES-SIV instead
    (deterministic authenticated encryption: one spelling per page, as the cache keys need)
    when their query sorts by a private attribute, so URLs in logs do not carry its values."""

    __slots__ = ("_key", "_siv")

    def __init__(self, secret: bytes) -> None:
        self._key = secret
        derive = HKDF(algorithm=SHA256(), length=64, salt=None, info=_KEY_LABEL)
        self._siv = AESSIV(derive.derive(secret))

    def encode(
        self, values: tuple[Scalar | None, ...], *, binding: str, attributes: tuple[Attribute, ...]
    ) -> str:
        """The cursor after a row with these sort values (of these sort attributes)."""
        payload = orjson.dumps(
            [
                None if v is None else a.codec.to_cursor(v)
                for v, a in zip(values, attributes, strict=True)
            ]
        )
        if _sealed(attributes):
            padded = payload + b" " * (-len(payload) % _BLOCK)
            return _SEALED + _b64(self._siv.encrypt(padded, [binding.encode()]))
        return _b64(payload) + "." + _b64(self._mac(payload, binding))

    def decode(
        self, token: str, *, binding: str, attributes: tuple[Attribute, ...]
    ) -> tuple[Scalar | None, ...]:
        """The values of a cursor made for `binding`, checked against the sort's attributes;
        anything else is a 400."""
        if _sealed(attributes):
            payload = self._unseal(token, binding)
        else:
            payload = self._verify(token, binding)
        try:
            raw = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise _invalid() from None
        if not isinstance(raw, list) or len(raw) != len(attributes):
            raise _invalid()
        return tuple(_from_json(value, attr) for value, attr in zip(raw, attributes, strict=True))

    def _verify(self, token: str, binding: str) -> bytes:
        try:
            payload_text, mac_text = token.split(".")
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            raise _invalid() from None
        if f"{_b64(payload)}.{_b64(mac)}" != token:
            raise _invalid()  # one spelling per cursor, so one cache entry per page
        if not hmac.compare_digest(mac, self._mac(payload, binding)):
            raise _invalid()
        return payload

    def _unseal(self, token: str, binding: str) -> bytes:
        try:
            sealed = _unb64(token.removeprefix(_SEALED))
        except (ValueError, binascii.Error):
            raise _invalid() from None
        if _SEALED + _b64(sealed) != token:
            raise _invalid()  # one spelling per cursor, as above
        try:
            return self._siv.decrypt(sealed, [binding.encode()])
        except InvalidTag:
            raise _invalid() from None

    def _mac(self, payload: bytes, binding: str) -> bytes:
        message = hashlib.sha256(binding.encode()).digest() + payload
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _sealed(attributes: tuple[Attribute, ...]) -> bool:
    """A cursor whose sort names a private attribute would carry its values: seal it."""
    return any(attribute.private for attribute in attributes)


def _invalid() -> InvalidParameter:
    return InvalidParameter(
        "cursor", "the cursor is not valid for this query (it is bound to its sort and filters)"
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _from_json(value: object, attribute: Attribute) -> Scalar | None:
    # The MAC says who made a cursor, not that its values fit: whoever holds the secret can
    # sign values the database refuses (a 500 or 503 there), so each is checked by its
    # codec as the column stores it.
    try:
        if value is None:
            if not attribute.nullable:
                raise _invalid()
            return None
        return attribute.codec.from_cursor(value, parameter="cursor")
    except InvalidParameter:
        raise _invalid() from None


def attach_cursor(query: ListQuery, token: str, codec: CursorCodec) -> ListQuery:
    """The query continued after the row the cursor names; a cursor from another query is a 400."""
    after = codec.decode(token, binding=binding(query), attributes=query.sort_attributes)
    return replace(query, after=after, cursor=token)
