"""The query parameters of every read and write, as the OpenAPI document declares them.

Names (attributes, paths, sort keys) are free text: the server judges them and answers a
misspelling with a suggestion, which a pattern in the browser would hide. The allowed names
are in each description and in the schema's `examples`, which the docs page shows but does
not prefill (a prefilled example is sent by "Try it out"). Values keep their type's schema.
"""

from __future__ import annotations

from typing import Any

from service.examples import example_value
from service.query.params import OPERATORS, Path
from service.schema import Attribute, Join, Resource
from service.schema.codecs.base import TIMESTAMP_PATTERN
from service.settings import Settings

Schema = dict[str, Any]

NO_NUL = "^[^\\u0000]*$"  # strings holding NUL are refused (400 in a query, 422 in a body)
DECLARED_HOPS = 2  # filter paths declared one parameter each: this many relationships deep
_MEANING = {
    "eq": "equals the value",
    "ne": "is not the value (null counts as not equal)",
    "lt": "is less than the value",
    "lte": "is at most the value",
    "gt": "is more than the value",
    "gte": "is at least the value",
    "in": "equals one of the comma-separated values",
    "contains": "contains the text, ignoring case",
    "startswith": "starts with the text, ignoring case",
    "isnull": "is null (`true`) or is not (`false`)",
}


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _names_schema(*examples: str) -> Schema:
    return {"type": "string", "minLength": 1, "examples": [e for e in examples if e]}


def _listed(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _names(resource: Resource) -> str:
    public = [a.name for a in resource.attributes if not a.private]
    private = [a.name for a in resource.attributes if a.private]
    text = _listed(public)
    if private:
        text += "; with a token also " + _listed(private)
    return text


def _some(names: list[str], count: int = 2) -> str:
    return ",".join(names[:count])


def include_paths(resource: Resource, depth: int) -> list[Path]:
    """Every include path a client may name, to the configured depth."""
    paths: list[Path] = []

    def visit(current: Resource, prefix: Path) -> None:
        if len(prefix) >= depth:
            return
        for join in current.relationships:
            path = (*prefix, join.name)
            paths.append(path)
            visit(join.target, path)

    visit(resource, ())
    return paths


def _join_at(resource: Resource, path: Path) -> Join:
    join = _resource_at(resource, path[:-1]).relationship(path[-1])
    assert join is not None
    return join


def _resource_at(resource: Resource, path: Path) -> Resource:
    for name in path:
        join = resource.relationship(name)
        assert join is not None
        resource = join.target
    return resource


def _public_names(resource: Resource) -> list[str]:
    return [a.name for a in resource.attributes if not a.private]


def _sortable(resource: Resource) -> list[str]:
    return [a.name for a in resource.attributes if a.codec.sortable]


def _sort_example(resource: Resource) -> str:
    names = [n for n in _sortable(resource) if n != resource.key.name]
    return f"-{names[0]}" if names else f"-{resource.key.name}"


def shape_parameters(resource: Resource, settings: Settings) -> list[Schema]:
    """`fields`, `include`, then per included path `fields[path]` and, on a to-many path,
    `sort[path]`, `limit[path]` and `count[path]`."""
    paths = include_paths(resource, settings.max_include_depth)
    dotted_paths = [".".join(p) for p in paths]
    parameters = [
        _query(
            "fields",
            f"Comma-separated attributes of {resource.name}: {_names(resource)}. Default: every "
            "attribute the caller may see. Private attributes without a token are a 403.",
            _names_schema(_some(_public_names(resource))),
        ),
        _query(
            "include",
            "Comma-separated relationship paths to embed, dotted for nesting: "
            + _listed(dotted_paths)
            + f". At most {settings.max_include_paths} paths counting implied parents, and at "
            f"most {settings.max_embedded_rows} embedded rows in one response (400 above it).",
            _names_schema(dotted_paths[0] if dotted_paths else ""),
        ),
    ]
    for path, dotted in zip(paths, dotted_paths, strict=True):
        target = _resource_at(resource, path)
        parameters.append(
            _query(
                f"fields[{dotted}]",
                f"Attributes of the included `{dotted}`: {_names(target)}. "
                f"Only with `include` naming `{dotted}` (or a path below it); else a 400.",
                _names_schema(_some(_public_names(target), 1)),
            )
        )
    for path, dotted in zip(paths, dotted_paths, strict=True):
        if _join_at(resource, path).many:
            parameters += embedded_list_parameters(_resource_at(resource, path), dotted, settings)
    return parameters


def embedded_list_parameters(target: Resource, dotted: str, settings: Settings) -> list[Schema]:
    """`sort[path]`, `limit[path]` and `count[path]` of one to-many path."""
    name = dotted.rsplit(".", 1)[-1]
    return [
        _query(
            f"sort[{dotted}]",
            f"Order of each embedded `{dotted}` list: comma-separated keys, `-` for descending, "
            f"from {_listed(_sortable(target))}; `{target.key.name}` breaks ties "
            f"(default: `{target.key.name}`). Only with `include` naming `{dotted}`.",
            _names_schema(_sort_example(target)),
        ),
        _query(
            f"limit[{dotted}]",
            f"At most this many `{dotted}` rows per parent (top-N per parent, in the list's "
            f"order), 1 to {settings.max_limit}; default all. Only with `include` naming "
            f"`{dotted}`.",
            {"type": "integer", "minimum": 1, "maximum": settings.max_limit, "examples": [3]},
        ),
        _query(
            f"count[{dotted}]",
            f"`true` adds `{name}_count` to each parent: how many `{name}` it has, whatever "
            f"`limit[{dotted}]` cut. The path need not be included; its parent level must be.",
            {"type": "string", "enum": ["true", "false"]},
        ),
    ]


def value_schema(attribute: Attribute) -> Schema:
    """What a filter value of this attribute's type looks like (`eq` and the ranges)."""
    schema = dict(attribute.codec.schema())
    if schema.get("format") == "date-time":
        schema["pattern"] = TIMESTAMP_PATTERN  # a zone is optional in a filter
    elif schema.get("type") == "string" and "enum" not in schema and "format" not in schema:
        length = schema.pop("maxLength", None)
        schema["pattern"] = NO_NUL
        if length is not None:
            schema["maxLength"] = length * 4  # a filter value may be longer (a probe)
    example = example_value(attribute)
    if example is not None and not isinstance(example, dict | list):
        schema["examples"] = [example]
    return schema


def _operand_schema(attribute: Attribute, op: str) -> Schema:
    if op == "isnull":
        return {"type": "string", "enum": ["true", "false"]}
    if op == "in":
        schema: Schema = {"type": "string", "pattern": NO_NUL}
        first, second = example_value(attribute), example_value(attribute, 2)
        if isinstance(first, bool):
            first, second = "true", "false"
        elif isinstance(first, int):
            second = first + 1
        if isinstance(first, str | int | float):
            schema["examples"] = [",".join(dict.fromkeys((str(first), str(second))))]
        return schema
    if op in ("contains", "startswith"):
        example = str(example_value(attribute) or "")
        return {"type": "string", "pattern": NO_NUL, "examples": [example[:3]]}
    return value_schema(attribute)


def _filters_of(
    attribute: Attribute, dotted: str, subject: str, settings: Settings
) -> list[Schema]:
    """`filter[dotted]` (equality) and `filter[dotted][op]` for every other operator the
    attribute's type takes."""
    private = " Private: needs a valid token (else 403)." if attribute.private else ""
    parameters = []
    for op in OPERATORS:
        if op not in attribute.codec.operators:
            continue
        name = f"filter[{dotted}]" if op == "eq" else f"filter[{dotted}][{op}]"
        parameters.append(
            _query(
                name,
                f"{subject} `{attribute.name}` {_MEANING[op]}.{private}",
                _operand_schema(attribute, op),
            )
        )
    return parameters


def filter_parameters(resource: Resource, settings: Settings) -> list[Schema]:
    """Every operator of every attribute, the same one relationship away, and equality two
    relationships away. The rest works as well (other operators there, longer paths up to
    the include depth) and is described: a parameter for each would multiply the document
    by the relationships per resource at every hop, for little."""
    parameters: list[Schema] = []
    for attribute in resource.attributes:
        parameters += _filters_of(attribute, attribute.name, "Rows whose", settings)
    for path in include_paths(resource, min(settings.max_include_depth, DECLARED_HOPS)):
        dotted_path = ".".join(path)
        subject = (
            f"Rows with at least one `{dotted_path}` whose"
            if any(_join_at(resource, path[: n + 1]).many for n in range(len(path)))
            else f"Rows whose `{dotted_path}` has a"
        )
        for attribute in _resource_at(resource, path).attributes:
            dotted = f"{dotted_path}.{attribute.name}"
            found = _filters_of(attribute, dotted, subject, settings)
            parameters += found if len(path) == 1 else found[:1]  # equality, deeper
    if parameters:
        note = (
            f" Conditions are ANDed, at most {settings.max_filters} of them; a filter path may "
            f"cross up to {settings.max_include_depth} relationships, with every operator "
            "(`filter[a.b.attribute][op]`)."
        )
        parameters[0] = {**parameters[0], "description": parameters[0]["description"] + note}
    return parameters


EXPLAIN = _query(
    "explain",
    "See the SQL (needs a valid token, else 401; never cached): `sql` adds `explain` to the "
    "body, with each statement the read ran (placeholders and parameter types, never values), "
    "its duration, their count and the database that served them; `plan` adds each "
    "statement's plan (PostgreSQL: `EXPLAIN (ANALYZE, FORMAT JSON)`, which runs the SELECT "
    "once more; SQLite: `EXPLAIN QUERY PLAN`).",
    {"type": "string", "enum": ["sql", "plan"]},
)


def list_parameters(resource: Resource, settings: Settings) -> list[Schema]:
    """Every list parameter: the shape, paging, then the filters."""
    shape = shape_parameters(resource, settings)
    paging = [
        _query(
            "sort",
            f"Comma-separated sort keys, `-` for descending, from {_listed(_sortable(resource))}; "
            f"`{resource.key.name}` breaks ties. "
            "Naming a key both ascending and descending is a 400.",
            _names_schema(_sort_example(resource)),
        ),
        _query(
            "limit",
            f"Page size, 1 to {settings.max_limit} (default {settings.default_limit}).",
            {"type": "integer", "minimum": 1, "maximum": settings.max_limit, "examples": [10]},
        ),
        _query(
            "cursor",
            "Opaque cursor from `meta.next_cursor`; valid only with the same sort and filters "
            "(any other value is a 400).",
            {"type": "string", "pattern": "^[^\\u0000]*\\S[^\\u0000]*$"},
        ),
        _query(
            "count",
            "`true` adds `meta.total`; `estimated` uses the planner's estimate on PostgreSQL.",
            {"type": "string", "enum": ["true", "false", "estimated"]},
        ),
    ]
    # The few a person reaches for first, then the per-path and filter families.
    filters = filter_parameters(resource, settings)
    return [*shape[:2], *paging, EXPLAIN, *shape[2:], *filters]
