"""Every operator of every filterable attribute, and relationship paths of every kind, against
the reference; what a type does not allow is 400 before any SQL (SPEC: Reading `filter`)."""

from __future__ import annotations

from typing import Any

import pytest

from service.schema import Attribute, Registry
from tests.conftest import recording
from tests.contract.conftest import ReadSide
from tests.contract.reference import Condition, Reference, text_of
from tests.contract.schemas import SCHEMAS, Schema
from tests.contract.shapes import ids
from tests.contract.wire import BEARER, problem, walk

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith", "isnull")
UNPARSABLE = {
    "integer": "12x",
    "number": "one",
    "decimal": "1.2.3",
    "date": "2024-02-30",
    "timestamp": "noon-ish",
    "uuid": "123e4567-e89b",
    "boolean": "yes",
    "enum": "no-such-value",
    "string": "a\x00b",
}

ATTRIBUTES = [
    (schema, resource.name, attribute.name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for attribute in resource.attributes
]
ALLOWED = [
    (schema, resource, name, op)
    for schema, resource, name in ATTRIBUTES
    for op in OPERATORS
    if op in schema.registry[resource].attribute(name).codec.operators  # type: ignore[union-attr]
]


def attribute_of(registry: Registry, resource: str, name: str) -> Attribute:
    attribute = registry[resource].attribute(name)
    assert attribute is not None
    return attribute


def usable(attribute: Attribute, values: list[Any]) -> list[Any]:
    """Stored values a filter can spell on its own: no commas (`in` splits on them), not empty."""
    if attribute.codec.name != "string":
        return values
    return [v for v in values if v and "," not in v and v == v.strip()]


def recase(text: str) -> str:
    """Upper-cased when that folds back to the same text (so a match must ignore case)."""
    return text.upper() if text.upper().lower() == text.lower() else text


def fragment(texts: list[str], *, prefix: bool) -> str:
    """A piece of a stored text, holding a non-ASCII letter with a case when one is stored
    (a case-insensitive match must fold it), else three characters of the longest text."""
    for text in sorted(texts, key=lambda t: (-len(t), t)):
        for index, char in enumerate(text):
            if not char.isascii() and char.upper() != char and recase(char) != char:
                return text[: index + 1] if prefix else text[max(0, index - 1) : index + 2]
    longest = max(texts, key=lambda t: (len(t), t))
    return longest[:3] if prefix else longest[1:4]


def conditions_for(
    reference: Reference, resource: str, attribute: Attribute, op: str
) -> list[tuple[Condition, str]]:
    """(condition, raw query text) pairs for one operator, with values from the stored data."""
    values = usable(attribute, reference.values(resource, attribute.name))
    path = (attribute.name,)
    if op == "isnull":
        return [((path, op, True), "true"), ((path, op, False), "false")]
    assert values, f"{resource}.{attribute.name} holds no usable value"
    middle = values[len(values) // 2]
    if op == "in":
        chosen = list(dict.fromkeys([values[0], middle, values[-1]]))
        raw = ",".join(text_of(attribute, v) for v in chosen)
        return [((path, op, set(chosen)), raw)]
    if op in ("contains", "startswith"):
        part = recase(fragment([str(v) for v in values], prefix=op == "startswith"))
        return [((path, op, part), part)]
    return [((path, op, middle), text_of(attribute, middle))]


def filter_name(path: tuple[str, ...], op: str) -> str:
    dotted = ".".join(path)
    return f"filter[{dotted}]" if op == "eq" else f"filter[{dotted}][{op}]"


async def check_filter(
    reader: ReadSide, resource: str, condition: Condition, raw: str, *, limit: int = 500
) -> list[str]:
    served = reader.registry[resource]
    path, op, _ = condition
    params = {"fields": served.key.name, filter_name(path, op): raw, "limit": str(limit)}
    seen = await walk(
        reader.client, f"/{resource}", params, key=served.key.name, limit=limit, headers=BEARER
    )
    expected = reader.reference.texts(resource, reader.reference.select(resource, [condition]))
    assert seen == expected, (params, condition)
    return expected


@pytest.mark.parametrize(("schema", "resource", "attribute", "op"), ALLOWED, ids=ids)
async def test_each_operator_keeps_what_the_reference_keeps(
    reader: ReadSide, schema: Schema, resource: str, attribute: str, op: str
) -> None:
    served = attribute_of(reader.registry, resource, attribute)
    for condition, raw in conditions_for(reader.reference, resource, served, op):
        expected = await check_filter(reader, resource, condition, raw)
        if op not in ("isnull", "ne"):
            assert expected, f"the value {raw!r} comes from the data, so something matches"


REFUSED = [
    (schema, resource, name, op)
    for schema, resource, name in ATTRIBUTES
    for op in OPERATORS
    if op not in schema.registry[resource].attribute(name).codec.operators  # type: ignore[union-attr]
]


@pytest.mark.parametrize(("schema", "resource", "attribute", "op"), REFUSED, ids=ids)
async def test_an_operator_the_type_does_not_take_is_400_without_sql(
    reader: ReadSide, schema: Schema, resource: str, attribute: str, op: str
) -> None:
    served = attribute_of(reader.registry, resource, attribute)
    raw = "true" if op == "isnull" else "1"
    if op != "isnull" and served.codec.sortable:  # a value of the type, so only `op` is wrong
        raw = text_of(served, reader.reference.values(resource, attribute)[0])
    with recording(reader.app) as log:
        response = await reader.client.get(
            f"/{resource}", params={filter_name((attribute,), op): raw}, headers=BEARER
        )
    document = problem(response, 400)
    assert document["errors"][0]["parameter"].startswith(f"filter[{attribute}]"), document
    assert len(log) == 0, log.statements


PARSED = [
    (schema, resource, name)
    for schema, resource, name in ATTRIBUTES
    if schema.registry[resource].attribute(name).codec.operators  # type: ignore[union-attr]
]


@pytest.mark.parametrize(("schema", "resource", "attribute"), PARSED, ids=ids)
async def test_an_unparsable_value_is_400_without_sql(
    reader: ReadSide, schema: Schema, resource: str, attribute: str
) -> None:
    served = attribute_of(reader.registry, resource, attribute)
    bad = UNPARSABLE[served.codec.name]
    for op, raw in (("eq", bad), ("in", f"{bad},{bad}"), ("isnull", "maybe")):
        if op not in served.codec.operators:
            continue
        with recording(reader.app) as log:
            response = await reader.client.get(
                f"/{resource}", params={filter_name((attribute,), op): raw}, headers=BEARER
            )
        document = problem(response, 400)
        assert document["errors"][0]["parameter"].startswith(f"filter[{attribute}]"), document
        assert len(log) == 0, log.statements


RELATIONSHIPS = [
    (schema, resource.name, join.name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for join in resource.relationships
]


def path_conditions(
    reference: Reference, registry: Registry, resource: str, relationship: str
) -> list[tuple[Condition, str, bool]]:
    """(condition, raw, must match something) for filters across one relationship: on the
    target's key, on another attribute (equal, unequal, NULL), and one more level down."""
    join = registry[resource].relationship(relationship)
    assert join is not None
    target = join.target
    linked = sorted(
        {k for keys in reference.links[(resource, relationship)].values() for k in keys}
    )
    assert linked, f"the seed links some {resource} to {target.name} through {relationship}"
    cases: list[tuple[Condition, str, bool]] = []
    path: tuple[str, ...]
    picked = [linked[0], linked[-1]]
    raw = ",".join(reference.key_text(target.name, k) for k in picked)
    cases.append((((relationship, target.key.name), "in", set(picked)), raw, True))
    for attribute in target.attributes:
        if attribute is target.key or attribute.private or not attribute.codec.operators:
            continue
        values = usable(attribute, [reference.rows[target.name][k][attribute.name] for k in linked])
        values = [v for v in values if v is not None]
        if values:
            path = (relationship, attribute.name)
            text = text_of(attribute, values[0])
            cases.append(((path, "eq", values[0]), text, True))
            cases.append(((path, "ne", values[0]), text, False))
            if attribute.nullable:
                cases.append(((path, "isnull", True), "true", False))
            break
    for nested in target.relationships:
        deeper = sorted(
            {k for keys in reference.links[(target.name, nested.name)].values() for k in keys}
        )
        if deeper:
            key = deeper[len(deeper) // 2]
            path = (relationship, nested.name, nested.target.key.name)
            raw = reference.key_text(nested.target.name, key)
            cases.append(((path, "eq", key), raw, True))
    return cases


@pytest.mark.parametrize(("schema", "resource", "relationship"), RELATIONSHIPS, ids=ids)
async def test_relationship_paths_filter_by_existence(
    reader: ReadSide, schema: Schema, resource: str, relationship: str
) -> None:
    cases = path_conditions(reader.reference, reader.registry, resource, relationship)
    assert len(cases) >= 3
    for condition, raw, must_match in cases:
        expected = await check_filter(reader, resource, condition, raw, limit=7)
        assert expected or not must_match, condition
