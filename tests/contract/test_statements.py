"""1 + k statements for every include shape of every resource, each naming only the requested
columns and the keys needed to join (SPEC: Reading, "The SQL is part of the contract")."""

from __future__ import annotations

import itertools
from urllib.parse import quote

import pytest

from service.schema import Registry
from tests.conftest import recording
from tests.contract.conftest import ReadSide
from tests.contract.schemas import SCHEMAS, Schema
from tests.contract.shapes import (
    Shape,
    forbidden_columns,
    ids,
    include_shapes,
    one_public_attribute,
    qualified,
    resolve,
    resource_cases,
)
from tests.contract.wire import named_columns, selected_columns, server_timing_queries

SHAPES = [
    (schema, resource, shape)
    for schema, resource in resource_cases()
    for shape in include_shapes(schema.registry, resource)
]


def level_params(registry: Registry, resource: str, shape: Shape) -> dict[str, str]:
    """`fields` (and `fields[path]`) naming one public non-key attribute at every level."""
    params = {"fields": one_public_attribute(registry[resource]).name}
    for path in shape:
        target = resolve(registry, resource, path).target
        params[f"fields[{path}]"] = one_public_attribute(target).name
    if shape:
        params["include"] = ",".join(shape)
    return params


def expected_levels(
    registry: Registry, resource: str, shape: Shape, params: dict[str, str]
) -> list[tuple[set[str], set[str]]]:
    """Per level: (the columns asked for, those plus the keys that level may need to join)."""
    levels: list[tuple[set[str], set[str]]] = []
    for path in ("", *shape):
        served = registry[resource] if not path else resolve(registry, resource, path).target
        field = params["fields" if not path else f"fields[{path}]"]
        attribute = served.attribute(field)
        assert attribute is not None
        wanted = {qualified(attribute.column)}
        keys = {qualified(served.key.column)}
        if path:
            keys.add(qualified(resolve(registry, resource, path).child_key))
        prefix = f"{path}." if path else ""
        for child in shape:
            if child.startswith(prefix) and "." not in child[len(prefix) :]:
                keys.add(qualified(resolve(registry, resource, child).parent_key))
        levels.append((wanted, wanted | keys))
    return levels


def assert_levels_match(statements: list[str], levels: list[tuple[set[str], set[str]]]) -> None:
    """Each statement is one level: every column asked for, nothing but keys besides."""
    selected = [selected_columns(s) for s in statements]
    for order in itertools.permutations(range(len(levels))):
        if all(
            levels[i][0] <= columns <= levels[i][1]
            for i, columns in zip(order, selected, strict=True)
        ):
            return
    raise AssertionError(f"selected {selected}; levels allow {levels}")


@pytest.mark.parametrize("limit", [1, 50, 500])
@pytest.mark.parametrize(("schema", "resource", "shape"), SHAPES, ids=ids)
async def test_a_list_is_one_statement_per_level_naming_only_what_it_needs(
    reader: ReadSide, schema: Schema, resource: str, shape: Shape, limit: int
) -> None:
    registry = reader.registry
    params = level_params(registry, resource, shape) | {"limit": str(limit)}
    with recording(reader.app) as log:
        response = await reader.client.get(f"/{resource}", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["data"], "the seed fills the first page"
    expected = 1 + len(shape)
    assert len(log.selects()) == len(log) == expected, log.statements
    assert server_timing_queries(response) == expected
    assert_levels_match(log.statements, expected_levels(registry, resource, shape, params))


@pytest.mark.parametrize(("schema", "resource", "shape"), SHAPES, ids=ids)
async def test_default_fields_never_name_private_write_only_or_hidden_columns(
    reader: ReadSide, schema: Schema, resource: str, shape: Shape
) -> None:
    registry = reader.registry
    params = {"include": ",".join(shape)} if shape else {}
    with recording(reader.app) as log:
        response = await reader.client.get(f"/{resource}", params=params)
    assert response.status_code == 200, response.text
    assert len(log) == 1 + len(shape)
    levels = [registry[resource]] + [resolve(registry, resource, p).target for p in shape]
    never = {
        f"{served.table.name}.{name}"
        for served in levels
        for name in [
            *forbidden_columns(served),
            *(a.column.name for a in served.attributes if a.private),
        ]
    }
    for statement in log.statements:
        assert not named_columns(statement) & never, statement


@pytest.mark.parametrize(("schema", "resource"), resource_cases(), ids=ids)
async def test_count_true_adds_one_statement_and_counts_every_row(
    reader: ReadSide, schema: Schema, resource: str
) -> None:
    shape = include_shapes(reader.registry, resource)[-1]
    params = {"count": "true", "limit": "1"} | ({"include": ",".join(shape)} if shape else {})
    with recording(reader.app) as log:
        response = await reader.client.get(f"/{resource}", params=params)
    assert response.status_code == 200, response.text
    assert len(log) == 2 + len(shape), log.statements
    assert response.json()["meta"]["total"] == len(reader.reference.rows[resource])


TO_MANY = [
    (schema, resource, join.name)
    for schema, resource in resource_cases()
    for join in schema.registry[resource].relationships
    if join.many
]


@pytest.mark.parametrize(("schema", "resource", "relationship"), TO_MANY, ids=ids)
async def test_top_n_per_parent_and_counts_keep_the_statement_count(
    reader: ReadSide, schema: Schema, resource: str, relationship: str
) -> None:
    registry, reference = reader.registry, reader.reference
    join = resolve(registry, resource, relationship)
    target = join.target
    attribute = next(a for a in reversed(target.attributes) if a.codec.sortable and not a.private)
    params = {
        "fields": registry[resource].key.name,
        "include": relationship,
        f"fields[{relationship}]": target.key.name,
        f"sort[{relationship}]": f"-{attribute.name}",
        f"limit[{relationship}]": "2",
        f"count[{relationship}]": "true",
        "limit": "500",
    }
    with recording(reader.app) as log:
        response = await reader.client.get(f"/{resource}", params=params)
    assert response.status_code == 200, response.text
    assert len(log) == 2, log.statements
    for item in response.json()["data"]:
        parent = next(
            k
            for k in reference.keys(resource)
            if reference.key_text(resource, k) == str(item[registry[resource].key.name])
        )
        related = reference.related(resource, relationship, parent)
        top = reference.ordered(target.name, related, [(attribute.name, True)])[:2]
        assert [str(o[target.key.name]) for o in item[relationship]] == reference.texts(
            target.name, top
        )
        assert item[f"{relationship}_count"] == len(related)


@pytest.mark.parametrize(("schema", "resource", "shape"), SHAPES, ids=ids)
async def test_an_item_runs_at_most_one_statement_more_than_its_list(
    reader: ReadSide, schema: Schema, resource: str, shape: Shape
) -> None:
    reference = reader.reference
    key = quote(reference.key_text(resource, reference.keys(resource)[0]), safe="")
    params = level_params(reader.registry, resource, shape)
    with recording(reader.app) as log:
        response = await reader.client.get(f"/{resource}/{key}", params=params)
    assert response.status_code == 200, response.text
    assert 1 + len(shape) <= len(log) <= 2 + len(shape), log.statements
    assert server_timing_queries(response) == len(log)


SUB_COLLECTIONS = [
    (schema, resource, (join.name, *shape))
    for schema, resource in resource_cases()
    for join in schema.registry[resource].relationships
    if join.many
    for shape in include_shapes(schema.registry, join.target.name)
    if len(shape) <= 1
]


@pytest.mark.parametrize(("schema", "resource", "shape"), SUB_COLLECTIONS, ids=ids)
async def test_a_sub_collection_runs_at_most_one_statement_more_than_a_list(
    reader: ReadSide, schema: Schema, resource: str, shape: Shape
) -> None:
    relationship, *included = shape
    reference = reader.reference
    links = reference.links[(resource, relationship)]
    parent = max(links, key=lambda k: (len(links[k]), str(k)))  # the fullest list
    key = quote(reference.key_text(resource, parent), safe="")
    target = reader.registry[resource].relationship(relationship)
    assert target is not None
    params = level_params(reader.registry, target.target.name, tuple(included))
    with recording(reader.app) as log:
        response = await reader.client.get(f"/{resource}/{key}/{relationship}", params=params)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == len(links[parent])
    assert 1 + len(included) <= len(log) <= 2 + len(included), log.statements


def test_the_schemas_cover_every_relationship_kind() -> None:
    """The shapes above cover to-one, one-to-many and many-to-many links."""
    kinds = {join.kind for s in SCHEMAS for r in s.registry.values() for join in r.relationships}
    assert len(kinds) == 3, kinds
