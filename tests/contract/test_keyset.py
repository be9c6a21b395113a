"""Keyset walks by `links.next` on every sortable attribute return every row exactly once, in
the order the reference computes (SPEC: Reading `sort`, `cursor`; Your own models "Types")."""

from __future__ import annotations

import pytest

from service.schema import Attribute, Resource
from tests.conftest import recording
from tests.contract.conftest import ReadSide
from tests.contract.schemas import SCHEMAS, Schema
from tests.contract.shapes import ids, sortable
from tests.contract.wire import BEARER, problem, walk

SORTS = [
    (schema, resource.name, ("-" if descending else "") + attribute.name, limit)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for attribute in sortable(resource, private=True)
    for descending in (False, True)
    for limit in (1, 7)
]


def pair_sorts(resource: Resource) -> list[str]:
    """Two-key sorts: an attribute prone to ties first (a boolean or an enum, else a nullable
    one: the second key decides among equals), then one of two others, descending."""
    candidates = sortable(resource, private=True)
    if len(candidates) < 2:
        return []
    first = min(
        candidates,
        key=lambda a: (
            a.column.primary_key,
            a.codec.name not in ("boolean", "enum"),
            a.nullable is False,
        ),
    )
    return [f"{first.name},-{other.name}" for other in candidates if other is not first][:2]


PAIRS = [
    (schema, resource.name, sort, limit)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for sort in pair_sorts(resource)
    for limit in (1, 7)
]


def parse_sort(sort: str) -> list[tuple[str, bool]]:
    return [(key.lstrip("-"), key.startswith("-")) for key in sort.split(",")]


async def check_walk(reader: ReadSide, resource: str, sort: str, limit: int) -> None:
    served = reader.registry[resource]
    keys = parse_sort(sort)
    private = any(served.attribute(name).private for name, _ in keys)  # type: ignore[union-attr]
    params = {"fields": served.key.name, "sort": sort, "limit": str(limit)}
    seen = await walk(
        reader.client,
        f"/{resource}",
        params,
        key=served.key.name,
        limit=limit,
        headers=BEARER if private else None,
    )
    expected = reader.reference.texts(resource, reader.reference.select(resource, sort=keys))
    assert len(seen) == len(set(seen)), "a row came twice"
    assert seen == expected


@pytest.mark.parametrize(("schema", "resource", "sort", "limit"), SORTS, ids=ids)
async def test_walking_a_sort_returns_every_row_once_in_order(
    reader: ReadSide, schema: Schema, resource: str, sort: str, limit: int
) -> None:
    await check_walk(reader, resource, sort, limit)


@pytest.mark.parametrize(("schema", "resource", "sort", "limit"), PAIRS, ids=ids)
async def test_walking_a_two_key_sort_returns_every_row_once_in_order(
    reader: ReadSide, schema: Schema, resource: str, sort: str, limit: int
) -> None:
    await check_walk(reader, resource, sort, limit)


def test_the_sorts_cover_ties_nulls_and_every_sortable_type() -> None:
    """Both schemas together sort every served type but JSON, and nullable columns."""
    attributes: list[Attribute] = [
        a for s in SCHEMAS for r in s.registry.values() for a in sortable(r, private=True)
    ]
    kinds = {a.codec.name for a in attributes}
    assert kinds >= {
        "integer",
        "string",
        "boolean",
        "number",
        "decimal",
        "date",
        "timestamp",
        "uuid",
        "enum",
    }
    assert any(a.nullable for a in attributes)


UNSORTABLE = [
    (schema, resource.name, attribute.name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for attribute in resource.attributes
    if not attribute.codec.sortable
]


@pytest.mark.parametrize(("schema", "resource", "attribute"), UNSORTABLE, ids=ids)
async def test_sorting_by_an_unsortable_attribute_is_400_without_sql(
    reader: ReadSide, schema: Schema, resource: str, attribute: str
) -> None:
    for sort in (attribute, f"-{attribute}", f"{reader.registry[resource].key.name},{attribute}"):
        with recording(reader.app) as log:
            response = await reader.client.get(f"/{resource}", params={"sort": sort})
        document = problem(response, 400)
        assert document["errors"][0]["parameter"] == "sort", document
        assert len(log) == 0, log.statements
