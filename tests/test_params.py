"""The query-string parser: syntax only, no registry; every bad input is an InvalidParameter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import InvalidParameter
from service.query.params import (
    Count,
    Endpoint,
    FilterSpec,
    RawQuery,
    SortKey,
    parse_include,
    parse_name_list,
    parse_query_string,
    parse_sort,
)


def reject(raw: bytes | str, *, endpoint: Endpoint = Endpoint.LIST) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as info:
        parse_query_string(raw, endpoint=endpoint)
    assert info.value.status == 400
    assert len(info.value.errors) == 1
    return info.value


def parameter_of(error: InvalidParameter) -> str | None:
    return error.errors[0].parameter


# --- lists of names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("id", ("id",)),
        ("id,name", ("id", "name")),
        (" id , name ", ("id", "name")),
        ("id,name,id", ("id", "name")),
        ("name,id,name,id", ("name", "id")),
        ("id,,name,", ("id", "name")),
        ("\tid,\nname", ("id", "name")),
        ("_x,a1", ("_x", "a1")),
    ],
)
def test_name_list_normalizes_spaces_and_duplicates(value: str, expected: tuple[str, ...]) -> None:
    assert parse_name_list("fields", value) == expected


@pytest.mark.parametrize(
    "value",
    ["", " ", ",", " , ,", "id,na me", "1id", "id;name", "a-b", "x" * 65, "ïd", "id.name"],
)
def test_name_list_rejects_empty_and_malformed(value: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_name_list("fields[groups]", value)
    assert parameter_of(info.value) == "fields[groups]"


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [
        ("fields=", "fields"),
        ("fields", "fields"),
        ("fields=%20,%20", "fields"),
        ("include=groups&fields[groups]=", "fields[groups]"),
    ],
)
def test_empty_fields_is_an_error(raw: str, parameter: str) -> None:
    assert parameter_of(reject(raw)) == parameter


# --- repeats and unknown parameters --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [
        ("fields=a&fields=b", "fields"),
        ("fields=a&fields=a", "fields"),
        ("include=groups&include=groups", "include"),
        ("include=groups&fields[groups]=a&fields[groups]=b", "fields[groups]"),
        ("sort=name&sort=id", "sort"),
        ("limit=1&limit=1", "limit"),
        ("cursor=a&cursor=b", "cursor"),
        ("count=true&count=false", "count"),
        ("filter[name]=a&filter[name]=b", "filter[name]"),
        ("filter[name]=a&filter[name][eq]=b", "filter[name][eq]"),
        ("filter[name][eq]=a&filter[name]=b", "filter[name]"),
        ("filter[name]=a&filter[%20name%20]=b", "filter[ name ]"),
        ("filter[created][gte]=1&filter[created][gte]=2", "filter[created][gte]"),
        # a trailing newline must not make a second spelling of the same key
        ("fields=a&fields%0A=b", "fields\n"),
        ("limit%0A=5", "limit\n"),
    ],
)
def test_same_parameter_twice_is_an_error(raw: str, parameter: str) -> None:
    assert parameter_of(reject(raw)) == parameter


def test_different_operators_on_one_attribute_are_not_repeats() -> None:
    query = parse_query_string("filter[created][gte]=a&filter[created][lt]=b")
    assert [(f.path, f.op) for f in query.filters] == [(("created",), "gte"), (("created",), "lt")]


@pytest.mark.parametrize(
    ("raw", "suggestion"),
    [
        ("feilds=id", "'fields'"),
        ("fileds=id", "'fields'"),
        ("includes=groups", "'include'"),
        ("srot=id", "'sort'"),
        ("limt=5", "'limit'"),
        ("cursr=x", "'cursor'"),
        ("filtre[name]=x", "'filter'"),
        ("counts=true", "'count'"),
        ("page=2", None),
        ("offset=10", None),
        ("Fields=id", "'fields'"),
        ("=x", None),
    ],
)
def test_unknown_parameter_is_400_with_suggestion(raw: str, suggestion: str | None) -> None:
    error = reject(raw)
    assert "unknown parameter" in error.detail
    if suggestion is None:
        assert "did you mean" not in error.detail
    else:
        assert error.detail.endswith(f"did you mean {suggestion}?")


@pytest.mark.parametrize(
    ("raw", "parameter"),
    [
        ("sort[x][y]=a", "sort[x][y]"),
        ("limit[]=1", "limit[]"),
        ("count[x]=maybe", "count[x]"),
        ("limit[x]=-1", "limit[x]"),
        ("sort[x]=a&sort[x]=b", "sort[x]"),
        ("sort[x]=a&sort[ x]=b", "sort[ x]"),
        ("include[groups]=users", "include[groups]"),
        ("filter=name", "filter"),
        ("fields[groups=a", "fields[groups"),
        ("fields[[groups]]=a", "fields[[groups]]"),
    ],
)
def test_misshapen_parameter_names(raw: str, parameter: str) -> None:
    assert parameter_of(reject(raw)) == parameter


# --- include -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("groups", (("groups",),)),
        ("groups.permissions", (("groups",), ("groups", "permissions"))),
        ("groups.permissions,groups", (("groups",), ("groups", "permissions"))),
        (
            "groups.users.groups, groups.permissions",
            (
                ("groups",),
                ("groups", "permissions"),
                ("groups", "users"),
                ("groups", "users", "groups"),
            ),
        ),
        ("users,permissions", (("permissions",), ("users",))),
        (" groups . permissions ,", (("groups",), ("groups", "permissions"))),
        ("groups,groups,groups", (("groups",),)),
    ],
)
def test_include_expands_parents_and_sorts(value: str, expected: tuple[tuple[str, ...]]) -> None:
    assert parse_include(value) == expected
    assert parse_query_string("include=" + value.replace(" ", "%20")).include == expected


@pytest.mark.parametrize(
    "value", ["", ",", "groups..x", ".groups", "groups.", "groups,.", "gro ups", "groups.1x", "a-b"]
)
def test_bad_include_paths(value: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_include(value)
    assert parameter_of(info.value) == "include"


# --- fields[path] ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("fields=name,id", (((), ("name", "id")),)),
        ("fields[groups]=name", ((("groups",), ("name",)),)),
        ("fields[groups.permissions]=name", ((("groups", "permissions"), ("name",)),)),
        ("fields[%20groups%20.%20users%20]=id", ((("groups", "users"), ("id",)),)),
        (
            "fields[groups]=id&fields=name&fields[groups.users]=name",
            (((), ("name",)), (("groups",), ("id",)), (("groups", "users"), ("name",))),
        ),
    ],
)
def test_fields_paths(raw: str, expected: tuple[object, ...]) -> None:
    assert parse_query_string(raw).fields == expected


@pytest.mark.parametrize(
    "raw",
    [
        "fields[]=a",
        "fields[%20]=a",
        "fields[groups][users]=a",
        "fields[groups..users]=a",
        "fields[.groups]=a",
        "fields[gr-oups]=a",
    ],
)
def test_bad_fields_paths(raw: str) -> None:
    key = raw.split("=")[0].replace("%20", " ")
    assert parameter_of(reject(raw)) == key


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("filter[name]=alice", FilterSpec(("name",), "eq", "alice", "filter[name]")),
        ("filter[name]=", FilterSpec(("name",), "eq", "", "filter[name]")),
        (
            "filter[created][gte]=2024-01-01T00:00:00Z",
            FilterSpec(("created",), "gte", "2024-01-01T00:00:00Z", "filter[created][gte]"),
        ),
        (
            "filter[groups.name]=admins",
            FilterSpec(("groups", "name"), "eq", "admins", "filter[groups.name]"),
        ),
        (
            "filter[groups.permissions.name][in]=a,b",
            FilterSpec(
                ("groups", "permissions", "name"),
                "in",
                "a,b",
                "filter[groups.permissions.name][in]",
            ),
        ),
        (
            "filter[%20name%20][%20contains%20]=a%20b",
            FilterSpec(("name",), "contains", "a b", "filter[ name ][ contains ]"),
        ),
        ("filter[name]=a%26b%3Dc", FilterSpec(("name",), "eq", "a&b=c", "filter[name]")),
        ("filter[name]=a+b", FilterSpec(("name",), "eq", "a b", "filter[name]")),
    ],
)
def test_filter_keys(raw: str, expected: FilterSpec) -> None:
    assert parse_query_string(raw).filters == (expected,)


@pytest.mark.parametrize(
    "op", ["eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith", "isnull"]
)
def test_every_operator_is_accepted(op: str) -> None:
    (spec,) = parse_query_string(f"filter[name][{op}]=x").filters
    assert spec.op == op


@pytest.mark.parametrize(
    ("raw", "suggestion"),
    [
        ("filter[name][eqq]=a", "'eq'"),
        ("filter[name][startwith]=a", "'startswith'"),
        ("filter[name][contain]=a", "'contains'"),
        ("filter[name][is_null]=true", "'isnull'"),
        ("filter[name][EQ]=a", None),
        ("filter[name][like]=a", None),
        ("filter[name][]=a", None),
    ],
)
def test_unknown_operator_with_suggestion(raw: str, suggestion: str | None) -> None:
    error = reject(raw)
    assert parameter_of(error) == raw.split("=")[0]
    assert "unknown operator" in error.detail
    if suggestion is None:
        assert "did you mean" not in error.detail
    else:
        assert error.detail.endswith(f"did you mean {suggestion}?")


@pytest.mark.parametrize(
    "raw",
    [
        "filter[]=a",
        "filter[%20]=a",
        "filter[name][eq][x]=a",
        "filter[groups..name]=a",
        "filter[.name]=a",
        "filter[name.]=a",
        "filter[na-me]=a",
    ],
)
def test_bad_filter_keys(raw: str) -> None:
    key = raw.split("=")[0].replace("%20", " ")
    assert parameter_of(reject(raw)) == key


# --- sort ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-created,name", (SortKey("created", True), SortKey("name", False))),
        ("name", (SortKey("name", False),)),
        ("+name", (SortKey("name", False),)),
        ("-id", (SortKey("id", True),)),
        (" - created , name ", (SortKey("created", True), SortKey("name", False))),
        ("name,name", (SortKey("name", False),)),
        ("-name,-name,id", (SortKey("name", True), SortKey("id", False))),
        ("name,,id,", (SortKey("name", False), SortKey("id", False))),
    ],
)
def test_sort_parsing(value: str, expected: tuple[SortKey, ...]) -> None:
    assert parse_sort(value) == expected


@pytest.mark.parametrize(
    "value", ["", " ", ",", "name,-name", "-name,name", "+name,-name", "-", "+", "--name", "1x"]
)
def test_bad_sort(value: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_sort(value)
    assert parameter_of(info.value) == "sort"


def test_sort_absent_is_none() -> None:
    assert parse_query_string("").sort is None


# --- limit, cursor, count --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        ("50", 50),
        ("500", 500),
        ("%2050%20", 50),
        ("+50", 50),  # '+' is a space in a query string
        ("007", 7),
        ("999999999", 999999999),
    ],
)
def test_limit_parsing(value: str, expected: int) -> None:
    # the range 1..max is the plan's business; the parser only reads the number
    assert parse_query_string(f"limit={value}").limit == expected


@pytest.mark.parametrize(
    "value",
    ["", "abc", "-1", "%2B5", "1.5", "1e3", "0x10", "5%20apples", "%D9%A3", "1000000000", "9" * 40],
)
def test_bad_limit(value: str) -> None:
    assert parameter_of(reject(f"limit={value}")) == "limit"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", Count.EXACT),
        ("TRUE", Count.EXACT),
        ("%20true%20", Count.EXACT),
        ("false", Count.NONE),
        ("estimated", Count.ESTIMATED),
    ],
)
def test_count_values(value: str, expected: Count) -> None:
    assert parse_query_string(f"count={value}").count == expected


@pytest.mark.parametrize("value", ["", "1", "0", "yes", "no", "exact", "truee"])
def test_bad_count(value: str) -> None:
    assert parameter_of(reject(f"count={value}")) == "count"


def test_cursor_is_kept_verbatim_but_must_not_be_empty() -> None:
    assert parse_query_string("cursor=abc.def").cursor == "abc.def"
    assert parameter_of(reject("cursor=")) == "cursor"
    assert parameter_of(reject("cursor=%20")) == "cursor"


# --- encodings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"fields=\xff",
        b"fields=id&filter[name]=\xc3",
        b"\xfe\xff=x",
        b"filter[name]=\xed\xa0\x80",  # an encoded surrogate is not UTF-8
        "fields=%ff",
        "filter[name]=%C3",
        "filter[name]=%ED%A0%80",
        "filter[name]=%00",
        "filter[name]=a%00b",
        "fields=id%00",
        "%00=a",
        "fi%00elds=a",
        b"filter[name]=\x00",
        "filter[na\x00me]=a",
    ],
)
def test_invalid_utf8_and_nul_are_invalid_parameter(raw: bytes | str) -> None:
    reject(raw)


def test_bytes_and_text_agree() -> None:
    text = "fields=name&include=groups&filter[name]=%C3%A9l%C3%A8ve&sort=-created&limit=3"
    assert parse_query_string(text) == parse_query_string(text.encode())
    assert parse_query_string(text).filters[0].raw == "élève"


def test_full_query() -> None:
    raw = (
        "sort=-created,name&fields=id,name&include=groups.permissions&fields[groups]=name"
        "&filter[groups.name]=admins&limit=2&count=true&cursor=abc"
    )
    assert parse_query_string(raw) == RawQuery(
        fields=(((), ("id", "name")), (("groups",), ("name",))),
        include=(("groups",), ("groups", "permissions")),
        filters=(FilterSpec(("groups", "name"), "eq", "admins", "filter[groups.name]"),),
        sort=(SortKey("created", True), SortKey("name", False)),
        limit=2,
        cursor="abc",
        count=Count.EXACT,
    )


def test_empty_query_is_all_defaults() -> None:
    assert parse_query_string("") == RawQuery()
    assert parse_query_string(b"") == RawQuery()
    assert parse_query_string("&&") == RawQuery()


# --- item endpoints ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ["limit=5", "sort=name", "filter[name]=a", "filter[created][gte]=x", "cursor=x", "count=true"],
)
def test_item_endpoint_rejects_list_parameters(raw: str) -> None:
    error = reject(raw, endpoint=Endpoint.ITEM)
    assert parameter_of(error) == raw.split("=")[0]
    assert "not accepted here" in error.detail
    parse_query_string(raw, endpoint=Endpoint.LIST)  # the same text is fine on a list


def test_item_endpoint_takes_shape_parameters() -> None:
    raw = "fields=name&include=groups&fields[groups]=id"
    assert parse_query_string(raw, endpoint=Endpoint.ITEM) == parse_query_string(raw)


def test_item_endpoint_still_suggests_for_misspellings() -> None:
    assert reject("feilds=id", endpoint=Endpoint.ITEM).detail.endswith("did you mean 'fields'?")


# --- anything at all -----------------------------------------------------------------------

_PIECES = st.sampled_from(
    [
        "fields",
        "fields[groups]",
        "fields[groups.users]",
        "include",
        "filter[name]",
        "filter[created][gte]",
        "filter[groups.name][in]",
        "filter[",
        "]",
        "[",
        "sort",
        "limit",
        "cursor",
        "count",
        "=",
        "&",
        ",",
        ".",
        "-",
        "+",
        "%",
        "%00",
        "%ff",
        "%20",
        "%5B",
        "%0A",
        "id",
        "name",
        "groups",
    ]
)
_QUERYISH = st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=16).map("".join)


def _parses_or_is_invalid(raw: bytes | str, endpoint: Endpoint) -> None:
    try:
        result: RawQuery | InvalidParameter = parse_query_string(raw, endpoint=endpoint)
    except InvalidParameter as error:
        result = error
    if isinstance(result, InvalidParameter):
        assert result.status == 400
        assert result.errors
    else:
        assert isinstance(result, RawQuery)
        hash(result)


@given(raw=st.one_of(st.text(), st.binary(), _QUERYISH), item=st.booleans())
def test_any_input_parses_or_is_invalid_parameter(raw: bytes | str, item: bool) -> None:
    _parses_or_is_invalid(raw, Endpoint.ITEM if item else Endpoint.LIST)


@given(raw=_QUERYISH.map(lambda text: text.encode("utf-8", "surrogatepass")))
def test_any_encoded_input_parses_or_is_invalid_parameter(raw: bytes) -> None:
    _parses_or_is_invalid(raw, Endpoint.LIST)


@pytest.mark.parametrize(
    "raw",
    [
        "include=groups&fields[groups]=name&fields[%20groups]=id",
        "include=groups.users&fields[groups.users]=name&fields[groups.%20users]=id",
    ],
)
def test_fields_path_twice_in_two_spellings_is_an_error(raw: str) -> None:
    reject(raw)


def test_bare_filter_is_not_told_to_use_itself() -> None:
    assert "did you mean 'filter'" not in reject("filter=x").detail
