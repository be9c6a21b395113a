"""Keyset cursors: values survive the round trip; anything forged or foreign is a 400."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, String
from sqlalchemy.types import TypeEngine

from service.errors import InvalidParameter
from service.query.canonical import binding
from service.query.cursor import CursorCodec, attach_cursor
from service.query.params import parse_query_string
from service.query.plan import Limits, ListQuery, Scope, build_list_query
from service.schema import Attribute, Join
from service.schema.codecs import (
    BooleanCodec,
    Codec,
    DateTimeCodec,
    IntegerCodec,
    Scalar,
    StringCodec,
)
from tests.conftest import AUTH as RESOURCES

SECRET = b"s" * 32
CODEC = CursorCodec(SECRET)
BINDING = "users||filter[name]=a|-created,id"
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # the built-in models' integer columns are 32-bit


def column(name: str, kind: TypeEngine[Any], codec: Codec) -> Attribute:
    """A nullable, public sort key of this type with no other bound: the codec's own checks."""
    return Attribute(name, Column(name, kind), codec, "t", nullable=True)


INTEGER = column("integer", Integer(), IntegerCodec(bits=32))
STRING = column("string", String(), StringCodec())
DATETIME = column("timestamp", DateTime(), DateTimeCodec(timezone=False))
# The keys of other sorts, whose cursors must not pass for the ones above.
BIGINT = column("bigint", BigInteger(), IntegerCodec(bits=64))
BOOLEAN = column("boolean", Boolean(), BooleanCodec())
AWARE = column("aware", DateTime(timezone=True), DateTimeCodec(timezone=True))


def make_query(raw: str, resource: str = "users") -> ListQuery:
    return build_list_query(
        RESOURCES[resource], parse_query_string(raw), private_ok=True, limits=Limits()
    )


def relationship(resource: str, name: str) -> Join:
    join = RESOURCES[resource].relationship(name)
    assert join is not None
    return join


def sort_attributes(query: ListQuery) -> tuple[Attribute, ...]:
    """The attributes of the query's sort keys, looked up by name: what its cursors hold."""
    resource = query.resource
    found = tuple(attribute for key in query.sort if (attribute := resource.attribute(key.name)))
    assert found == query.sort_attributes
    return found


def sorts_private(query: ListQuery) -> bool:
    return any(attribute.private for attribute in sort_attributes(query))


def assert_invalid(
    token: str,
    *,
    codec: CursorCodec = CODEC,
    bound: str = BINDING,
    types: tuple[Attribute, ...] = (INTEGER,),
) -> None:
    with pytest.raises(InvalidParameter) as info:
        codec.decode(token, binding=bound, attributes=types)
    assert info.value.status == 400
    assert [item.parameter for item in info.value.errors] == ["cursor"]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "types"),
    [
        ((1,), (INTEGER,)),
        ((0,), (INTEGER,)),
        ((-(2**31),), (INTEGER,)),
        ((2**31 - 1,), (INTEGER,)),
        (("alice", 7), (STRING, INTEGER)),
        (("", 7), (STRING, INTEGER)),
        (("élève ☃ 𝄞 日本", 7), (STRING, INTEGER)),
        (('quote " back\\slash \n\t\x7f', 7), (STRING, INTEGER)),
        ((datetime(2024, 1, 1), 3), (DATETIME, INTEGER)),
        ((datetime(2024, 1, 1, 12, 30, 45, 123456), 3), (DATETIME, INTEGER)),
        ((datetime(1, 1, 1), 3), (DATETIME, INTEGER)),
        ((datetime(9999, 12, 31, 23, 59, 59, 999999), 3), (DATETIME, INTEGER)),
        ((None, 3), (DATETIME, INTEGER)),
        ((None, 3), (STRING, INTEGER)),
        ((None, "x", datetime(2000, 2, 29), 9), (STRING, STRING, DATETIME, INTEGER)),
    ],
)
def test_round_trip(values: tuple[Scalar | None, ...], types: tuple[Attribute, ...]) -> None:
    token = CODEC.encode(values, binding=BINDING, attributes=types)
    decoded = CODEC.decode(token, binding=BINDING, attributes=types)
    assert decoded == values
    assert [type(value) for value in decoded] == [type(value) for value in values]
    assert token.isascii()
    assert token == token.strip()
    assert not set(token) & set("=&+/% ")  # URL-safe as is


_SCALARS: dict[Attribute, st.SearchStrategy[Scalar | None]] = {
    INTEGER: st.integers(-(2**31), 2**31 - 1),
    STRING: st.text(st.characters(exclude_characters="\x00")),
    DATETIME: st.datetimes(),  # naive, as stored
}


@given(
    columns=st.lists(st.sampled_from([INTEGER, STRING, DATETIME]), min_size=1, max_size=4).flatmap(
        lambda types: st.tuples(
            st.just(tuple(types)),
            st.tuples(*(st.none() | _SCALARS[kind] for kind in types)),
        )
    ),
    bound=st.text(),
)
def test_round_trip_of_any_values(
    columns: tuple[tuple[Attribute, ...], tuple[Scalar | None, ...]], bound: str
) -> None:
    types, values = columns
    token = CODEC.encode(values, binding=bound, attributes=types)
    assert CODEC.decode(token, binding=bound, attributes=types) == values


# --- forgeries -----------------------------------------------------------------------------


TYPES = (STRING, INTEGER)


@pytest.fixture
def token() -> str:
    return CODEC.encode(("alice", 7), binding=BINDING, attributes=TYPES)


@pytest.mark.parametrize(
    "forged",
    [
        ["alice", 8],
        ["alicf", 7],
        ["alice", 7, 1],
        ["alice"],
        [],
        {"name": "alice"},
        ["alice", None],
    ],
)
def test_tampered_payload(token: str, forged: object) -> None:
    _, mac = token.split(".")
    assert_invalid(b64(orjson.dumps(forged)) + "." + mac, types=TYPES)


@pytest.mark.parametrize("position", [0, 5, 10, 15])
def test_tampered_mac(token: str, position: int) -> None:
    payload, mac = token.split(".")
    raw = bytearray(unb64(mac))
    raw[position] ^= 0x01
    assert_invalid(payload + "." + b64(bytes(raw)), types=TYPES)


def test_every_single_character_change_is_refused(token: str) -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for index, char in enumerate(token):
        if char == ".":
            continue
        for replacement in (alphabet[(alphabet.index(char) + 16) % 64], "."):
            forged = token[:index] + replacement + token[index + 1 :]
            assert_invalid(forged, types=TYPES)


def test_wrong_secret(token: str) -> None:
    assert_invalid(token, codec=CursorCodec(b"t" * 32), types=TYPES)
    assert_invalid(token, codec=CursorCodec(b""), types=TYPES)


@pytest.mark.parametrize(
    "bound",
    ["", "groups||filter[name]=a|-created,id", "users||filter[name]=b|-created,id", BINDING + " "],
)
def test_other_binding(token: str, bound: str) -> None:
    assert_invalid(token, bound=bound, types=TYPES)


def test_truncated_tokens(token: str) -> None:
    for end in range(len(token)):
        assert_invalid(token[:end], types=TYPES)
    payload, mac = token.split(".")
    for start in range(1, len(payload)):
        assert_invalid(payload[start:] + "." + mac, types=TYPES)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "a.b.c",
        "abc",
        "abc.",
        ".abc",
        "é.é",
        "%%%.%%%",
        "a" * 10_000 + ".b",
        "\x00.\x00",
    ],
)
def test_garbage(garbage: str) -> None:
    assert_invalid(garbage, types=TYPES)


@pytest.mark.parametrize(
    ("values", "made_for", "types"),
    [
        (("7",), (STRING,), (INTEGER,)),
        ((True,), (BOOLEAN,), (INTEGER,)),
        ((7,), (INTEGER,), (STRING,)),
        ((7,), (INTEGER,), (DATETIME,)),
        (("not a date",), (STRING,), (DATETIME,)),
        ((1, 2), (INTEGER, INTEGER), (INTEGER,)),
        ((1,), (INTEGER,), (INTEGER, INTEGER)),
        ((2**31,), (BIGINT,), (INTEGER,)),
        (("a\x00b",), (STRING,), (STRING,)),
        ((datetime(2024, 1, 1, tzinfo=UTC),), (AWARE,), (DATETIME,)),
        ((datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5))),), (AWARE,), (DATETIME,)),
    ],
)
def test_genuine_mac_with_the_wrong_shape_is_still_a_400(
    values: tuple[Scalar, ...], made_for: tuple[Attribute, ...], types: tuple[Attribute, ...]
) -> None:
    # a cursor made for another sort (`made_for`) by a server with the same secret and binding
    assert_invalid(CODEC.encode(values, binding=BINDING, attributes=made_for), types=types)


@given(garbage=st.text())
def test_any_text_is_refused_with_a_400(garbage: str) -> None:
    assert_invalid(garbage, types=TYPES)


@given(payload=st.binary(), mac=st.binary(max_size=40))
def test_any_well_formed_token_without_the_mac_is_refused(payload: bytes, mac: bytes) -> None:
    assert_invalid(b64(payload) + "." + b64(mac), types=TYPES)


# --- attach_cursor -------------------------------------------------------------------------


def test_attach_cursor_continues_the_same_query() -> None:
    query = make_query("filter[name][startswith]=a&sort=-created,name")
    values = (datetime(2024, 1, 1), "alice", 5)
    token = CODEC.encode(values, binding=binding(query), attributes=sort_attributes(query))
    attached = attach_cursor(query, token, CODEC)
    assert attached.after == (datetime(2024, 1, 1), "alice", 5)
    assert attached.cursor == token
    assert replace(attached, after=None, cursor=None) == query


@pytest.mark.parametrize(
    "raw",
    [
        # the shape, page size and count do not matter
        "filter[name][startswith]=a&sort=-created,name&fields=name",
        "filter[name][startswith]=a&sort=-created,name&include=groups&limit=3",
        "sort=-created,name,id&count=true&filter[name][startswith]=a",
    ],
)
def test_attach_cursor_accepts_other_shapes(raw: str) -> None:
    origin = make_query("filter[name][startswith]=a&sort=-created,name")
    token = CODEC.encode(
        (None, "alice", 5), binding=binding(origin), attributes=sort_attributes(origin)
    )
    assert attach_cursor(make_query(raw), token, CODEC).after == (None, "alice", 5)


@pytest.mark.parametrize(
    ("raw", "resource"),
    [
        ("filter[name][startswith]=b&sort=-created,name", "users"),
        ("filter[name][contains]=a&sort=-created,name", "users"),
        ("sort=-created,name", "users"),
        ("filter[name][startswith]=a&sort=created,name", "users"),
        ("filter[name][startswith]=a&sort=-created,-name", "users"),
        ("filter[name][startswith]=a&sort=-created,name&filter[id][gt]=1", "users"),
        ("filter[name][startswith]=a&sort=-created,name", "groups"),
    ],
)
def test_attach_cursor_refuses_a_cursor_from_another_query(raw: str, resource: str) -> None:
    origin = make_query("filter[name][startswith]=a&sort=-created,name")
    token = CODEC.encode(
        (None, "alice", 5), binding=binding(origin), attributes=sort_attributes(origin)
    )
    with pytest.raises(InvalidParameter) as info:
        attach_cursor(make_query(raw, resource), token, CODEC)
    assert info.value.errors[0].parameter == "cursor"


def test_attach_cursor_refuses_a_cursor_from_another_scope() -> None:
    query = make_query("sort=name", "groups")
    scoped = replace(query, scope=Scope(relationship("users", "groups"), 1))
    token = CODEC.encode(("admins", 5), binding=binding(scoped), attributes=sort_attributes(scoped))
    assert attach_cursor(scoped, token, CODEC).after == ("admins", 5)
    for other in (query, replace(query, scope=Scope(relationship("users", "groups"), 2))):
        with pytest.raises(InvalidParameter):
            attach_cursor(other, token, CODEC)


@pytest.mark.parametrize("suffix", ["=", "=="])
def test_a_token_has_one_spelling(token: str, suffix: str) -> None:
    # harmless for safety (the values are the same), but the cursor text keys the cache
    assert_invalid(token + suffix, types=TYPES)


# --- forged values: typed as the sort keys, or a 400 -----------------------------------------

TEST_SECRET = b"test-secret"
TEST_CODEC = CursorCodec(TEST_SECRET)
KEY_LABEL = b"service keyset cursors: AES-SIV key"


def forge(payload: bytes, bound: str, *, sealed: bool, secret: bytes = TEST_SECRET) -> str:
    """A cursor holding `payload` byte for byte, made as the service makes them (so it also
    pins both formats): signed with HMAC, or sealed with AES-SIV behind a '~'."""
    if sealed:
        key = HKDF(algorithm=SHA256(), length=64, salt=None, info=KEY_LABEL).derive(secret)
        return "~" + b64(AESSIV(key).encrypt(payload, [bound.encode()]))
    message = hashlib.sha256(bound.encode()).digest() + payload
    return b64(payload) + "." + b64(hmac.new(secret, message, hashlib.sha256).digest()[:16])


def decodings(token: str) -> list[bytes]:
    """Every base64 and urlsafe-base64 reading of every run of base64 characters in `token`,
    at every alignment: whatever a reader of a log could try."""
    found: list[bytes] = []
    for run in re.findall(r"[A-Za-z0-9_+/-]+", token):
        for start in range(4):
            padded = run[start:] + "=" * (-len(run[start:]) % 4)
            for decode in (base64.urlsafe_b64decode, base64.b64decode):
                with contextlib.suppress(ValueError):
                    found.append(decode(padded))
    return found


def attach_forged(raw: str, payload: bytes, *, resource: str = "users") -> ListQuery:
    query = make_query(raw, resource)
    token = forge(payload, binding(query), sealed=sorts_private(query))
    return attach_cursor(query, token, TEST_CODEC)


def assert_fits(value: object, attribute: Attribute) -> None:
    """What the database takes for the attribute's column, as the service stores it (read
    from the column itself, not from the codec under test)."""
    kind = attribute.column.type
    if value is None:
        assert attribute.column.nullable, attribute
        assert attribute.nullable, attribute
    elif isinstance(kind, Integer):
        assert type(kind) is Integer  # 32-bit INTEGER on PostgreSQL
        assert type(value) is int
        assert INT_MIN <= value <= INT_MAX
    elif isinstance(kind, String):
        assert type(value) is str
        assert "\x00" not in value
        assert kind.length is None or len(value) <= kind.length
    else:
        assert isinstance(kind, DateTime)
        assert not kind.timezone  # naive UTC, as the service stores it
        assert type(value) is datetime
        assert value.tzinfo is None


REFUSED = [
    ("", b"[2147483648]"),
    ("", b"[-2147483649]"),
    ("", b"[9223372036854775808]"),
    ("", b"[18446744073709551616]"),  # orjson reads it as a float
    ("", b"[true]"),
    ("", b"[1.0]"),
    ("", b'["1"]'),
    ("", b"[null]"),  # id is never NULL
    ("", b"[]"),
    ("sort=name", b'["a\\u0000b",1]'),
    ("sort=name", b'["xxxxxxxxxxxxxxxxx",1]'),  # 17 characters; name holds 16
    ("sort=name", b"[null,1]"),
    ("sort=name", b"[1]"),
    ("sort=name", b'["a",1,2]'),
    ("sort=name", b'{"name":"a"}'),
    ("sort=name", b'"a"'),
    ("sort=name", b"not json"),
    ("sort=name", b'["\\ud800",1]'),  # a lone surrogate: no encoding can store it
    ("sort=-created", b'["2024-01-01T00:00:00Z",1]'),
    ("sort=-created", b'["2024-01-01T00:00:00+00:00",1]'),
    ("sort=-created", b'["2024-01-01T00:00:00-05:00",1]'),
    ("sort=-created", b'["2024-02-30T00:00:00",1]'),
    ("sort=-created", b'["yesterday",1]'),
    ("sort=-created", b"[20240101,1]"),
    ("sort=-created", b'["10000-01-01T00:00:00",1]'),
    ("sort=email_address", b'["a\\u0000@example.org",1]'),
    ("sort=email_address", b'["' + b"a" * 256 + b'",1]'),
    ("sort=email_address", b"[null,1]"),
    ("sort=-display_name", b'["' + "é".encode() * 256 + b'",1]'),
]


@pytest.mark.parametrize(("raw", "payload"), REFUSED)
def test_a_signed_value_the_database_would_refuse_is_a_400(raw: str, payload: bytes) -> None:
    with pytest.raises(InvalidParameter) as info:
        attach_forged(raw, payload)
    assert info.value.status == 400
    assert [item.parameter for item in info.value.errors] == ["cursor"]


@pytest.mark.parametrize(
    ("raw", "payload", "after"),
    [
        ("", b"[2147483647]", (2**31 - 1,)),
        ("", b"[-2147483648]", (-(2**31),)),
        ("sort=name", b'["' + b"x" * 16 + b'",1]', ("x" * 16, 1)),
        ("sort=email_address", b'["' + "é".encode() * 255 + b'",1]', ("é" * 255, 1)),
        ("sort=-display_name", b"[null,1]", (None, 1)),
        ("sort=-created", b'["0001-01-01T00:00:00",1]', (datetime(1, 1, 1), 1)),
        ("sort=-created", b'["9999-12-31T23:59:59.999999",1]', (datetime.max, 1)),
        ("sort=-created", b"[null,1]", (None, 1)),
    ],
)
def test_the_edges_of_each_type_are_accepted(
    raw: str, payload: bytes, after: tuple[Scalar | None, ...]
) -> None:
    assert attach_forged(raw, payload).after == after


SORTED_QUERIES = [
    make_query(raw, resource)
    for raw, resource in [
        ("", "users"),
        ("sort=name", "users"),
        ("sort=-created,display_name", "users"),
        ("sort=email_address", "users"),
        ("sort=-email_address,created", "users"),
        ("sort=-display_name", "groups"),
        ("sort=description,name", "permissions"),
    ]
]

_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_OFFSETS = st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
_NEAR: dict[str, st.SearchStrategy[object]] = {  # by codec name
    "integer": st.one_of(
        st.integers(-(2**31) - 2, -(2**31) + 2),
        st.integers(2**31 - 3, 2**31 + 2),
        st.integers(2**63 - 2, 2**64 + 2),
        st.integers(-(2**63) - 2, -(2**63) + 2),
        st.booleans(),
    ),
    "string": st.one_of(
        st.text(st.characters(codec="utf-8"), max_size=20),
        st.integers(0, 300).map(lambda size: "é" * size),
        st.text(alphabet="a\x00", max_size=5),
    ),
    "timestamp": st.datetimes(
        timezones=st.none() | st.just(UTC) | st.builds(timezone, _OFFSETS)
    ).map(datetime.isoformat),
}


def attach_or_refuse(query: ListQuery, token: str) -> ListQuery | InvalidParameter:
    try:
        return attach_cursor(query, token, TEST_CODEC)
    except InvalidParameter as error:
        return error


@given(data=st.data())
def test_any_signed_list_of_json_values_is_typed_or_a_400(data: st.DataObject) -> None:
    query = data.draw(st.sampled_from(SORTED_QUERIES))
    attributes = sort_attributes(query)
    right_size = st.tuples(*(_NEAR[attribute.codec.name] | _ANY_JSON for attribute in attributes))
    values = data.draw(right_size.map(list) | st.lists(_ANY_JSON, max_size=len(attributes) + 1))
    token = forge(json.dumps(values).encode(), binding(query), sealed=sorts_private(query))
    attached = attach_or_refuse(query, token)
    if isinstance(attached, InvalidParameter):
        assert attached.status == 400
        assert [item.parameter for item in attached.errors] == ["cursor"]
        return
    assert attached.after is not None
    assert len(attached.after) == len(attributes)
    for value, attribute in zip(attached.after, attributes, strict=True):
        assert_fits(value, attribute)


# --- private sort keys: sealed cursors -------------------------------------------------------


def inverse(join: Join) -> Join:
    """The target's relationship back to the source over the same link."""
    (found,) = (
        other
        for other in join.target.relationships
        if other.target is join.source and other.secondary is join.secondary
    )
    return found


@pytest.mark.parametrize("resource", sorted(RESOURCES))
def test_a_cursor_is_sealed_exactly_when_a_sort_key_is_private(resource: str) -> None:
    for attribute in RESOURCES[resource].attributes:
        query = make_query(f"sort={attribute.name}", resource)
        # the same query as a sub-collection: /<parent>/1/<resource>
        into = inverse(RESOURCES[resource].relationships[0])
        assert into.target is RESOURCES[resource]
        scoped = replace(query, scope=Scope(into, 1))
        attributes = sort_attributes(query)
        values = (*(None for _ in attributes[1:]), 1)
        for bound in (binding(query), binding(scoped)):
            token = TEST_CODEC.encode(values, binding=bound, attributes=attributes)
            assert token.startswith("~") is attribute.private, (attribute, bound)


PRIVATE = make_query("sort=-email_address,name")
PRIVATE_VALUES = ("alice.secret@example.org", "alice", 5)


def sealed_private() -> str:
    return TEST_CODEC.encode(
        PRIVATE_VALUES, binding=binding(PRIVATE), attributes=sort_attributes(PRIVATE)
    )


def test_a_sealed_cursor_round_trips_and_hides_its_values() -> None:
    token = sealed_private()
    assert token.startswith("~")
    assert token == sealed_private()  # one spelling
    assert attach_cursor(PRIVATE, token, TEST_CODEC).after == PRIVATE_VALUES
    assert not set(token) & set("=&+/% .")
    for readable in decodings(token):
        assert b"alice" not in readable


def test_the_formats_are_pinned() -> None:
    public = make_query("sort=name")
    signed = TEST_CODEC.encode(
        ("alice", 5), binding=binding(public), attributes=sort_attributes(public)
    )
    assert signed == forge(b'["alice",5]', binding(public), sealed=False)
    sealed = sealed_private()
    key = HKDF(algorithm=SHA256(), length=64, salt=None, info=KEY_LABEL).derive(TEST_SECRET)
    plain = AESSIV(key).decrypt(unb64(sealed[1:]), [binding(PRIVATE).encode()])
    assert orjson.loads(plain) == list(PRIVATE_VALUES)
    assert len(plain) % 32 == 0  # padded: the length tells the value's length only roughly


def test_every_change_to_a_sealed_cursor_is_refused() -> None:
    token = sealed_private()
    assert token.startswith("~")
    sealed = unb64(token[1:])
    for index in range(len(sealed)):
        for bit in (0x01, 0x80):
            changed = sealed[:index] + bytes([sealed[index] ^ bit]) + sealed[index + 1 :]
            with pytest.raises(InvalidParameter):
                attach_cursor(PRIVATE, "~" + b64(changed), TEST_CODEC)
    for end in range(len(token)):
        with pytest.raises(InvalidParameter):
            attach_cursor(PRIVATE, token[:end], TEST_CODEC)
    for bad in (token + "=", token[1:], "~~" + token[1:], " " + token, token + "."):
        with pytest.raises(InvalidParameter):
            attach_cursor(PRIVATE, bad, TEST_CODEC)
    for other in (make_query("sort=-email_address,name&filter[id][gt]=1"), make_query("sort=name")):
        with pytest.raises(InvalidParameter):
            attach_cursor(other, token, TEST_CODEC)


def test_a_cursor_of_the_other_kind_is_refused() -> None:
    public = make_query("sort=name")
    signed = forge(orjson.dumps(list(PRIVATE_VALUES)), binding(PRIVATE), sealed=False)
    sealed = forge(b'["alice",5]', binding(public), sealed=True)
    for query, token in ((PRIVATE, signed), (public, sealed)):
        with pytest.raises(InvalidParameter) as info:
            attach_cursor(query, token, TEST_CODEC)
        assert info.value.errors[0].parameter == "cursor"
