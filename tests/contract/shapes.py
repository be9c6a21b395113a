"""Include shapes and per-level selections, derived from a registry."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column

from service.schema import Attribute, Join, Registry, Resource
from tests.contract.schemas import SCHEMAS, Schema

Shape = tuple[str, ...]  # include paths, parents first: ("tags", "tags.products")


def include_shapes(registry: Registry, resource: str) -> list[Shape]:
    """No include, each relationship, and each nested pair (with its implied parent)."""
    shapes: list[Shape] = [()]
    for join in registry[resource].relationships:
        shapes.append((join.name,))
        for nested in join.target.relationships:
            shapes.append((join.name, f"{join.name}.{nested.name}"))
    return shapes


def resolve(registry: Registry, resource: str, path: str) -> Join:
    """The join a dotted include path ends on."""
    served = registry[resource]
    join: Join | None = None
    for name in path.split("."):
        join = served.relationship(name)
        assert join is not None, path
        served = join.target
    assert join is not None
    return join


def one_public_attribute(resource: Resource) -> Attribute:
    """A public attribute other than the key (the key when there is none)."""
    return next(
        (a for a in resource.attributes if not a.private and a is not resource.key), resource.key
    )


def sortable(resource: Resource, *, private: bool) -> list[Attribute]:
    return [a for a in resource.attributes if a.codec.sortable and (private or not a.private)]


def forbidden_columns(resource: Resource) -> list[str]:
    """Columns of the table that are not attributes: write-only, hidden, or of no served type."""
    served = {a.column.name for a in resource.attributes}
    return [c.name for c in resource.table.columns if c.name not in served]


def qualified(column: Column[Any]) -> str:
    """`table.column`, as a statement names it."""
    return f"{column.table.name}.{column.name}"


def resource_cases() -> list[tuple[Schema, str]]:
    return [(schema, name) for schema in SCHEMAS for name in schema.registry]


def relationship_cases() -> list[tuple[Schema, str, str]]:
    return [
        (schema, resource.name, join.name)
        for schema in SCHEMAS
        for resource in schema.registry.values()
        for join in resource.relationships
    ]


def ids(value: object) -> str:
    if isinstance(value, tuple):
        return "+".join(value) or "none"
    return str(value)
