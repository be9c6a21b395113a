"""Request bodies to show in the OpenAPI document: values a client could send as they are,
derived from each attribute's type (the docs page prefills its forms with them)."""

from __future__ import annotations

from typing import Any

from service.schema import Attribute, Resource

_BY_CODEC: dict[str, Any] = {
    "integer": 1,
    "number": 1.5,
    "decimal": 9.99,
    "boolean": True,
    "date": "2024-05-01",
    "timestamp": "2024-05-01T12:00:00Z",
    "uuid": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "json": {"color": "red"},
}
PASSWORD = "correct horse battery staple"


def example_value(attribute: Attribute, n: int = 1) -> Any:
    """A value of the attribute's type; strings differ by `n`, so a batch of examples never
    clashes on a unique column."""
    codec = attribute.codec
    if codec.name == "enum":
        return codec.schema()["enum"][0]
    if codec.name != "string":
        return _BY_CODEC.get(codec.name)
    if attribute.column.info.get("format") == "email" or "email" in attribute.name:
        return f"ann{n}@example.com"
    limit = codec.schema().get("maxLength")
    text = f"{attribute.name.replace('_', '-')}-{n}"
    return text[-limit:] if limit else text


def create_example(resource: Resource, n: int = 1) -> dict[str, Any]:
    """Every writable attribute (a password for a write-only one), the required foreign keys
    (pointing at row 1 of their target), and each id list empty."""
    body: dict[str, Any] = {}
    for attribute in (*resource.attributes, *resource.secrets):
        if not attribute.writable or (attribute.references and not attribute.required):
            continue
        secret = attribute in resource.secrets
        body[attribute.name] = PASSWORD if secret else example_value(attribute, n)
    for join in resource.id_lists:
        body[join.ids_field or join.name] = []
    return body


def update_example(resource: Resource) -> dict[str, Any]:
    """One attribute, preferably one that many rows may share (not unique, not a foreign
    key)."""
    writable = [a for a in resource.attributes if a.writable and a.references is None]
    shared = [a for a in writable if not a.unique]
    for attribute in shared or writable:
        return {attribute.name: example_value(attribute, 4)}
    return {}
