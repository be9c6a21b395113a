"""/openapi.json describes every resource of the registry: its paths, its read and write
schemas, enum values (SPEC: Your own models "every promise ... the OpenAPI document")."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from service.query.params import OPERATORS
from service.query_parameters import DECLARED_HOPS
from service.schema import Resource
from tests.conftest import TOKEN
from tests.contract.bodies import writable, written_joins
from tests.contract.conftest import ReadSide
from tests.contract.schemas import SCHEMAS, Schema
from tests.contract.shapes import forbidden_columns

Document = dict[str, Any]


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def enums(node: Any) -> list[list[Any]]:
    if isinstance(node, dict):
        found = [node["enum"]] if "enum" in node else []
        return found + [e for value in node.values() for e in enums(value)]
    if isinstance(node, list):
        return [e for value in node for e in enums(value)]
    return []


def resolve(document: Document, node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = document["components"]["schemas"][name]
    return node


def response_schema(document: Document, path: str, method: str, status: str) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][status]
    return resolve(document, response["content"]["application/json"]["schema"])


def object_schema(document: Document, path: str, *, listed: bool) -> dict[str, Any]:
    envelope = response_schema(document, path, "get", "200")
    data = envelope["properties"]["data"]
    return resolve(document, data["items"] if listed else data)


@pytest.fixture
async def document(reader: ReadSide) -> Document:
    response = await reader.client.get("/openapi.json")
    assert response.status_code == 200, response.text
    built: Document = response.json()
    assert built["openapi"].startswith("3.")
    return built


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_every_resource_has_exactly_its_paths(
    reader: ReadSide, document: Document, schema: Schema
) -> None:
    paths = document["paths"]
    expected: dict[str, set[str]] = {}
    for resource in reader.registry.values():
        expected[f"/{resource.name}"] = {"get", "post"}
        expected[f"/{resource.name}/{{id}}"] = {"get", "patch", "delete"}
        for join in resource.relationships:
            if join.many:
                expected[f"/{resource.name}/{{id}}/{join.name}"] = {"get"}
    served = {p for p in paths if p.split("/")[1] in reader.registry}
    assert served == set(expected)
    for path, methods in expected.items():
        assert methods <= set(paths[path]), (path, set(paths[path]))


def check_read_schema(document: Document, resource: Resource, found: dict[str, Any]) -> None:
    properties = found["properties"]
    names = {a.name for a in resource.attributes} | {j.name for j in resource.relationships}
    names |= {f"{j.name}_count" for j in resource.relationships if j.many}  # count[path]
    assert set(properties) == names, resource.name
    for name in forbidden_columns(resource):
        assert name not in properties
    for join in resource.relationships:
        embedded = properties[join.name]
        if join.many:
            assert embedded["type"] == "array"
            assert properties[f"{join.name}_count"]["type"] == "integer"
            assert resolve(document, embedded["items"])["properties"].keys() >= {
                a.name for a in join.target.attributes
            }
        else:
            assert {"type": "null"} in embedded["anyOf"], embedded
    for attribute in resource.attributes:
        if attribute.codec.name == "enum":
            assert enums(properties[attribute.name]) == [list(attribute.codec.values)]  # type: ignore[attr-defined]


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_read_schemas_hold_every_attribute_and_relationship(
    reader: ReadSide, document: Document, schema: Schema
) -> None:
    for resource in reader.registry.values():
        listed = object_schema(document, f"/{resource.name}", listed=True)
        check_read_schema(document, resource, listed)
        assert object_schema(document, f"/{resource.name}/{{id}}", listed=False) == listed
        for join in resource.relationships:
            if join.many:
                path = f"/{resource.name}/{{id}}/{join.name}"
                assert object_schema(document, path, listed=True) == object_schema(
                    document, f"/{join.target.name}", listed=True
                )


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_write_schemas_take_exactly_the_writable_fields(
    reader: ReadSide, document: Document, schema: Schema
) -> None:
    for resource in reader.registry.values():
        body = document["paths"][f"/{resource.name}"]["post"]["requestBody"]
        one = resolve(document, body["content"]["application/json"]["schema"]["oneOf"][0])
        fields = {a.name for a in writable(resource)} | {
            str(j.ids_field) for j in written_joins(resource)
        }
        assert set(one["properties"]) == fields, resource.name
        assert set(one.get("required", [])) == {a.name for a in writable(resource) if a.required}
        for secret in resource.secrets:
            assert one["properties"][secret.name].get("writeOnly") is True
        patch = document["paths"][f"/{resource.name}/{{id}}"]["patch"]["requestBody"]
        update = resolve(document, patch["content"]["application/json"]["schema"])
        # A client-given key is written once, on create: a row keeps its one URL.
        assert set(update["properties"]) == fields - {resource.key.name}
        assert not update.get("required")
        for attribute in resource.attributes:
            if attribute.codec.name == "enum" and attribute.writable:
                values = list(attribute.codec.values)  # type: ignore[attr-defined]
                assert enums(one["properties"][attribute.name]) == [values]
                assert enums(update["properties"][attribute.name]) == [values]


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_each_attribute_declares_exactly_the_operators_the_server_takes(
    reader: ReadSide, document: Document, schema: Schema
) -> None:
    """`filter[a]` and `filter[a][op]` for every operator of a's type, on the resource and one
    relationship away, and `filter[path.a]` two relationships away; an
    operator the type refuses is neither declared nor accepted."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    depth = min(reader.app.state.services.settings.max_include_depth, DECLARED_HOPS)
    for resource in reader.registry.values():
        declared = {p["name"] for p in document["paths"][f"/{resource.name}"]["get"]["parameters"]}
        expected = set()
        for hops, owner in [((), resource), *paths_from(resource, depth)]:
            prefix = "".join(f"{hop}." for hop in hops)
            for attribute in owner.attributes:
                dotted = f"{prefix}{attribute.name}"
                for op in OPERATORS:
                    name = f"filter[{dotted}]" if op == "eq" else f"filter[{dotted}][{op}]"
                    allowed = op in attribute.codec.operators
                    if allowed and (len(hops) <= 1 or op == "eq"):
                        expected.add(name)
                    if not allowed and not hops:
                        response = await reader.client.get(
                            f"/{resource.name}", params={name: "1"}, headers=headers
                        )
                        assert response.status_code == 400, (name, response.text)
        assert {name for name in declared if name.startswith("filter[")} == expected


def paths_from(resource: Resource, depth: int) -> list[tuple[tuple[str, ...], Resource]]:
    """Every relationship path from `resource` up to `depth` hops, with the resource it ends at."""
    found: list[tuple[tuple[str, ...], Resource]] = []
    frontier: list[tuple[tuple[str, ...], Resource]] = [((), resource)]
    for _ in range(depth):
        frontier = [((*hops, j.name), j.target) for hops, at in frontier for j in at.relationships]
        found += frontier
    return found


def _needs_include(name: str) -> str | None:
    """The include a per-path parameter needs: its path for `fields[p]`, `sort[p]` and
    `limit[p]`; the parent level of a nested `count[p]` (a top-level count needs none)."""
    found = re.fullmatch(r"(fields|sort|limit|count)\[([^\]]+)\]", name)
    if found is None:
        return None
    family, path = found.groups()
    if family == "count":
        return path.rpartition(".")[0] or None
    return path


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_every_declared_example_is_a_value_the_server_takes(
    reader: ReadSide, document: Document, schema: Schema
) -> None:
    """Each list parameter, sent alone (with the include it needs) with its schema's example
    or first enum value, is a 200: the document's examples are requests that work."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    tried = 0
    for resource in reader.registry.values():
        for parameter in document["paths"][f"/{resource.name}"]["get"]["parameters"]:
            parameter_schema = parameter["schema"]
            values = parameter_schema.get("examples") or parameter_schema.get("enum")
            if parameter["name"] == "cursor":
                continue  # only the server issues one
            assert values, parameter["name"]
            params = {parameter["name"]: str(values[0]).lower() if values[0] is True else values[0]}
            if (path := _needs_include(parameter["name"])) is not None:
                params["include"] = path
            response = await reader.client.get(f"/{resource.name}", params=params, headers=headers)
            assert response.status_code == 200, (params, response.text)
            tried += 1
    assert tried > 20


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_names_are_left_to_the_server_which_suggests_the_right_one(
    reader: ReadSide, document: Document, schema: Schema
) -> None:
    """No pattern on a parameter that takes names: a misspelt one reaches the server, whose
    400 names the closest allowed name (a browser-side regex would have hidden it)."""
    for resource in reader.registry.values():
        parameters = document["paths"][f"/{resource.name}"]["get"]["parameters"]
        for parameter in parameters:
            if parameter["name"] in ("fields", "include", "sort") or re.match(
                r"(fields|sort)\[", parameter["name"]
            ):
                assert "pattern" not in parameter["schema"], parameter["name"]
        attribute = next(a for a in resource.attributes if len(a.name) > 3 and not a.private)
        misspelt = attribute.name[1] + attribute.name[0] + attribute.name[2:]
        response = await reader.client.get(f"/{resource.name}", params={"fields": misspelt})
        assert response.status_code == 400
        assert f"did you mean '{attribute.name}'" in response.json()["detail"], response.text


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_every_reference_resolves(document: Document, schema: Schema) -> None:
    schemas = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def test_the_schemas_have_enums_to_document() -> None:
    assert any(
        a.codec.name == "enum" for s in SCHEMAS for r in s.registry.values() for a in r.attributes
    )


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_the_document_is_valid_openapi_3_1_with_no_null_default_in_bodies(
    reader: ReadSide, document: Document, schema: Schema
) -> None:
    """openapi-spec-validator finds nothing; an optional body field shows no `default: null`
    (left out, it is not written; a form prefilled with null would be refused)."""
    errors = [error.message for error in OpenAPIV31SpecValidator(document).iter_errors()]
    assert errors == []
    for name, component in document["components"]["schemas"].items():
        if name.endswith(("Create", "Update")):
            for field, property_schema in component["properties"].items():
                assert "default" not in property_schema, (name, field)


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_operations_have_plain_ids_and_reads_take_an_optional_token(
    reader: ReadSide, document: Document, schema: Schema
) -> None:
    """Generated clients name methods after operationIds (no `healthz_healthz_get`); the
    docs page sends the token it was given on reads too, so private fields work from it."""
    ids = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            ids.append(operation["operationId"])
            assert re.fullmatch(r"[a-z][a-z0-9_]*", operation["operationId"]), operation
            assert not operation["operationId"].endswith(f"_{method}"), operation
            if path.split("/")[1] not in reader.registry:
                continue
            security = operation.get("security")
            if method == "get":
                assert security == [{}, {"bearer": []}], (path, security)
            else:
                assert security == [{"bearer": []}], (path, method, security)
    assert len(ids) == len(set(ids))
    tags = [tag["name"] for tag in document["tags"]]
    assert tags == [*reader.registry, "operations"]
    used = {t for item in document["paths"].values() for op in item.values() for t in op["tags"]}
    assert used == set(tags)
