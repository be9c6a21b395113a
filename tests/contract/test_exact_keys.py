"""Every returned object holds exactly what was asked for: the attributes, one key per included
relationship, nothing else; private attributes only with a token; write-only and hidden
columns never (SPEC: Reading "Exactness", Your own models "Attributes", Auth)."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

import pytest

from service.schema import Registry, Resource
from tests.conftest import recording
from tests.contract.conftest import ReadSide
from tests.contract.reference import text_of
from tests.contract.schemas import SCHEMAS, Schema
from tests.contract.shapes import (
    Shape,
    forbidden_columns,
    ids,
    include_shapes,
    resolve,
    resource_cases,
)
from tests.contract.wire import BEARER, problem

Item = dict[str, Any]


def visible(resource: Resource, *, token: bool) -> set[str]:
    return set(resource.visible_attributes(private=token))


def objects_at(data: list[Item], path: str) -> list[Item]:
    """Every object embedded at a dotted path (to-one nulls left out)."""
    level = data
    for name in path.split("."):
        nested: list[Item] = []
        for item in level:
            value = item[name]
            nested.extend(value if isinstance(value, list) else [value] if value else [])
        level = nested
    return level


def check_level(
    registry: Registry, resource: str, shape: Shape, path: str, items: list[Item], fields: set[str]
) -> None:
    """Each object at `path` holds `fields` plus its included relationships, of the right kind."""
    prefix = f"{path}." if path else ""
    children = [p for p in shape if p.startswith(prefix) and "." not in p[len(prefix) :]]
    names = {p[len(prefix) :] for p in children}
    for item in items:
        assert set(item) == fields | names, (path, item)
        for child in children:
            value = item[child[len(prefix) :]]
            if resolve(registry, resource, child).many:
                assert isinstance(value, list), (child, value)
            else:
                assert value is None or isinstance(value, dict), (child, value)


@pytest.mark.parametrize("token", [False, True], ids=["anonymous", "token"])
@pytest.mark.parametrize(("schema", "resource"), resource_cases(), ids=ids)
async def test_the_default_selection_is_every_attribute_the_caller_may_see(
    reader: ReadSide, schema: Schema, resource: str, token: bool
) -> None:
    registry, reference = reader.registry, reader.reference
    served = registry[resource]
    headers = BEARER if token else {}
    shape = tuple(join.name for join in served.relationships)
    params = {"limit": "500"} | ({"include": ",".join(shape)} if shape else {})
    response = await reader.client.get(f"/{resource}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == len(reference.rows[resource])
    check_level(registry, resource, shape, "", data, visible(served, token=token))
    for path in shape:
        target = resolve(registry, resource, path).target
        check_level(
            registry, resource, shape, path, objects_at(data, path), visible(target, token=token)
        )

    key = quote(reference.key_text(resource, reference.keys(resource)[0]), safe="")
    item = await reader.client.get(f"/{resource}/{key}", headers=headers)
    assert item.status_code == 200, item.text
    assert set(item.json()["data"]) == visible(served, token=token)
    for join in served.relationships:
        if join.many:
            related = await reader.client.get(f"/{resource}/{key}/{join.name}", headers=headers)
            assert related.status_code == 200, related.text
            for child in related.json()["data"]:
                assert set(child) == visible(join.target, token=token)


SUBSET_CASES = [
    (schema, resource, shape)
    for schema, resource in resource_cases()
    for shape in include_shapes(schema.registry, resource)
]


@pytest.mark.parametrize(("schema", "resource", "shape"), SUBSET_CASES, ids=ids)
async def test_any_fields_subset_at_any_level_is_returned_exactly(
    reader: ReadSide, schema: Schema, resource: str, shape: Shape
) -> None:
    registry = reader.registry
    chooser = random.Random(f"{schema}-{resource}-{shape}")
    levels = {"": registry[resource]} | {p: resolve(registry, resource, p).target for p in shape}
    for round_ in range(4):
        fields: dict[str, set[str]] = {}
        params = {"limit": "500"} | ({"include": ",".join(shape)} if shape else {})
        for path, served in levels.items():
            names = [a.name for a in served.attributes]
            size = 1 if round_ == 0 else chooser.randint(1, len(names))
            fields[path] = set(chooser.sample(names, size))
            spelled = list(fields[path]) + chooser.sample(sorted(fields[path]), 1)  # a repeat
            params["fields" if not path else f"fields[{path}]"] = " , ".join(spelled)
        response = await reader.client.get(f"/{resource}", params=params, headers=BEARER)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data
        for path in levels:
            items = data if not path else objects_at(data, path)
            assert items, f"the seed embeds something at {path!r}"
            check_level(registry, resource, shape, path, items, fields[path])


PRIVATE = [
    (schema, resource.name, attribute.name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for attribute in resource.attributes
    if attribute.private
]


def naming(registry: Registry, resource: str, name: str, value: str) -> list[dict[str, str]]:
    """Every way to name an attribute of `resource`: directly, and from each relationship that
    reaches it (by `fields[path]`, a filter and a sort)."""
    ways = [{"fields": name}, {f"filter[{name}]": value}, {"sort": name}, {"sort": f"-{name}"}]
    for source in registry.values():
        for join in source.relationships:
            if join.target.name == resource:
                ways.append(
                    {"include": join.name, f"fields[{join.name}]": name, "_on": source.name}
                )
                ways.append({f"filter[{join.name}.{name}]": value, "_on": source.name})
    return ways


@pytest.mark.parametrize(("schema", "resource", "attribute"), PRIVATE, ids=ids)
async def test_a_private_attribute_needs_a_token_wherever_it_is_named(
    reader: ReadSide, schema: Schema, resource: str, attribute: str
) -> None:
    reference = reader.reference
    served = reader.registry[resource]
    stored = reference.values(resource, attribute)[0]
    value = text_of(served.attribute(attribute), stored)  # type: ignore[arg-type]
    for way in naming(reader.registry, resource, attribute, value):
        on = way.pop("_on", resource)
        with recording(reader.app) as log:
            refused = await reader.client.get(f"/{on}", params=way)
        problem(refused, 403)
        assert len(log) == 0, (way, log.statements)
        allowed = await reader.client.get(f"/{on}", params=way, headers=BEARER)
        assert allowed.status_code == 200, (way, allowed.text)
    with_token = await reader.client.get(
        f"/{resource}", params={"fields": attribute, "limit": "500"}, headers=BEARER
    )
    assert [set(item) for item in with_token.json()["data"]] == [{attribute}] * len(
        reference.rows[resource]
    )


FORBIDDEN = [
    (schema, resource.name, name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for name in forbidden_columns(resource)
]


def test_both_schemas_have_private_and_forbidden_columns() -> None:
    assert {schema.name for schema, *_ in PRIVATE} == {"auth", "shop"}
    assert {schema.name for schema, *_ in FORBIDDEN} == {"auth", "shop"}


@pytest.mark.parametrize("token", [False, True], ids=["anonymous", "token"])
@pytest.mark.parametrize(("schema", "resource", "column"), FORBIDDEN, ids=ids)
async def test_write_only_and_hidden_columns_are_unknown_names(
    reader: ReadSide, schema: Schema, resource: str, column: str, token: bool
) -> None:
    headers = BEARER if token else {}
    for way in naming(reader.registry, resource, column, "1"):
        on = way.pop("_on", resource)
        with recording(reader.app) as log:
            response = await reader.client.get(f"/{on}", params=way, headers=headers)
        document = problem(response, 400)
        assert len(log) == 0, (way, log.statements)
        assert column in document["detail"], document
