"""Embedded lists a client shapes: `sort[path]` (their order), `limit[path]` (top-N per parent)
and `count[path]` (`<relationship>_count` on every object of the parent level), on lists,
items, sub-collections and write read-backs, against the Python reference; with their
statement budget and selected columns, their refusals, the embedded-row bound, canonical
links and cache keys, and cached counts after a write (SPEC: Reading "sort[path]",
"limit[path]", "count[path]", "Exactness", "The SQL is part of the contract"; Errors;
Caching)."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from service.schema import Attribute, Join, Kind, Registry, Resource
from service.settings import Settings
from tests.conftest import DatabaseFactory, recording
from tests.contract.bodies import Bodies
from tests.contract.conftest import MakeClient, ReadSide, WriteSide, make_write_side
from tests.contract.reference import Reference, build_reference, json_of, snapshot
from tests.contract.schemas import SCHEMAS, Schema
from tests.contract.shapes import (
    Shape,
    forbidden_columns,
    ids,
    one_public_attribute,
    resolve,
    resource_cases,
    sortable,
)
from tests.contract.wire import (
    BEARER,
    NO_CACHE,
    named_columns,
    problem,
    selected_columns,
    server_timing_queries,
)

Sort = tuple[tuple[str, bool], ...]  # (attribute, descending) pairs, as Reference.ordered takes
Pairs = tuple[tuple[str, str], ...]  # query parameters in order (a name may repeat)
CUT = 2  # limit[path] in the shaped reads: shorter than the longest lists of both seeds
# The defaults every app here runs with (make_test_settings leaves them alone).
DEFAULT_LIMIT: int = Settings.model_fields["default_limit"].default
MAX_LIMIT: int = Settings.model_fields["max_limit"].default
MAX_EMBEDDED_ROWS: int = Settings.model_fields["max_embedded_rows"].default


# --- shapes -------------------------------------------------------------------------------


def to_many_chains(registry: Registry, resource: str) -> list[Shape]:
    """Each to-many relationship, and each to-many path below an included relationship of
    any kind (with the parent it implies)."""
    chains: list[Shape] = []
    for join in registry[resource].relationships:
        if join.many:
            chains.append((join.name,))
        for nested in join.target.relationships:
            if nested.many:
                chains.append((join.name, f"{join.name}.{nested.name}"))
    return chains


CHAINS = [
    (schema, resource, chain)
    for schema, resource in resource_cases()
    for chain in to_many_chains(schema.registry, resource)
]
TO_MANY = [
    (schema, resource.name, join.name)
    for schema in SCHEMAS
    for resource in schema.registry.values()
    for join in resource.relationships
    if join.many
]


def parent_of(path: str) -> str:
    return path.rpartition(".")[0]


def last(path: str) -> str:
    return path.rpartition(".")[2]


def below(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def served_at(registry: Registry, resource: str, path: str) -> Resource:
    return registry[resource] if not path else resolve(registry, resource, path).target


def fields_of(resource: Resource) -> tuple[str, ...]:
    """The key (to compare with the reference by) and one public attribute."""
    return tuple(dict.fromkeys((resource.key.name, one_public_attribute(resource).name)))


def sort_attribute(resource: Resource) -> Attribute:
    """A public sortable attribute other than the key, a nullable one when there is one (its
    NULLs must sort as the largest value)."""
    candidates = [a for a in sortable(resource, private=False) if a is not resource.key]
    nullable = [a for a in candidates if a.nullable]
    return (nullable or candidates or [resource.key])[0]


def sort_text(sort: Sort) -> str:
    return ",".join(("-" if descending else "") + name for name, descending in sort)


def parse_sort(text: str) -> Sort:
    return tuple((key.lstrip("-"), key.startswith("-")) for key in text.split(","))


def path_of(resource: Resource, key: Any) -> str:
    return f"/{resource.name}/{quote(str(json_of(resource.key, key)), safe='')}"


# --- a shaped read and what the reference says it returns ---------------------------------


@dataclass(frozen=True)
class Ask:
    """One level of a read: its attributes and, below a to-many link, its order and cut."""

    fields: tuple[str, ...]
    sort: Sort = ()
    cut: int | None = None


@dataclass(frozen=True)
class Shaped:
    """A read of `resource`: per level (`""` the primary one) what it asks; the counted paths."""

    resource: str
    levels: dict[str, Ask]
    counts: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)  # e.g. the page's `limit`

    @property
    def paths(self) -> list[str]:
        return [path for path in self.levels if path]

    def params(self) -> dict[str, str]:
        params = {"fields": ",".join(self.levels[""].fields)}
        if self.paths:
            params["include"] = ",".join(self.paths)
        for path in self.paths:
            ask = self.levels[path]
            params[f"fields[{path}]"] = ",".join(ask.fields)
            if ask.sort:
                params[f"sort[{path}]"] = sort_text(ask.sort)
            if ask.cut is not None:
                params[f"limit[{path}]"] = str(ask.cut)
        for path in self.counts:
            params[f"count[{path}]"] = "true"
        return params | self.extra

    @property
    def uncounted_paths(self) -> list[str]:
        """Counted paths not included: each costs one statement of its own."""
        return [path for path in self.counts if path not in self.levels]

    @property
    def statements(self) -> int:
        return 1 + len(self.paths) + len(self.uncounted_paths)


def shaped_read(
    registry: Registry, resource: str, chain: Shape, *, cut: int | None, **extra: str
) -> Shaped:
    """Every to-many level of `chain` sorted by one attribute (nullable where there is one;
    the level need not select it), descending when cut and ascending when whole, and
    counted; each to-many relationship of the primary and the deepest level that is not
    included counted too (one statement each)."""
    levels = {"": Ask(fields_of(registry[resource]))}
    counts: list[str] = []
    for path in chain:
        join = resolve(registry, resource, path)
        if join.many:
            sort = ((sort_attribute(join.target).name, cut is not None),)
            levels[path] = Ask(fields_of(join.target), sort, cut)
            counts.append(path)
        else:
            levels[path] = Ask(fields_of(join.target))
    for path in ("", chain[-1] if chain else ""):
        for join in served_at(registry, resource, path).relationships:
            if join.many and below(path, join.name) not in levels:
                counts.append(below(path, join.name))
    return Shaped(resource, levels, tuple(dict.fromkeys(counts)), extra)


def check_objects(
    reference: Reference, shaped: Shaped, path: str, items: Any, keys: Sequence[Any]
) -> None:
    """`items` (a page, or one parent's list at `path`) are exactly the rows `keys`, in that
    order, each holding its fields, its included relationships and its counts, nothing else;
    its embedded lists are the reference's rows in `sort[path]` order, cut to `limit[path]`."""
    served = served_at(reference.registry, shaped.resource, path)
    assert isinstance(items, list), (path, items)
    shown = [str(item[served.key.name]) for item in items]
    assert shown == reference.texts(served.name, keys), (path or served.name, shown)
    children = [p for p in shaped.paths if parent_of(p) == path]
    counted = [c for c in shaped.counts if parent_of(c) == path]
    names = set(shaped.levels[path].fields) | {last(p) for p in children}
    names |= {f"{last(c)}_count" for c in counted}
    for item, key in zip(items, keys, strict=True):
        assert set(item) == names, (path, item)
        for count in counted:
            total = len(reference.related(served.name, last(count), key))
            assert item[f"{last(count)}_count"] == total, (count, key, item)
        for child in children:
            join = served.relationship(last(child))
            assert join is not None
            related = reference.related(served.name, join.name, key)
            value = item[join.name]
            if join.many:
                ask = shaped.levels[child]
                wanted = reference.ordered(join.target.name, list(related), ask.sort)[: ask.cut]
                check_objects(reference, shaped, child, value, wanted)
            elif related:
                check_objects(reference, shaped, child, [value], related)
            else:
                assert value is None, (child, key, value)


# --- the SQL ------------------------------------------------------------------------------


def select_names(statement: str, key: str) -> set[str]:
    """The columns the outermost SELECT takes from the rows of a level, by bare name: those
    qualified as its key is (a subquery or LATERAL renames the table, not the columns); the
    owner's key and a count come from elsewhere (the junction, the parents, a tally)."""
    qualified = [name.rpartition(".") for name in selected_columns(statement)]
    sources = {source for source, _, name in qualified if name == key}
    assert len(sources) == 1, (key, statement)
    return {name for source, _, name in qualified if source in sources}


def is_count(statement: str) -> bool:
    return any(name.startswith("count(") for name in selected_columns(statement))


def tables_named(statement: str) -> set[str]:
    return {name.split(".", 1)[0] for name in named_columns(statement)}


def names_table(statement: str, table: str) -> bool:
    return re.search(rf"\b{re.escape(table)}\b", statement.replace('"', "")) is not None


def level_columns(registry: Registry, shaped: Shaped, path: str) -> tuple[set[str], set[str]]:
    """(the columns `path` asks for, the columns of its table it must never select: every
    other one but the keys it joins by)."""
    served = served_at(registry, shaped.resource, path)
    asked = {served.attribute(name).column.name for name in shaped.levels[path].fields}  # type: ignore[union-attr]
    keys = {served.key.column.name}
    if path:
        keys.add(resolve(registry, shaped.resource, path).child_key.name)
    for other in [*shaped.paths, *shaped.counts]:
        if parent_of(other) == path and other != path:
            join = served.relationship(last(other))
            assert join is not None
            keys.add(join.parent_key.name)
    never = {column.name for column in served.table.columns} - asked - keys
    return asked, never


def fits(registry: Registry, shaped: Shaped, path: str, statement: str) -> bool:
    """Whether `statement` reads the level at `path`: what it asks and no other column."""
    asked, never = level_columns(registry, shaped, path)
    key = served_at(registry, shaped.resource, path).key.column.name
    if key not in {name.rpartition(".")[2] for name in selected_columns(statement)}:
        return False
    names = select_names(statement, key)
    return asked <= names and not names & never


def never_named(registry: Registry, shaped: Shaped) -> set[str]:
    """`table.column` of every private, write-only or hidden column of the levels read."""
    found: set[str] = set()
    for path in ("", *shaped.paths):
        served = served_at(registry, shaped.resource, path)
        private = [a.column.name for a in served.attributes if a.private]
        found |= {f"{served.table.name}.{n}" for n in [*forbidden_columns(served), *private]}
    return found


def count_table(registry: Registry, shaped: Shaped, path: str) -> str:
    """The one table a count of `path` reads: the junction, else the target."""
    join = served_at(registry, shaped.resource, parent_of(path)).relationship(last(path))
    assert join is not None
    return join.secondary.name if join.secondary is not None else join.target.table.name


def check_statements(registry: Registry, shaped: Shaped, statements: list[str]) -> None:
    """1 + k statements plus one per counted path not included: the page's and one per
    include path select what was asked plus join keys, never another column of the table;
    each count reads one table; no statement names a private or write-only column."""
    assert len(statements) == shaped.statements, statements
    page, *rest = statements
    counts = [s for s in rest if is_count(s)]
    lists = [s for s in rest if not is_count(s)]
    read = sorted(sorted(tables_named(statement)) for statement in counts)
    assert read == sorted([count_table(registry, shaped, p)] for p in shaped.uncounted_paths)
    assert fits(registry, shaped, "", page), page
    assert len(lists) == len(shaped.paths), lists
    assert any(
        all(
            fits(registry, shaped, path, statement)
            for path, statement in zip(order, lists, strict=True)
        )
        for order in itertools.permutations(shaped.paths)
    ), lists
    forbidden = never_named(registry, shaped)
    for statement in statements:
        assert not named_columns(statement) & forbidden, statement


# --- 1. lists: rows, order, cut, counts and the SQL, at every page size --------------------


@pytest.mark.parametrize("limit", [1, 50, 500])
@pytest.mark.parametrize(("schema", "resource", "chain"), CHAINS, ids=ids)
async def test_embedded_lists_are_sorted_cut_and_counted_in_1_plus_k_statements(
    reader: ReadSide, schema: Schema, resource: str, chain: Shape, limit: int
) -> None:
    registry, reference = reader.registry, reader.reference
    for cut in (CUT, None):
        shaped = shaped_read(registry, resource, chain, cut=cut, limit=str(limit))
        with recording(reader.app) as log:
            response = await reader.client.get(f"/{resource}", params=shaped.params())
        assert response.status_code == 200, response.text
        check_statements(registry, shaped, log.statements)
        assert server_timing_queries(response) == shaped.statements
        data = response.json()["data"]
        check_objects(reference, shaped, "", data, reference.keys(resource)[:limit])


@pytest.mark.parametrize(("schema", "resource", "chain"), CHAINS, ids=ids)
async def test_an_empty_page_runs_the_same_statements_and_count_true_one_more(
    reader: ReadSide, schema: Schema, resource: str, chain: Shape
) -> None:
    """No parents: every level and every count still runs (the budget does not depend on the
    data); `count=true` adds its one statement."""
    key = reader.registry[resource].key.name
    shaped = shaped_read(
        reader.registry,
        resource,
        chain,
        cut=CUT,
        count="true",
        **{f"filter[{key}][isnull]": "true"},
    )
    with recording(reader.app) as log:
        response = await reader.client.get(f"/{resource}", params=shaped.params())
    assert response.status_code == 200, response.text
    assert response.json()["data"] == []
    assert response.json()["meta"]["total"] == 0
    assert len(log) == shaped.statements + 1, log.statements


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_the_seed_has_empty_long_and_mixed_null_lists(
    reader: ReadSide, schema: Schema
) -> None:
    """The reads here meet parents with no related rows, lists longer than the cut, and
    lists whose sorted attribute holds both NULL and values (so the NULL order shows)."""
    reference = reader.reference
    empty = long = mixed = 0
    for resource in reader.registry.values():
        for join in resource.relationships:
            if not join.many:
                continue
            links = reference.links[(resource.name, join.name)]
            empty += sum(1 for key in reference.keys(resource.name) if not links.get(key))
            long += sum(1 for keys in links.values() if len(keys) > CUT)
            name = sort_attribute(join.target).name
            rows = reference.rows[join.target.name]
            mixed += sum(
                1 for keys in links.values() if len({rows[k][name] is None for k in keys}) == 2
            )
    assert empty > 0
    assert long > 0
    assert mixed > 0


# --- 2. sort[path] by every sortable attribute, both ways, with a cut ----------------------


def pair_sort(resource: Resource) -> str | None:
    """A two-key sort: an attribute prone to ties first (a boolean or an enum, else a nullable
    one), then the last other one that is not a foreign key (constant within a list), down."""
    candidates = [a for a in sortable(resource, private=False) if a is not resource.key]
    first = min(
        candidates,
        key=lambda a: (a.codec.name not in ("boolean", "enum"), a.nullable is False),
        default=None,
    )
    others = [a for a in candidates if a is not first and a.references is None]
    if first is None or not others:
        return None
    return f"{first.name},-{others[-1].name}"


def sorts_of(resource: Resource) -> list[str]:
    """Every sortable attribute (private ones too) up and down, and one two-key sort."""
    one_key = [
        ("-" if descending else "") + attribute.name
        for attribute in sortable(resource, private=True)
        for descending in (False, True)
    ]
    return one_key + [sort for sort in [pair_sort(resource)] if sort]


SORTS = [
    (schema, resource, relationship, sort)
    for schema, resource, relationship in TO_MANY
    for sort in sorts_of(resolve(schema.registry, resource, relationship).target)
]


@pytest.mark.parametrize(("schema", "resource", "relationship", "sort"), SORTS, ids=ids)
async def test_sort_path_orders_each_list_before_the_cut(
    reader: ReadSide, schema: Schema, resource: str, relationship: str, sort: str
) -> None:
    """Every sortable attribute (a private one with a token), NULL the largest value, text by
    code point, the key the final ascending tiebreaker; `limit[path]=3` keeps the first rows
    of each parent's list, for every parent."""
    registry = reader.registry
    target = resolve(registry, resource, relationship).target
    keys = parse_sort(sort)
    private = any(target.attribute(name).private for name, _ in keys)  # type: ignore[union-attr]
    shaped = Shaped(
        resource,
        {
            "": Ask((registry[resource].key.name,)),
            relationship: Ask((target.key.name,), keys, 3),
        },
        extra={"limit": "500"},
    )
    response = await reader.client.get(
        f"/{resource}", params=shaped.params(), headers=BEARER if private else None
    )
    assert response.status_code == 200, response.text
    check_objects(
        reader.reference, shaped, "", response.json()["data"], reader.reference.keys(resource)
    )


def test_the_sorts_cover_private_nullable_and_tie_prone_attributes() -> None:
    """Between them the embedded lists sort by a private, a nullable, a boolean, an enum and
    a text attribute."""
    sorted_by = {
        resolve(s.registry, r, rel).target.attribute(name.lstrip("-"))
        for s, r, rel, sort in SORTS
        for name in sort.split(",")
    }
    assert any(a is not None and a.private for a in sorted_by)
    assert any(a is not None and a.nullable for a in sorted_by)
    assert {a.codec.name for a in sorted_by if a is not None} >= {"boolean", "enum", "string"}


# --- 3. count[path] of a relationship not included: one statement, one table --------------


def counted_cases() -> list[tuple[Schema, str, str]]:
    """Each to-many relationship counted on the primary level, and below each include."""
    cases: list[tuple[Schema, str, str]] = []
    for schema, resource in resource_cases():
        for join in schema.registry[resource].relationships:
            if join.many:
                cases.append((schema, resource, join.name))
            cases.extend(
                (schema, resource, f"{join.name}.{nested.name}")
                for nested in join.target.relationships
                if nested.many
            )
    return cases


@pytest.mark.parametrize(("schema", "resource", "path"), counted_cases(), ids=ids)
async def test_counting_a_path_not_included_reads_only_the_junction_or_the_target(
    reader: ReadSide, schema: Schema, resource: str, path: str
) -> None:
    registry = reader.registry
    levels = {"": Ask((registry[resource].key.name,))}
    if parent_of(path):
        levels[parent_of(path)] = Ask((served_at(registry, resource, parent_of(path)).key.name,))
    shaped = Shaped(resource, levels, (path,), {"limit": "500"})
    with recording(reader.app) as log:
        response = await reader.client.get(f"/{resource}", params=shaped.params())
    assert response.status_code == 200, response.text
    check_statements(registry, shaped, log.statements)
    check_objects(
        reader.reference, shaped, "", response.json()["data"], reader.reference.keys(resource)
    )
    join = resolve(registry, resource, path)
    (count,) = [s for s in log.statements if is_count(s)]
    source = served_at(registry, resource, parent_of(path)).table.name
    if join.secondary is not None:
        assert names_table(count, join.secondary.name), count
        assert not names_table(count, join.target.table.name), count
    else:
        assert names_table(count, join.target.table.name), count
    assert source == join.target.table.name or not names_table(count, source), count


# --- 4. refusals: 400 (403 for a private sort without a token), before any SQL -------------


@dataclass(frozen=True)
class Refusal:
    """A read that must be refused; the problem names its last parameter (`blame`)."""

    schema: Schema
    resource: str
    label: str
    params: Pairs
    status: int = 400
    blame: bool = True
    list_only: bool = False  # names the page's `limit`, which an item does not take

    def __str__(self) -> str:
        return f"{self.schema}-{self.resource}-{self.label}"


Case = tuple[str, Pairs]  # (label, parameters)
LIMITS_REFUSED = ("0", str(MAX_LIMIT + 1), "-1", "abc", "1.5", "")


def to_many_cases(join: Join) -> list[Case]:
    """Refused around one to-many relationship: per-path parameters on a path not included,
    bad sort keys, limits and flags, a parameter twice, malformed brackets."""
    target, name = join.target, join.name
    key, attribute = target.key.name, sort_attribute(target).name
    sort, limit, count = f"sort[{name}]", f"limit[{name}]", f"count[{name}]"
    include = ("include", name)
    cases: list[Case] = [
        ("sort-not-included", ((sort, key),)),
        ("limit-not-included", ((limit, "1"),)),
        ("fields-not-included", ((f"fields[{name}]", key),)),
        ("sort-unknown", (include, (sort, "nope"))),
        ("sort-unknown-second", (include, (sort, f"{key},-nope"))),
        ("sort-empty", (include, (sort, ""))),
        ("sort-both-ways", (include, (sort, f"{key},-{key}"))),
        ("sort-twice", (include, (sort, attribute), (sort, attribute))),
        ("limit-twice", (include, (limit, "1"), (limit, "1"))),
        ("limit-twice-spelled", (include, (limit, "1"), (f"limit[ {name} ]", "1"))),
        ("count-twice", ((count, "true"), (count, "false"))),
        ("sort-no-path", (include, ("sort[]", key))),
        ("limit-two-brackets", (include, (f"limit[{name}][x]", "1"))),
        ("count-unknown-below", (include, (f"count[{name}.nope]", "true"))),
    ]
    cases += [(f"limit={bad}", (include, (limit, bad))) for bad in LIMITS_REFUSED]
    cases += [(f"count={bad}", ((count, bad),)) for bad in ("yes", "1", "")]
    for other in target.relationships:
        nested = f"{name}.{other.name}"
        cases.append((f"sort-by-{other.name}", (include, (sort, other.name))))
        for family, value in (("sort", other.target.key.name), ("limit", "1")):
            cases.append(
                (f"{family}-{nested}-not-included", (include, (f"{family}[{nested}]", value)))
            )
        if other.many:
            cases.append((f"count-{nested}-level-not-returned", ((f"count[{nested}]", "true"),)))
        else:
            cases.append((f"count-{nested}-to-one", (include, (f"count[{nested}]", "true"))))
    unsortable = [a.name for a in target.attributes if not a.codec.sortable]
    for column in [*unsortable, *forbidden_columns(target)]:
        cases.append((f"sort-by-{column}", (include, (sort, column))))
    return cases


def to_one_cases(join: Join) -> list[Case]:
    """Refused around one to-one relationship: it embeds an object, not a list."""
    name, include = join.name, ("include", join.name)
    cases: list[Case] = [
        ("sort-to-one", (include, (f"sort[{name}]", join.target.key.name))),
        ("limit-to-one", (include, (f"limit[{name}]", "1"))),
        ("count-to-one", ((f"count[{name}]", "true"),)),
        ("count-to-one-included", (include, (f"count[{name}]", "true"))),
    ]
    for other in join.target.relationships:
        if other.many:
            nested = f"{name}.{other.name}"
            cases.append((f"count-{nested}-not-returned", ((f"count[{nested}]", "true"),)))
    return cases


def resource_refusals(schema: Schema, resource: Resource) -> list[Refusal]:
    """The cases of one resource's reads (`count[path]=false` is checked like `true`)."""
    attribute = one_public_attribute(resource).name

    def refusal(label: str, params: Pairs, **more: Any) -> Refusal:
        return Refusal(schema, resource.name, label, params, **more)

    cases = [
        refusal("count-unknown", (("count[nope]", "true"),)),
        refusal(f"count-{attribute}", ((f"count[{attribute}]", "true"),)),
        refusal("count-unknown-false", (("count[nope]", "false"),)),
    ]
    for join in resource.relationships:
        name, include = join.name, ("include", join.name)
        if not join.many:
            cases += [refusal(f"{name}-{label}", p) for label, p in to_one_cases(join)]
            flag = ((f"count[{name}]", "false"),)
            cases.append(refusal(f"{name}-count-to-one-false", flag))
            continue
        cases += [refusal(f"{name}-{label}", p) for label, p in to_many_cases(join)]
        cut = str(MAX_EMBEDDED_ROWS // MAX_LIMIT + 1)  # limit x limit[path] one cut too many
        bound = (include, ("limit", str(MAX_LIMIT)), (f"limit[{name}]", cut))
        cases.append(refusal(f"{name}-bound", bound, blame=False, list_only=True))
        for private in (a for a in join.target.attributes if a.private and a.codec.sortable):
            params = (include, (f"sort[{name}]", f"-{private.name}"))
            cases.append(refusal(f"{name}-sort-by-private-{private.name}", params, status=403))
    return cases


def refusals() -> list[Any]:
    """Every case as `pytest.param(schema, case)`."""
    return [
        pytest.param(case.schema, case, id=str(case))
        for schema in SCHEMAS
        for resource in schema.registry.values()
        for case in resource_refusals(schema, resource)
    ]


def fullest(reference: Reference, resource: str, relationship: str) -> Any:
    """The parent with the most rows through `relationship`."""
    links = reference.links[(resource, relationship)]
    return max(links, key=lambda k: (len(links[k]), str(k)))


def endpoints(reader: ReadSide, case: Refusal) -> list[str]:
    """The list, an item, and every sub-collection whose rows are this resource."""
    reference = reader.reference
    paths = [f"/{case.resource}"]
    if case.list_only:
        return paths
    paths.append(path_of(reader.registry[case.resource], reference.keys(case.resource)[0]))
    for source in reader.registry.values():
        for join in source.relationships:
            if join.many and join.target.name == case.resource:
                parent = fullest(reference, source.name, join.name)
                paths.append(f"{path_of(source, parent)}/{join.name}")
    return paths


@pytest.mark.parametrize(("schema", "case"), refusals())
async def test_a_bad_per_path_parameter_is_refused_before_any_sql(
    reader: ReadSide, schema: Schema, case: Refusal
) -> None:
    """On the list, an item and every sub-collection of the resource: a problem document
    naming the parameter, and no statement at all (not even a sub-collection's parent
    check)."""
    for path in endpoints(reader, case):
        with recording(reader.app) as log:
            response = await reader.client.get(path, params=case.params)
        document = problem(response, case.status)
        assert len(log) == 0, (path, log.statements)
        if case.blame:
            blamed = [e.get("parameter") for e in document.get("errors", [])]
            assert case.params[-1][0] in blamed, (path, document)


# --- 5. items and sub-collections take the per-path parameters ----------------------------


@pytest.mark.parametrize(("schema", "resource", "chain"), CHAINS, ids=ids)
async def test_an_item_takes_sort_limit_and_count_per_path(
    reader: ReadSide, schema: Schema, resource: str, chain: Shape
) -> None:
    """The parent with the most related rows on the chain's first link, and one with none
    (where the seed has one): at most one statement more than the list form."""
    registry, reference = reader.registry, reader.reference
    links = reference.links[(resource, chain[0])]
    parents = [fullest(reference, resource, chain[0])] if links else []
    parents += [key for key in reference.keys(resource) if key not in links][:1]
    assert parents
    shaped = shaped_read(registry, resource, chain, cut=CUT)
    for parent in parents:
        with recording(reader.app) as log:
            response = await reader.client.get(
                path_of(registry[resource], parent), params=shaped.params()
            )
        assert response.status_code == 200, response.text
        assert shaped.statements <= len(log) <= shaped.statements + 1, log.statements
        check_objects(reference, shaped, "", [response.json()["data"]], [parent])


SUB_COLLECTION_CHAINS = [
    (schema, resource, (relationship, *chain))
    for schema, resource, relationship in TO_MANY
    for chain in [
        (),
        *to_many_chains(
            schema.registry, resolve(schema.registry, resource, relationship).target.name
        ),
    ]
]


@pytest.mark.parametrize(("schema", "resource", "chain"), SUB_COLLECTION_CHAINS, ids=ids)
async def test_a_sub_collection_takes_sort_limit_and_count_per_path(
    reader: ReadSide, schema: Schema, resource: str, chain: Shape
) -> None:
    """`GET /{resource}/{id}/{relationship}` shapes the lists of its rows as a list does (or
    only counts them): at most one statement more than the list form (the parent check)."""
    registry, reference = reader.registry, reader.reference
    relationship, *included = chain
    target = resolve(registry, resource, relationship).target
    parent = fullest(reference, resource, relationship)
    shaped = shaped_read(registry, target.name, tuple(included), cut=CUT, limit="500")
    with recording(reader.app) as log:
        response = await reader.client.get(
            f"{path_of(registry[resource], parent)}/{relationship}", params=shaped.params()
        )
    assert response.status_code == 200, response.text
    assert shaped.statements <= len(log) <= shaped.statements + 1, log.statements
    rows = sorted(reference.related(resource, relationship, parent))
    check_objects(reference, shaped, "", response.json()["data"], rows)


# --- 6. canonical links and cache keys; cached counts after a write -----------------------


@pytest.mark.parametrize(("schema", "resource", "relationship"), TO_MANY, ids=ids)
async def test_links_next_keeps_the_embedded_lists_shape_on_every_page(
    reader: ReadSide, schema: Schema, resource: str, relationship: str
) -> None:
    """Following `links.next` from a page of 7 walks every row once, each page sorted, cut
    and counted as the first was."""
    registry, reference = reader.registry, reader.reference
    shaped = shaped_read(registry, resource, (relationship,), cut=CUT, limit="7")
    response = await reader.client.get(f"/{resource}", params=shaped.params())
    everything, pages = reference.keys(resource), 0
    seen = 0
    while True:
        assert response.status_code == 200, (response.request.url, response.text)
        page = response.json()
        check_objects(reference, shaped, "", page["data"], everything[seen : seen + 7])
        seen, pages = seen + len(page["data"]), pages + 1
        if page["links"]["next"] is None:
            break
        assert pages < 100
        response = await reader.client.get(page["links"]["next"])
    assert seen == len(everything)
    assert pages == -(-len(everything) // 7)


@pytest.fixture
async def cached_reader(reader: ReadSide, make_client: MakeClient) -> httpx.AsyncClient:
    """A memory-cached app of this test's own over the shared read database."""
    return await make_client(reader.url, cache_url="memory://", **reader.schema.settings())


def spellings(registry: Registry, resource: str, relationship: str) -> list[tuple[Pairs, Pairs]]:
    """Requests that mean the same, in pairs: the sort's implicit final key spelled out,
    `count[path]=false` given, a default `sort[path]` given, the parameters in another order
    with spaces around names (in brackets too) and a repeated sort key."""
    target = resolve(registry, resource, relationship).target
    key, attribute = target.key.name, sort_attribute(target).name
    base = (("fields", registry[resource].key.name), ("include", relationship))
    sort, limit, count = f"sort[{relationship}]", f"limit[{relationship}]", f"count[{relationship}]"
    return [
        ((*base, (sort, f"{attribute},{key}")), (*base, (sort, attribute))),
        ((*base, (count, "false"), (limit, "2")), (*base, (limit, "2"))),
        ((*base, (sort, key), (limit, "1")), (*base, (limit, "1"))),
        (
            (*base, (count, "true"), (sort, f"-{attribute}"), (limit, "2")),
            (
                (f"limit[ {relationship} ]", "2"),
                (sort, f" -{attribute} , -{attribute}"),
                (count, "true"),
                *base[::-1],
            ),
        ),
    ]


def different(registry: Registry, resource: str, relationship: str) -> list[tuple[Pairs, Pairs]]:
    """Requests that differ in meaning only by a per-path parameter, in pairs."""
    attribute = sort_attribute(resolve(registry, resource, relationship).target).name
    base = (("fields", registry[resource].key.name), ("include", relationship))
    sort, limit, count = f"sort[{relationship}]", f"limit[{relationship}]", f"count[{relationship}]"
    return [
        ((*base, (sort, attribute)), (*base, (sort, f"-{attribute}"))),
        ((*base, (limit, "1")), (*base, (limit, "2"))),
        (base, (*base, (count, "true"))),
        (base, (*base, (limit, "100"))),
    ]


@pytest.mark.parametrize(("schema", "resource", "relationship"), TO_MANY, ids=ids)
async def test_equal_meanings_share_one_cache_entry_and_one_next_link(
    reader: ReadSide,
    cached_reader: httpx.AsyncClient,
    schema: Schema,
    resource: str,
    relationship: str,
) -> None:
    """The second spelling of a meaning is a cache hit with the same body and ETag (on a
    list and on an item), and its `links.next` is the first's; a different meaning misses."""
    registry = reader.registry
    for page, (first, second) in enumerate(spellings(registry, resource, relationship), 3):
        sized = (("limit", str(page)),)  # each pair a page size of its own: its first misses
        one = await cached_reader.get(f"/{resource}", params=first + sized)
        other = await cached_reader.get(f"/{resource}", params=second + sized)
        assert one.status_code == other.status_code == 200, (one.text, other.text)
        assert (one.headers["x-cache"], other.headers["x-cache"]) == ("MISS", "HIT"), second
        assert one.content == other.content
        assert one.headers["etag"] == other.headers["etag"]
        uncached = await reader.client.get(f"/{resource}", params=second + sized)
        assert uncached.json()["links"] == one.json()["links"], (first, second)
        item = path_of(registry[resource], fullest(reader.reference, resource, relationship))
        one = await cached_reader.get(item, params=first)
        other = await cached_reader.get(item, params=second)
        assert (one.headers["x-cache"], other.headers["x-cache"]) == ("MISS", "HIT"), second
        assert one.content == other.content
    for page, (first, second) in enumerate(different(registry, resource, relationship), 20):
        sized = (("limit", str(page)),)
        one = await cached_reader.get(f"/{resource}", params=first + sized)
        other = await cached_reader.get(f"/{resource}", params=second + sized)
        assert (one.headers["x-cache"], other.headers["x-cache"]) == ("MISS", "MISS"), second


def reverse_of(join: Join) -> Join | None:
    """The many-to-many relationship that walks the same junction the other way."""
    return next(
        (
            other
            for other in join.target.relationships
            if other.kind is Kind.MANY_TO_MANY and other.secondary is join.secondary
        ),
        None,
    )


@pytest.fixture
async def cached_writer(
    schema: Schema, databases: DatabaseFactory, make_client: MakeClient
) -> AsyncIterator[WriteSide]:
    side = await make_write_side(schema, databases, make_client, cache_url="memory://")
    yield side
    side.app.state.services.writer.hasher.close()
    await side.app.state.services.cache.close()


async def relink(side: WriteSide, join: Join, reference: Reference, parent: Any) -> Any:
    """Link one more target row to `parent` through `join`, writing from the target's side
    where it can (so only the link's own table changes for the counted level); the target
    key. A many-to-many write reads back its own embedded list shaped per path."""
    source, target = join.source, join.target
    linked = set(reference.related(source.name, join.name, parent))
    other = next(k for k in reference.keys(target.name) if k not in linked)
    if join.kind is Kind.ONE_TO_MANY:
        foreign = next(a for a in target.attributes if a.column is join.child_key)
        local = next(a for a in source.attributes if a.column is join.parent_key)
        value = json_of(local, reference.rows[source.name][parent][local.name])
        patched = await side.client.patch(
            path_of(target, other), json={foreign.name: value}, headers=BEARER
        )
        assert patched.status_code == 200, patched.text
        return other
    reverse = reverse_of(join)
    assert reverse is not None
    assert reverse.ids_field is not None
    now = [*reference.related(target.name, reverse.name, other), parent]
    shape = {
        "fields": target.key.name,
        "include": reverse.name,
        f"fields[{reverse.name}]": source.key.name,
        f"sort[{reverse.name}]": f"-{source.key.name}",
        f"limit[{reverse.name}]": "1",
        f"count[{reverse.name}]": "true",
    }
    patched = await side.client.patch(
        path_of(target, other),
        params=shape,
        json={reverse.ids_field: [json_of(source.key, k) for k in now]},
        headers=BEARER,
    )
    assert patched.status_code == 200, patched.text
    top = max(now)
    assert patched.json()["data"] == {
        target.key.name: json_of(target.key, other),
        reverse.name: [{source.key.name: json_of(source.key, top)}],
        f"{reverse.name}_count": len(now),
    }
    return other


def counting_pages(registry: Registry, join: Join, parent: Any) -> dict[str, str]:
    """Reads that count `join`, each depending on the link's table (the junction, or the
    target's foreign key) for its count: not included, included and cut, on an item, and
    below an include of another resource."""
    source, name = join.source, join.name
    key, counted = source.key.name, f"count[{name}]=true"
    pages = {
        "not included": f"/{source.name}?fields={key}&{counted}&limit=500",
        "cut": f"/{source.name}?fields={key}&include={name}&fields[{name}]="
        f"{join.target.key.name}&limit[{name}]=1&{counted}&limit=500",
        "item": f"{path_of(source, parent)}?fields={key}&{counted}",
    }
    above = next((r, o) for r in registry.values() for o in r.relationships if o.target is source)
    resource, via = above
    pages["below an include"] = (
        f"/{resource.name}?fields={resource.key.name}&include={via.name}&fields[{via.name}]="
        f"{key}&count[{via.name}.{name}]=true&limit=500"
    )
    return pages


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_a_cached_count_is_fresh_after_a_write_to_its_link(
    cached_writer: WriteSide, schema: Schema
) -> None:
    """For each to-many relationship, reads counting it are cached; a write that adds a link
    (through the junction from the other side, e.g. PATCH /users/{id} group_ids for
    /groups?count[users]=true; or the target's foreign key) leaves none of them stale."""
    side, registry = cached_writer, cached_writer.registry
    for _, resource, relationship in [c for c in TO_MANY if c[0] is schema]:
        join = resolve(registry, resource, relationship)
        before = build_reference(registry, await side.tables())
        parent = min(
            before.keys(resource),
            key=lambda k: (len(before.related(resource, relationship, k)), str(k)),
        )
        pages = counting_pages(registry, join, parent)
        bodies = {}
        for page in pages.values():
            assert (await side.client.get(page)).headers["x-cache"] == "MISS", page
            hit = await side.client.get(page)
            assert hit.headers["x-cache"] == "HIT", page
            bodies[page] = hit.content
        await relink(side, join, before, parent)
        after = build_reference(registry, await side.tables())
        grown = len(after.related(resource, relationship, parent))
        assert grown == len(before.related(resource, relationship, parent)) + 1
        for label, page in pages.items():
            served = await side.client.get(page)
            fresh = await side.client.get(page, headers=NO_CACHE)
            assert served.status_code == fresh.status_code == 200, served.text
            assert served.content == fresh.content, f"{label}: {page} is stale"
            assert served.content != bodies[page], f"{label}: {page} did not change"
            if label == "below an include":
                continue
            data = served.json()["data"]
            key = registry[resource].key.name
            items = data if isinstance(data, list) else [data]
            counts = {str(i[key]): i[f"{relationship}_count"] for i in items}
            assert counts[after.key_text(resource, parent)] == grown, page


# --- the embedded-row bound and budget; write read-backs ----------------------------------


def bound_cases() -> list[tuple[Schema, str, Shape, int | None]]:
    """Each to-many chain: at the largest page, or at 10 when two cuts multiply; a single
    to-many path also at the default page size."""
    cases: list[tuple[Schema, str, Shape, int | None]] = []
    for schema, resource, chain in CHAINS:
        nested = all(resolve(schema.registry, resource, path).many for path in chain[:-1])
        cases.append((schema, resource, chain, 10 if len(chain) > 1 and nested else MAX_LIMIT))
        if len(chain) == 1:
            cases.append((schema, resource, chain, None))
    return cases


def bound(registry: Registry, resource: str, chain: Shape, cuts: dict[str, int], page: int) -> int:
    """The most rows the paths may embed: for each, the page size times the cut of every
    to-many link on its way (a to-one link one row per parent)."""
    total = 0
    for path in chain:
        rows = page
        for prefix in itertools.accumulate(path.split("."), below):
            rows *= cuts[prefix] if resolve(registry, resource, prefix).many else 1
        total += rows
    return total


@pytest.mark.parametrize(("schema", "resource", "chain", "page"), bound_cases(), ids=ids)
async def test_limit_times_limit_path_above_the_embedded_row_limit_is_400_before_sql(
    reader: ReadSide, schema: Schema, resource: str, chain: Shape, page: int | None
) -> None:
    """The largest last cut the bound allows is served; one more is refused up front."""
    registry = reader.registry
    rows = page if page is not None else DEFAULT_LIMIT
    cuts = {path: 10 for path in chain if resolve(registry, resource, path).many}
    deepest = chain[-1]

    def allows(cut: int) -> int:
        return bound(registry, resource, chain, cuts | {deepest: cut}, rows)

    cut = max(c for c in range(1, MAX_LIMIT + 1) if allows(c) <= MAX_EMBEDDED_ROWS)
    assert cut < MAX_LIMIT
    assert allows(cut + 1) > MAX_EMBEDDED_ROWS
    for value, status in ((cut, 200), (cut + 1, 400)):
        params = {"include": ",".join(chain), "fields": registry[resource].key.name}
        params |= {f"limit[{path}]": str(c) for path, c in (cuts | {deepest: value}).items()}
        if page is not None:
            params["limit"] = str(page)
        with recording(reader.app) as log:
            response = await reader.client.get(f"/{resource}", params=params)
        assert response.status_code == status, (params, response.text)
    # The sub-collection of the largest cut list pages what the request wanted embedded.
    detail = problem(response, 400)["detail"]
    endpoint = re.search(r"page through /(\w+)/\{id\}/(\w+) instead$", detail)
    assert endpoint is not None, detail
    relation = registry[endpoint.group(1)].relationship(endpoint.group(2))
    assert relation is not None
    assert relation.many
    assert len(log) == 0, log.statements


@pytest.mark.parametrize(("schema", "resource", "relationship"), TO_MANY, ids=ids)
async def test_the_embedded_row_budget_counts_the_rows_returned(
    reader: ReadSide, make_client: MakeClient, schema: Schema, resource: str, relationship: str
) -> None:
    """With the limit set to the rows a whole page embeds: the whole list is served; with one
    row less it is a 400 pointing at the sub-collection, while a cut list (its rows as cut,
    not as stored) and a count (no rows) are served."""
    reference = reader.reference
    parents = reference.keys(resource)
    embedded = sum(len(reference.related(resource, relationship, k)) for k in parents)
    assert embedded > len(parents), "the seed embeds more rows than parents"
    page = {"fields": reader.registry[resource].key.name, "limit": str(len(parents))}
    whole = page | {"include": relationship}
    for rows, status in ((embedded, 200), (embedded - 1, 400)):
        client = await make_client(
            reader.url, cache_url="none", max_embedded_rows=rows, **schema.settings()
        )
        response = await client.get(f"/{resource}", params=whole)
        assert response.status_code == status, response.text
    document = problem(response, 400)
    assert f"/{resource}/{{id}}/{relationship}" in document["detail"], document
    cut = (embedded - 1) // len(parents)
    served = await client.get(f"/{resource}", params=whole | {f"limit[{relationship}]": str(cut)})
    assert served.status_code == 200, served.text
    counted = await client.get(f"/{resource}", params=page | {f"count[{relationship}]": "true"})
    assert counted.status_code == 200, counted.text


@pytest.mark.parametrize("schema", SCHEMAS, ids=str)
async def test_a_write_with_a_bad_per_path_parameter_writes_nothing(
    refuser: WriteSide, schema: Schema
) -> None:
    """A write's read-back takes the per-path parameters; a bad one is a 400 before any SQL,
    and nothing is written."""
    registry, reference = refuser.registry, refuser.reference
    _, resource, relationship = next(c for c in TO_MANY if c[0] is schema)
    served = registry[resource]
    bodies = Bodies(reference)
    key = reference.keys(resource)[0]
    change = next(
        a for a in served.attributes if a.writable and a is not served.key and not a.private
    )
    bad: list[Pairs] = [
        (("include", relationship), (f"limit[{relationship}]", "0")),
        (("include", relationship), (f"sort[{relationship}]", "nope")),
        ((f"sort[{relationship}]", served.key.name),),
        ((f"count[{relationship}]", "maybe"),),
    ]
    for params in bad:
        with recording(refuser.app) as log:
            patched = await refuser.client.patch(
                path_of(served, key),
                params=params,
                json={change.name: bodies.value(change)},
                headers=BEARER,
            )
            created = await refuser.client.post(
                f"/{resource}", params=params, json=bodies.create(served), headers=BEARER
            )
        problem(patched, 400)
        problem(created, 400)
        assert len(log) == 0, (params, log.statements)
    assert snapshot(await refuser.tables()) == snapshot(refuser.before)
