"""Writes on every resource: creates read back equal, refusals write nothing, PATCH of every
writable attribute, DELETE takes exactly what ON DELETE says (SPEC: Writing, Your own models)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from argon2 import PasswordHasher

from service.schema import Registry, Resource
from tests.contract.bodies import Bodies, Body, dangling, same, writable, written_joins
from tests.contract.conftest import WriteSide
from tests.contract.reference import (
    Restricted,
    changed_rows,
    json_of,
    simulate_delete,
    snapshot,
)
from tests.contract.schemas import SCHEMAS, Schema
from tests.contract.shapes import ids, resource_cases
from tests.contract.wire import BEARER, body, pointers, problem


def path_of(resource: Resource, key: Any) -> str:
    return f"/{resource.name}/{quote(str(key), safe='')}"


def shaping(resource: Resource) -> dict[str, str]:
    """Every attribute a token holder sees, every relationship by its target's key."""
    params = {"fields": ",".join(resource.visible_attributes(private=True))}
    if resource.relationships:
        params["include"] = ",".join(j.name for j in resource.relationships)
        for join in resource.relationships:
            params[f"fields[{join.name}]"] = join.target.key.name
    return params


def check_written(resource: Resource, sent: Body, data: dict[str, Any]) -> None:
    """What a create or PATCH response (or a read after it) holds matches what was sent."""
    for attribute in resource.attributes:
        if attribute.name in sent:
            assert same(attribute, sent[attribute.name], data[attribute.name]), (
                attribute.name,
                sent[attribute.name],
                data[attribute.name],
            )
        if attribute.references is not None and attribute.name in sent:
            join = next(j for j in resource.relationships if j.parent_key is attribute.column)
            linked = data[join.name]
            wanted = sent[attribute.name]
            assert (
                (linked is None)
                if wanted is None
                else str(linked[join.target.key.name]) == str(wanted)
            )
    for join in written_joins(resource):
        if join.ids_field in sent:
            got = sorted(str(item[join.target.key.name]) for item in data[join.name])
            assert got == sorted(str(k) for k in sent[str(join.ids_field)]), join.name


async def post(client: httpx.AsyncClient, resource: Resource, payload: object) -> httpx.Response:
    return await client.post(
        f"/{resource.name}", json=payload, params=shaping(resource), headers=BEARER
    )


async def check_secrets(side: WriteSide, resource: Resource, key: Any, sent: Body) -> None:
    """A write-only value is stored as an argon2id hash of what was sent."""
    tables = await side.tables()
    row = next(
        r
        for r in tables[resource.table.name]
        if str(json_of(resource.key, r[resource.key.column.name])) == str(key)
    )
    for secret in resource.secrets:
        if secret.name in sent:
            stored = row[secret.column.name]
            if sent[secret.name] is None:
                assert stored is None
                continue
            assert stored.startswith("$argon2id$"), stored
            assert PasswordHasher().verify(stored, sent[secret.name])


# --- create ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("schema", "resource"), resource_cases(), ids=ids)
async def test_one_and_a_batch_are_created_and_read_back_equal(
    writer: WriteSide, schema: Schema, resource: str
) -> None:
    served = writer.registry[resource]
    bodies = Bodies(writer.reference)
    minimal = bodies.create(served, everything=False)
    assert set(minimal) == {a.name for a in writable(served) if a.required}
    single = bodies.create(served)
    batch = [bodies.create(served), minimal, bodies.create(served)]

    created = await post(writer.client, served, single)
    assert created.status_code == 201, created.text
    data = body(created)["data"]
    assert isinstance(data, dict)
    check_written(served, single, data)
    assert set(data) == set(served.visible_attributes(private=True)) | {
        j.name for j in served.relationships
    }
    keys = [data[served.key.name]]

    created = await post(writer.client, served, batch)
    assert created.status_code == 201, created.text
    items = body(created)["data"]
    assert isinstance(items, list)
    assert len(items) == len(batch)
    for sent, item in zip(batch, items, strict=True):
        check_written(served, sent, item)
        keys.append(item[served.key.name])
    assert len(set(map(str, keys))) == 4

    for sent, key in zip([single, *batch], keys, strict=True):
        read = await writer.client.get(path_of(served, key), params=shaping(served), headers=BEARER)
        assert read.status_code == 200, read.text
        check_written(served, sent, body(read)["data"])
        await check_secrets(writer, served, key, sent)

    after = await writer.tables()
    assert len(after[served.table.name]) == len(writer.before[served.table.name]) + 4
    for join in written_joins(served):
        assert join.secondary is not None
        added = sum(len(set(map(str, b.get(str(join.ids_field), [])))) for b in [single, *batch])
        assert len(after[join.secondary.name]) == len(writer.before[join.secondary.name]) + added
    touched = {served.table.name} | {
        j.secondary.name for j in written_joins(served) if j.secondary is not None
    }
    untouched = {name: rows for name, rows in snapshot(after).items() if name not in touched}
    assert untouched == {n: r for n, r in snapshot(writer.before).items() if n not in touched}


# --- refusals write nothing ------------------------------------------------------------------


async def assert_nothing_written(side: WriteSide) -> None:
    assert snapshot(await side.tables()) == snapshot(side.before)


UNIQUE = [
    (schema, resource.name, attribute.name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for attribute in resource.attributes
    if attribute.unique and attribute.writable
]


@pytest.mark.parametrize(("schema", "resource", "attribute"), UNIQUE, ids=ids)
async def test_a_unique_clash_is_409_at_its_index_and_writes_nothing(
    refuser: WriteSide, schema: Schema, resource: str, attribute: str
) -> None:
    served = refuser.registry[resource]
    unique = served.attribute(attribute)
    assert unique is not None
    bodies = Bodies(refuser.reference)
    stored = json_of(unique, refuser.reference.values(resource, attribute)[0])
    batch = [bodies.create(served) for _ in range(3)]

    clash_stored = [*batch[:2], {**batch[2], attribute: stored}]
    document = problem(await post(refuser.client, served, clash_stored), 409)
    assert pointers(document) == [f"/2/{attribute}"], document

    clash_within = [*batch[:2], {**batch[2], attribute: batch[0][attribute]}]
    document = problem(await post(refuser.client, served, clash_within), 409)
    assert pointers(document) == [f"/2/{attribute}"], document

    document = problem(await post(refuser.client, served, {**batch[0], attribute: stored}), 409)
    assert pointers(document) == [f"/{attribute}"], document
    await assert_nothing_written(refuser)


FOREIGN_KEYS = [
    (schema, resource.name, attribute.name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for attribute in resource.attributes
    if attribute.references is not None and attribute.writable
]


@pytest.mark.parametrize(("schema", "resource", "attribute"), FOREIGN_KEYS, ids=ids)
async def test_a_dangling_foreign_key_is_422_naming_it_and_writes_nothing(
    refuser: WriteSide, schema: Schema, resource: str, attribute: str
) -> None:
    served = refuser.registry[resource]
    foreign = served.attribute(attribute)
    assert foreign is not None
    assert foreign.references is not None
    bodies = Bodies(refuser.reference)
    nowhere = dangling(foreign.references)
    good, bad = bodies.create(served), {**bodies.create(served), attribute: nowhere}

    document = problem(await post(refuser.client, served, bad), 422)
    assert pointers(document) == [f"/{attribute}"], document
    document = problem(await post(refuser.client, served, [good, bad]), 422)
    assert pointers(document) == [f"/1/{attribute}"], document
    await assert_nothing_written(refuser)


@pytest.mark.parametrize(("schema", "resource", "attribute"), FOREIGN_KEYS, ids=ids)
async def test_a_patch_to_a_dangling_foreign_key_is_422_naming_it_and_writes_nothing(
    refuser: WriteSide, schema: Schema, resource: str, attribute: str
) -> None:
    served = refuser.registry[resource]
    foreign = served.attribute(attribute)
    assert foreign is not None
    assert foreign.references is not None
    key = json_of(served.key, refuser.reference.keys(resource)[0])
    patched = await refuser.client.patch(
        path_of(served, key), json={attribute: dangling(foreign.references)}, headers=BEARER
    )
    try:
        document = problem(patched, 422)
        assert pointers(document) == [f"/{attribute}"], document
    finally:
        await assert_nothing_written(refuser)


ID_LISTS = [
    (schema, resource.name, join.name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for join in written_joins(resource)
]


@pytest.mark.parametrize(("schema", "resource", "relationship"), ID_LISTS, ids=ids)
async def test_a_dangling_id_in_an_id_list_is_422_naming_it_and_writes_nothing(
    refuser: WriteSide, schema: Schema, resource: str, relationship: str
) -> None:
    served = refuser.registry[resource]
    join = served.relationship(relationship)
    assert join is not None
    assert join.ids_field
    field = join.ids_field
    bodies = Bodies(refuser.reference)
    ids_ = [bodies.stored_key(join.target.name), dangling(join.target.key)]
    good, bad = bodies.create(served), {**bodies.create(served), field: ids_}

    document = problem(await post(refuser.client, served, bad), 422)
    assert pointers(document) == [f"/{field}/1"], document
    document = problem(await post(refuser.client, served, [good, bad]), 422)
    assert pointers(document) == [f"/1/{field}/1"], document
    key = json_of(served.key, refuser.reference.keys(resource)[0])
    patched = await refuser.client.patch(path_of(served, key), json={field: ids_}, headers=BEARER)
    document = problem(patched, 422)
    assert pointers(document) == [f"/{field}/1"], document
    await assert_nothing_written(refuser)


# --- PATCH -----------------------------------------------------------------------------------


def patches(bodies: Bodies, resource: Resource, current: dict[str, Any]) -> list[Body]:
    """One PATCH per writable attribute (a new value; then NULL where allowed) and per id
    list (other ids; then none). The key is left alone (see the test below)."""
    out: list[Body] = []
    for attribute in writable(resource):
        if attribute is resource.key:
            continue
        avoid = current.get(attribute.name)
        out.append({attribute.name: bodies.attribute_value(resource, attribute, avoid=avoid)})
        if attribute.nullable:
            out.append({attribute.name: None})
    for join in written_joins(resource):
        others = {bodies.stored_key(join.target.name) for _ in range(3)}
        out.append({str(join.ids_field): sorted(others, key=str)})
        out.append({str(join.ids_field): []})
    return out


@pytest.mark.parametrize(("schema", "resource"), resource_cases(), ids=ids)
async def test_patch_changes_each_writable_attribute_and_nothing_else(
    writer: WriteSide, schema: Schema, resource: str
) -> None:
    served = writer.registry[resource]
    key = json_of(served.key, writer.reference.keys(resource)[0])
    path = path_of(served, key)
    before = body(await writer.client.get(path, params=shaping(served), headers=BEARER))["data"]
    bodies = Bodies(writer.reference)
    for change in patches(bodies, served, before):
        response = await writer.client.patch(
            path, json=change, params=shaping(served), headers=BEARER
        )
        assert response.status_code == 200, (change, response.text)
        data = body(response)["data"]
        check_written(served, change, data)
        read = body(await writer.client.get(path, params=shaping(served), headers=BEARER))["data"]
        assert read == data
        expected = {**before, **{k: data[k] for k in data if k in change}}
        for join in served.relationships:
            moved = (
                any((a.name in change and join.parent_key is a.column) for a in served.attributes)
                or join.ids_field in change
            )
            if moved:
                expected[join.name] = data[join.name]
        assert data == expected, change
        await check_secrets(writer, served, key, change)
        before = data
    after = await writer.tables()
    touched = {served.table.name} | {
        j.secondary.name for j in written_joins(served) if j.secondary is not None
    }
    assert {n: r for n, r in snapshot(after).items() if n not in touched} == {
        n: r for n, r in snapshot(writer.before).items() if n not in touched
    }


CLIENT_KEYS = [
    (schema, resource.name, dependents)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    if resource.key.writable
    for dependents in (False, True)
]


def linked_keys(side: WriteSide, resource: str) -> set[Any]:
    reference = side.reference
    return {
        k
        for join in side.registry[resource].relationships
        for k in reference.links[(resource, join.name)]
    }


@pytest.mark.parametrize(
    ("schema", "resource", "dependents"),
    [pytest.param(*case) for case in CLIENT_KEYS],
    ids=ids,
)
async def test_patching_a_client_given_key_moves_the_row_or_is_refused_whole(
    writer: WriteSide, schema: Schema, resource: str, dependents: bool
) -> None:
    """The SPEC is silent on renaming a key; whatever the answer, it is not a 500, a 2xx means
    the row lives at its new URL only, and a 4xx that nothing was written."""
    served = writer.registry[resource]
    linked = linked_keys(writer, resource)
    key = next(k for k in writer.reference.keys(resource) if (k in linked) is dependents)
    new = Bodies(writer.reference).value(served.key)
    response = await writer.client.patch(
        path_of(served, json_of(served.key, key)), json={served.key.name: new}, headers=BEARER
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert body(response)["data"][served.key.name] == new
        assert (await writer.client.get(path_of(served, new))).status_code == 200
        assert (
            await writer.client.get(path_of(served, json_of(served.key, key)))
        ).status_code == 404
    else:
        problem(response, response.status_code)
        await assert_nothing_written(writer)


# --- DELETE ----------------------------------------------------------------------------------


def furthest_reaching(side: WriteSide, resource: Resource) -> tuple[Any, Any]:
    """The row whose delete the foreign keys carry furthest, and the tables after it."""
    best: tuple[int, str, Any, Any] | None = None
    for key in side.reference.keys(resource.name):
        try:
            after = simulate_delete(
                side.schema.metadata, side.before, resource.table, resource.key.column.name, key
            )
        except Restricted:
            continue
        reach = changed_rows(side.before, after)
        candidate = (reach, str(key), key, after)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    assert best is not None, f"every {resource.name} row is held by a foreign key"
    return best[2], best[3]


def referenced(registry: Registry, resource: Resource) -> bool:
    """Whether any table's foreign key points at this resource's table."""
    tables = registry[resource.name].table.metadata.tables.values()
    return any(fk.column.table is resource.table for table in tables for fk in table.foreign_keys)


@pytest.mark.parametrize(("schema", "resource"), resource_cases(), ids=ids)
async def test_delete_takes_exactly_what_on_delete_says(
    writer: WriteSide, schema: Schema, resource: str
) -> None:
    served = writer.registry[resource]
    key, expected = furthest_reaching(writer, served)
    if referenced(writer.registry, served):
        assert changed_rows(writer.before, expected) > 1, "the chosen row has dependents"
    path = path_of(served, json_of(served.key, key))
    response = await writer.client.delete(path, headers=BEARER)
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert snapshot(await writer.tables()) == snapshot(expected)
    problem(await writer.client.get(path), 404)
    problem(await writer.client.delete(path, headers=BEARER), 404)
    assert snapshot(await writer.tables()) == snapshot(expected)


def test_the_schemas_cover_cascade_set_null_and_junction_deletes() -> None:
    actions = {
        (fk.ondelete or "").upper()
        for schema in SCHEMAS
        for table in schema.metadata.tables.values()
        for fk in table.foreign_keys
    }
    assert {"CASCADE", "SET NULL"} <= actions
    assert any(written_joins(r) for s in SCHEMAS for r in s.registry.values())


@pytest.mark.parametrize(("schema", "resource"), resource_cases(), ids=ids)
async def test_the_documents_example_bodies_are_accepted(
    writer: WriteSide, schema: Schema, resource: str
) -> None:
    """The docs page prefills its forms with the document's examples: as they are, they
    create one row and a batch, and update a row (a required foreign key's example points at
    a row that may not exist: then a 422 naming only that field)."""
    document = (await writer.client.get("/openapi.json")).json()
    operations = document["paths"][f"/{resource}"]
    examples = operations["post"]["requestBody"]["content"]["application/json"]["examples"]
    references = {a.name for a in writer.registry[resource].attributes if a.references}
    created: list[Any] = []
    for name in ("one", "batch"):
        response = await writer.client.post(
            f"/{resource}", json=examples[name]["value"], headers=BEARER
        )
        if response.status_code == 422:
            pointers = {e["pointer"].rsplit("/", 1)[-1] for e in response.json()["errors"]}
            assert pointers <= references, response.text
            return
        assert response.status_code == 201, (name, response.text)
        data = response.json()["data"]
        created += data if isinstance(data, list) else [data]
    key = writer.registry[resource].key
    target = quote(str(created[0][key.name]), safe="")
    update = document["paths"][f"/{resource}/{{id}}"]["patch"]["requestBody"]
    body = update["content"]["application/json"]["examples"]["one"]["value"]
    patched = await writer.client.patch(f"/{resource}/{target}", json=body, headers=BEARER)
    assert patched.status_code == 200, patched.text
