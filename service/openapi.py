"""The OpenAPI description of every route, derived from the registry (no FastAPI here)."""

from __future__ import annotations

from typing import Any

from service.query.params import OPERATORS, Path
from service.resources import RESOURCES, AttrType, Resource
from service.settings import Settings

Schema = dict[str, Any]

_TYPES: dict[AttrType, Schema] = {
    AttrType.INTEGER: {"type": "integer"},
    AttrType.STRING: {"type": "string"},
    AttrType.DATETIME: {"type": "string", "format": "date-time"},
}

PROBLEM_SCHEMA: Schema = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["detail"],
                "properties": {
                    "detail": {"type": "string"},
                    "parameter": {"type": "string"},
                    "pointer": {"type": "string"},
                },
            },
        },
    },
}


def item_schema_name(resource: Resource) -> str:
    return resource.name.capitalize()[:-1]  # users -> User


def component_schemas() -> dict[str, Schema]:
    """A schema per resource (every key optional: clients choose), its envelopes, and Problem."""
    schemas: dict[str, Schema] = {"Problem": PROBLEM_SCHEMA}
    for resource in RESOURCES.values():
        name = item_schema_name(resource)
        properties: dict[str, Schema] = {}
        for attribute in resource.attributes:
            schema = dict(_TYPES[attribute.type])
            if attribute.nullable:
                schema = {"anyOf": [schema, {"type": "null"}]}
            if attribute.private:
                schema["description"] = "private: returned only to callers with a valid token"
            properties[attribute.name] = schema
        for relationship in resource.relationships:
            target = item_schema_name(RESOURCES[relationship.target])
            properties[relationship.name] = {
                "type": "array",
                "items": {"$ref": f"#/components/schemas/{target}"},
                "description": "present when included; ordered by id",
            }
        schemas[name] = {"type": "object", "properties": properties, "additionalProperties": False}
        schemas[f"{name}List"] = {
            "type": "object",
            "required": ["data", "meta", "links"],
            "properties": {
                "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
                "meta": {
                    "type": "object",
                    "required": ["next_cursor"],
                    "properties": {
                        "next_cursor": {"type": ["string", "null"]},
                        "total": {"type": "integer"},
                        "estimated": {"type": "boolean"},
                    },
                },
                "links": {
                    "type": "object",
                    "required": ["next"],
                    "properties": {"next": {"type": ["string", "null"]}},
                },
            },
        }
        schemas[f"{name}Item"] = {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"$ref": f"#/components/schemas/{name}"}},
        }
        schemas[f"{name}Batch"] = {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}
            },
        }
    schemas.update(body_schemas())
    return schemas


def include_paths(resource: Resource, depth: int) -> list[Path]:
    """Every include path a client may name, to the configured depth."""
    paths: list[Path] = []

    def visit(current: Resource, prefix: Path) -> None:
        if len(prefix) >= depth:
            return
        for relationship in current.relationships:
            path = (*prefix, relationship.name)
            paths.append(path)
            visit(RESOURCES[relationship.target], path)

    visit(resource, ())
    return paths


def _names(resource: Resource) -> str:
    public = [a.name for a in resource.attributes if not a.private]
    private = [a.name for a in resource.attributes if a.private]
    text = ", ".join(f"`{n}`" for n in public)
    if private:
        text += "; with a token also " + ", ".join(f"`{n}`" for n in private)
    return text


def _query(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def shape_parameters(resource: Resource, settings: Settings) -> list[Schema]:
    """`fields`, `include` and one `fields[path]` per includable path."""
    paths = include_paths(resource, settings.max_include_depth)
    parameters = [
        _query("fields", f"Comma-separated attributes of {resource.name}: {_names(resource)}."),
        _query(
            "include",
            "Comma-separated relationship paths to embed, dotted for nesting: "
            + ", ".join(f"`{'.'.join(p)}`" for p in paths)
            + ".",
        ),
    ]
    for path in paths:
        target = _resource_at(resource, path)
        dotted = ".".join(path)
        parameters.append(
            _query(f"fields[{dotted}]", f"Attributes of the included `{dotted}`: {_names(target)}.")
        )
    return parameters


def list_parameters(resource: Resource, settings: Settings) -> list[Schema]:
    """Every list parameter, with the allowed names spelled out."""
    parameters = shape_parameters(resource, settings)
    operators = ", ".join(f"`{op}`" for op in OPERATORS)
    for attribute in resource.attributes:
        parameters.append(
            _query(
                f"filter[{attribute.name}]",
                f"Rows whose `{attribute.name}` equals the value. Other operators: "
                f"`filter[{attribute.name}][op]` with op one of {operators}; relationship paths "
                f"filter by existence, e.g. `filter[{resource.relationships[0].name}.id]`.",
            )
        )
    sortable = ", ".join(f"`{a.name}`" for a in resource.attributes)
    parameters += [
        _query(
            "sort",
            f"Comma-separated sort keys, `-` for descending, from {sortable}; `id` breaks ties.",
        ),
        _query(
            "limit",
            f"Page size, 1 to {settings.max_limit} (default {settings.default_limit}).",
            {"type": "integer", "minimum": 1, "maximum": settings.max_limit},
        ),
        _query(
            "cursor",
            "Opaque cursor from `meta.next_cursor`; valid only with the same sort and filters.",
        ),
        _query(
            "count",
            "`true` adds `meta.total`; `estimated` uses the planner's estimate on PostgreSQL.",
            {"type": "string", "enum": ["true", "false", "estimated"]},
        ),
    ]
    return parameters


def _resource_at(resource: Resource, path: Path) -> Resource:
    for name in path:
        relationship = resource.relationship(name)
        assert relationship is not None
        resource = RESOURCES[relationship.target]
    return resource


def problem_responses(*statuses: int) -> dict[int | str, Schema]:
    reasons = {
        400: "Bad parameter",
        401: "Missing or invalid bearer token",
        403: "Private attribute without a token",
        404: "Not found",
        409: "Unique clash",
        413: "Body too large",
        414: "URL too long",
        415: "Body is not JSON",
        422: "Invalid body",
        503: "Database or pool cannot serve in time (see Retry-After)",
    }
    return {
        status: {
            "description": reasons[status],
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in statuses
    }


def ok_response(schema_name: str, description: str) -> dict[int | str, Schema]:
    return {
        200: {
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
            },
        }
    }


def body_schemas() -> dict[str, Schema]:
    """The Create and Update body schemas of every resource, from the pydantic models."""
    from service.schemas import body_model

    schemas: dict[str, Schema] = {}
    for resource in RESOURCES.values():
        for partial in (False, True):
            model = body_model(resource.name, partial=partial)
            schemas[model.__name__] = model.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
    return schemas


def create_body(resource: Resource, settings: Settings) -> Schema:
    ref = {"$ref": f"#/components/schemas/{item_schema_name(resource)}Create"}
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        ref,
                        {
                            "type": "array",
                            "items": ref,
                            "minItems": 1,
                            "maxItems": settings.max_batch,
                        },
                    ]
                }
            }
        },
    }


def update_body(resource: Resource) -> Schema:
    ref = {"$ref": f"#/components/schemas/{item_schema_name(resource)}Update"}
    return {"required": True, "content": {"application/json": {"schema": ref}}}


def created_response(resource: Resource) -> dict[int | str, Schema]:
    name = item_schema_name(resource)
    return {
        201: {
            "description": "Created; shaped by `fields` and `include`",
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": f"#/components/schemas/{name}Item"},
                            {"$ref": f"#/components/schemas/{name}Batch"},
                        ]
                    }
                }
            },
        }
    }
