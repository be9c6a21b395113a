"""The OpenAPI description of every route, derived from the registry (no FastAPI here)."""

from __future__ import annotations

from typing import Any

from service.examples import create_example, example_value, update_example
from service.query_parameters import NO_NUL
from service.schema import Registry, Resource
from service.settings import Settings

Schema = dict[str, Any]

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


EXPLAIN_SCHEMA: Schema = {
    "type": "object",
    "description": "What the read ran (present with `explain`)",
    "required": ["database", "count", "duration_ms", "statements"],
    "properties": {
        "database": {"type": ["string", "null"], "description": "primary, or the replica"},
        "count": {"type": "integer", "minimum": 0},
        "duration_ms": {"type": "number"},
        "statements": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sql", "parameters", "duration_ms"],
                "properties": {
                    "sql": {"type": "string", "description": "as the driver got it"},
                    "parameters": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "each parameter's type, never its value",
                    },
                    "duration_ms": {"type": "number"},
                    "plan": {"description": "with `explain=plan`: the database's own plan"},
                },
            },
        },
    },
}


def _header(description: str, schema: Schema | None = None) -> Schema:
    return {"description": description, "required": True, "schema": schema or {"type": "string"}}


# What the request middleware adds to every response, errors included.
COMMON_HEADERS: dict[str, Schema] = {
    "Server-Timing": _header('Stages and `db;dur=<ms>;desc="<n> queries"`, then a total'),
    "X-Request-ID": _header("The caller's X-Request-ID (printable ASCII, <= 128) or a new one"),
}
CACHED_HEADERS: dict[str, Schema] = {
    **COMMON_HEADERS,
    "ETag": _header("Strong validator of the body"),
    "X-Cache": _header(
        "How the cache served it", {"type": "string", "enum": ["HIT", "MISS", "BYPASS"]}
    ),
    "Cache-Control": _header(
        "Revalidate every time; `no-store` for a read asked to `explain` itself",
        {"type": "string", "enum": ["private, no-cache", "no-store"]},
    ),
    "Vary": _header("Responses differ by caller", {"type": "string", "const": "Authorization"}),
}
_ERROR_HEADERS: dict[int, dict[str, Schema]] = {
    401: {
        "WWW-Authenticate": _header(
            "The bearer challenge", {"type": "string", "pattern": "^Bearer "}
        )
    },
    503: {"Retry-After": _header("Seconds to wait", {"type": "string", "pattern": "^[0-9]+$"})},
}


def openapi_tags(registry: Registry) -> list[Schema]:
    """One tag per resource, saying what it holds, then the operational endpoints."""
    tags = []
    for resource in registry.values():
        relationships = ", ".join(f"`{join.name}`" for join in resource.relationships)
        description = f"Attributes {', '.join(f'`{a.name}`' for a in resource.attributes)}"
        tags.append(
            {
                "name": resource.name,
                "description": description
                + (f"; relationships {relationships}." if relationships else "."),
            }
        )
    tags.append({"name": "operations", "description": "Liveness, readiness and metrics."})
    return tags


def item_schema_name(resource: Resource) -> str:
    return resource.schema_name  # users -> User (see the registry: never a clash)


def component_schemas(registry: Registry) -> dict[str, Schema]:
    """A schema per resource (every key optional: clients choose), its envelopes, and Problem."""
    schemas: dict[str, Schema] = {"Problem": PROBLEM_SCHEMA, "Explain": EXPLAIN_SCHEMA}
    for resource in registry.values():
        name = item_schema_name(resource)
        properties: dict[str, Schema] = {}
        for attribute in resource.attributes:
            schema = dict(attribute.codec.schema())
            if attribute.nullable:
                schema = {"anyOf": [schema, {"type": "null"}]}
            if attribute.private:
                schema["description"] = "private: returned only to callers with a valid token"
            properties[attribute.name] = schema
        for join in resource.relationships:
            target: Schema = {"$ref": f"#/components/schemas/{item_schema_name(join.target)}"}
            key = join.target.key.name
            properties[join.name] = (
                {
                    "type": "array",
                    "items": target,
                    "description": f"present when included; ordered by {key}",
                }
                if join.many
                else {"anyOf": [target, {"type": "null"}], "description": "present when included"}
            )
        for join in resource.relationships:
            if join.many:
                properties[f"{join.name}_count"] = {
                    "type": "integer",
                    "minimum": 0,
                    "description": f"how many {join.name} there are; present with "
                    f"`count[{join.name}]=true` (or `count[<path>.{join.name}]`)",
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
                "explain": {"$ref": "#/components/schemas/Explain"},
            },
        }
        schemas[f"{name}Item"] = {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {"$ref": f"#/components/schemas/{name}"},
                "explain": {"$ref": "#/components/schemas/Explain"},
            },
        }
        schemas[f"{name}Batch"] = {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}
            },
        }
    schemas.update(body_schemas(registry))
    return schemas


ALWAYS = (414, 503)  # the middleware's URL limit and deadline apply to every route
REASONS = {
    400: "Bad parameter",
    401: "Missing or invalid bearer token",
    403: "Private attribute without a token",
    404: "Not found",
    409: "Unique clash (naming the field, and the index in a batch)",
    413: "Body too large",
    414: "URL too long",
    415: "Body is not JSON",
    422: "Invalid body (JSON pointers in `errors`)",
    503: "Database or pool cannot serve in time (see Retry-After)",
}


def id_parameter(resource: Resource) -> Schema:
    """The `{id}` path parameter: the resource's key, in its one canonical spelling."""
    return {
        "name": "id",
        "in": "path",
        "required": True,
        "description": f"The row's `{resource.key.name}` (any other spelling of it is a 404)",
        "schema": {**resource.key.codec.schema(), "examples": [example_value(resource.key)]},
    }


def problem_responses(*statuses: int) -> dict[int | str, Schema]:
    """application/problem+json answers for `statuses`, plus 414 and 503, which any route gives."""
    return {
        status: {
            "description": REASONS[status],
            "headers": {**COMMON_HEADERS, **_ERROR_HEADERS.get(status, {})},
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status in sorted({*statuses, *ALWAYS})
    }


def ok_response(
    schema_name: str,
    description: str,
    *,
    status: int = 200,
    headers: dict[str, Schema] | None = None,
) -> dict[int | str, Schema]:
    return {
        status: {
            "description": description,
            "headers": headers or COMMON_HEADERS,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}
            },
        }
    }


def cached_responses(schema_name: str, description: str) -> dict[int | str, Schema]:
    """A GET's 200 (through the response cache) and its 304."""
    return {
        **ok_response(schema_name, description, headers=CACHED_HEADERS),
        304: {
            "description": "Not modified: If-None-Match matched the ETag; no body",
            "headers": CACHED_HEADERS,
        },
    }


def no_content(description: str) -> dict[int | str, Schema]:
    return {204: {"description": description, "headers": COMMON_HEADERS}}


def item_links(resource: Resource, id_at: str) -> dict[str, Schema]:
    """OpenAPI links from a response naming one row to what can be done with that row."""
    name = resource.name
    links: dict[str, Schema] = {
        f"get_{name}": {"operationId": f"get_{name}", "parameters": {"id": id_at}},
        f"update_{name}": {"operationId": f"update_{name}", "parameters": {"id": id_at}},
        f"delete_{name}": {"operationId": f"delete_{name}", "parameters": {"id": id_at}},
    }
    for join in resource.relationships:
        if join.many:
            operation = f"list_{name}_{join.name}"
            links[operation] = {"operationId": operation, "parameters": {"id": id_at}}
    return links


def with_links(
    responses: dict[int | str, Schema], status: int, links: dict[str, Schema]
) -> dict[int | str, Schema]:
    responses[status] = {**responses[status], "links": links}
    return responses


def body_schemas(registry: Registry) -> dict[str, Schema]:
    """The Create and Update body schemas of every resource, from the pydantic models."""
    from service.schemas import body_model

    schemas: dict[str, Schema] = {}
    for resource in registry.values():
        for partial in (False, True):
            model = body_model(resource, partial=partial)
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas[model.__name__] = _without_null_defaults(_refuse_nul(schema))
    return schemas


def _without_null_defaults(schema: Schema) -> Schema:
    """An optional body field has no default to show: left out, it is not written (PATCH) or
    takes the column's own default (POST). pydantic's `default: null` would be a value some
    of these fields refuse (a list, a name), and a form prefilled from it fails."""
    properties = {
        name: {key: value for key, value in field.items() if (key, value) != ("default", None)}
        for name, field in schema.get("properties", {}).items()
    }
    return {**schema, "properties": properties} if properties else schema


def _refuse_nul(schema: Schema) -> Schema:
    """Every string in a body refuses NUL characters, as the models do."""
    out: Schema = {}
    for key, value in schema.items():
        if isinstance(value, dict):
            out[key] = _refuse_nul(value)
        elif isinstance(value, list):
            out[key] = [_refuse_nul(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    if out.get("type") == "string":
        if "pattern" in out:
            # pydantic's regex engine (Rust) counts U+0085 as `\s`; ECMA-262 does not.
            out["pattern"] = str(out["pattern"]).replace("\\s", "\\s\\u0085")
            out["not"] = {"pattern": "\\u0000"}
        else:
            out["pattern"] = NO_NUL
    return out


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
                },
                "examples": {
                    "one": {"summary": "One row", "value": create_example(resource)},
                    "batch": {
                        "summary": "A batch, created all or nothing",
                        # Other values than the single row's: both may be tried in turn.
                        "value": [create_example(resource, 2), create_example(resource, 3)],
                    },
                },
            }
        },
    }


def update_body(resource: Resource) -> Schema:
    ref = {"$ref": f"#/components/schemas/{item_schema_name(resource)}Update"}
    example = {"summary": "Change one attribute", "value": update_example(resource)}
    return {
        "required": True,
        "content": {"application/json": {"schema": ref, "examples": {"one": example}}},
    }


def created_response(resource: Resource) -> dict[int | str, Schema]:
    """201 with one row (and a Location) or a batch; links follow a single row's `data.id`."""
    name = item_schema_name(resource)
    location = {
        "description": f"`/{resource.name}/{{{resource.key.name}}}` of a single created row "
        "(not for a batch)",
        "required": False,
        "schema": {"type": "string"},
    }
    return {
        201: {
            "description": "Created; shaped by `fields` and `include` (the key is in the default)",
            "headers": {**COMMON_HEADERS, "Location": location},
            "content": {
                "application/json": {
                    "schema": {
                        # The batch first: a generated client tries them in order, and a
                        # list of rows can pass for one row in some generators (a row of
                        # two keys converts to a dict), never an object for a list.
                        "oneOf": [
                            {"$ref": f"#/components/schemas/{name}Batch"},
                            {"$ref": f"#/components/schemas/{name}Item"},
                        ]
                    }
                }
            },
            "links": item_links(resource, f"$response.body#/data/{resource.key.name}"),
        }
    }
