"""Deterministic demo data: a few named users, groups and permissions, then generated bulk.

The same sizes and seed give the same rows on every backend. Rows go in with Core
`executemany` in chunks inside one transaction; the ORM's unit of work would cost a
round of bookkeeping per row. Passwords stay NULL: argon2id is deliberately slow
(tens of milliseconds a hash), so 100,000 of them would take minutes. Set one through
`PATCH /users/{id}` when a demo needs it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.models import Group, Permission, User, group_permission, user_group

# What `serve` puts into an empty SQLite database so the first visit to /docs has data.
DEMO_SIZES = {"users": 200, "groups": 20, "permissions": 30}

DEFAULT_SEED = 42
CHUNK_ROWS = 5_000
MAX_GROUPS_PER_USER = 5
MAX_PERMISSIONS_PER_GROUP = 8
NULL_SHARE = 0.1
GRANT_KEYS = ("group_id", "permission_id")
MEMBER_KEYS = ("user_id", "group_id")

# The README's examples rely on these: alice is the one admin, read is everyone's.
DEMO_PERMISSIONS: tuple[tuple[str, str | None], ...] = (
    ("read", "Read any resource"),
    ("edit", "Change existing resources"),
    ("delete", "Delete resources"),
    ("manage", "Manage users, groups and permissions"),
)
DEMO_GROUPS: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("admins", "Administrators", ("read", "edit", "delete", "manage")),
    ("editors", "Editors", ("read", "edit")),
    ("viewers", "Viewers", ("read",)),
)
DEMO_USERS: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("alice", "Alice Liddell", ("admins",)),
    ("bob", "Bob Builder", ("editors",)),
    ("carol", "Carol Danvers", ("editors", "viewers")),
    ("dave", "Dave Lister", ("viewers",)),
    ("erin", None, ()),
    ("frank", "Frank Poole", ("viewers",)),
)

# Few enough names that display_name ties are common; cased and non-ASCII ones exercise
# case-insensitive matching, and `%` / `_` check that LIKE wildcards are escaped.
FIRST_NAMES = (
    "Anna", "anna", "ANNA", "José", "Zoë", "Jürgen", "Öskar", "Ögedei", "Renée", "Chloé",
    "Ingrid", "Mateo", "Priya", "Kenji", "Amara", "Liam", "Noah", "Emma", "Olivia", "Yusuf",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Strauß", "Weiß", "Müller", "Öztürk", "Dupré", "García", "O'Brien", "Nakamura",
    "Kowalski", "Ng", "de la Cruz", "MacDonald", "van Dijk", "Íñiguez", "Lee",
)  # fmt: skip
ODD_NAMES = ("100% Pure", "50%_off", "under_score", "snake_case_fan", "Mr. %", "_lead_")

START = datetime(2023, 1, 1)
SPAN_SECONDS = int((datetime(2026, 1, 1) - START).total_seconds())
# A handful of instants shared by many rows, so sorts by `created` meet exact ties.
TIED_INSTANTS = tuple(START + timedelta(days=d) for d in (0, 181, 365, 400, 730, 1000))


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What a seed run inserted and how long it took."""

    users: int
    groups: int
    permissions: int
    memberships: int
    grants: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"seeded {self.users} users, {self.groups} groups, {self.permissions} permissions, "
            f"{self.memberships} memberships, {self.grants} grants in {self.seconds:.2f}s"
        )


class SeedError(Exception):
    """Seeding refused: the tables already hold data."""


@dataclass(frozen=True, slots=True)
class _Rows:
    users: list[dict[str, Any]]
    groups: list[dict[str, Any]]
    permissions: list[dict[str, Any]]
    memberships: list[dict[str, int]]
    grants: list[dict[str, int]]


async def is_empty(engine: AsyncEngine) -> bool:
    """True when none of the three entity tables holds a row."""
    async with engine.connect() as connection:
        return await _tables_empty(connection)


async def seed(
    engine: AsyncEngine, *, users: int, groups: int, permissions: int, seed: int = DEFAULT_SEED
) -> SeedReport:
    """Fill an empty, migrated database; refuses (SeedError) when it already holds data."""
    if min(users, groups, permissions) < 0:
        raise ValueError("sizes must not be negative")
    started = time.perf_counter()
    rows = build_rows(users=users, groups=groups, permissions=permissions, seed=seed)
    async with engine.begin() as connection:
        if not await _tables_empty(connection):
            raise SeedError("the database already holds data; seed needs empty tables")
        for model, batch in (
            (Permission, rows.permissions),
            (Group, rows.groups),
            (User, rows.users),
        ):
            await _insert_chunked(connection, insert(model), batch)
        await _insert_chunked(connection, insert(group_permission), rows.grants)
        await _insert_chunked(connection, insert(user_group), rows.memberships)
        if connection.dialect.name == "postgresql":
            await _advance_sequences(connection)
    return SeedReport(
        users=len(rows.users),
        groups=len(rows.groups),
        permissions=len(rows.permissions),
        memberships=len(rows.memberships),
        grants=len(rows.grants),
        seconds=time.perf_counter() - started,
    )


def build_rows(*, users: int, groups: int, permissions: int, seed: int) -> _Rows:
    """Every row to insert, as plain dicts; pure, so determinism is testable without a database."""
    rng = random.Random(seed)
    permission_rows = _permissions(rng, permissions)
    group_rows = _groups(rng, groups)
    user_rows = _users(rng, users)
    grants = _named_links(
        {g: ps for g, _, ps in DEMO_GROUPS}, group_rows, permission_rows, GRANT_KEYS
    )
    grants += _random_links(
        rng,
        owners=range(min(groups, len(DEMO_GROUPS)) + 1, groups + 1),
        targets=range(1, permissions + 1),
        most=MAX_PERMISSIONS_PER_GROUP,
        keys=GRANT_KEYS,
    )
    memberships = _named_links(
        {u: gs for u, _, gs in DEMO_USERS}, user_rows, group_rows, MEMBER_KEYS
    )
    # Generated users join generated groups when there are any, so the demo groups keep
    # their few named members.
    first_group = len(DEMO_GROUPS) + 1 if groups > len(DEMO_GROUPS) else 1
    memberships += _random_links(
        rng,
        owners=range(min(users, len(DEMO_USERS)) + 1, users + 1),
        targets=range(first_group, groups + 1),
        most=MAX_GROUPS_PER_USER,
        keys=MEMBER_KEYS,
    )
    return _Rows(user_rows, group_rows, permission_rows, memberships, grants)


def _permissions(rng: random.Random, count: int) -> list[dict[str, Any]]:
    rows = [
        {"id": i, "name": name, "description": description}
        for i, (name, description) in enumerate(DEMO_PERMISSIONS[:count], start=1)
    ]
    for i in range(len(rows) + 1, count + 1):
        rows.append({"id": i, "name": f"perm_{i:05d}", "description": _maybe_text(rng)})
    return rows


def _groups(rng: random.Random, count: int) -> list[dict[str, Any]]:
    rows = [
        {"id": i, "name": name, "display_name": display, "created": START + timedelta(days=i)}
        for i, (name, display, _) in enumerate(DEMO_GROUPS[:count], start=1)
    ]
    for i in range(len(rows) + 1, count + 1):
        rows.append(
            {
                "id": i,
                "name": f"group{i:04d}",
                "display_name": _maybe_text(rng),
                "created": _created(rng),
            }
        )
    return rows


def _users(rng: random.Random, count: int) -> list[dict[str, Any]]:
    rows = [
        _user(i, name, display, START + timedelta(days=i, hours=9), "example.com")
        for i, (name, display, _) in enumerate(DEMO_USERS[:count], start=1)
    ]
    domains = ("example.com", "example.org", "example.net")
    for i in range(len(rows) + 1, count + 1):
        name = f"user{i:05d}"  # 6 digits past 99,999: still well inside varchar(16)
        rows.append(_user(i, name, _maybe_text(rng), _created(rng), rng.choice(domains)))
    return rows


def _user(
    id_: int, name: str, display: str | None, created: datetime, domain: str
) -> dict[str, Any]:
    return {
        "id": id_,
        "name": name,
        "email_address": f"{name}@{domain}",  # unique because the name is
        "display_name": display,
        "password": None,
        "created": created,
    }


def _maybe_text(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < NULL_SHARE:
        return None
    if roll < NULL_SHARE + 0.02:
        return rng.choice(ODD_NAMES)
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _created(rng: random.Random) -> datetime:
    """Naive UTC over 2023-2025; one in twenty lands on a shared instant."""
    if rng.random() < 0.05:
        return rng.choice(TIED_INSTANTS)
    moment = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
    # A quarter carry microseconds, so cursors must keep full precision.
    return moment.replace(microsecond=rng.randrange(1_000_000)) if rng.random() < 0.25 else moment


def _named_links(
    named: dict[str, tuple[str, ...]],
    owners: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    keys: tuple[str, str],
) -> list[dict[str, int]]:
    """The demo rows' links, kept to the targets this run created."""
    target_ids = {row["name"]: row["id"] for row in targets}
    return [
        {keys[0]: owner["id"], keys[1]: target_ids[name]}
        for owner in owners
        for name in named.get(owner["name"], ())
        if name in target_ids
    ]


def _random_links(
    rng: random.Random, *, owners: range, targets: range, most: int, keys: tuple[str, str]
) -> list[dict[str, int]]:
    """Each owner linked to 0..most distinct targets drawn uniformly."""
    return [
        {keys[0]: owner, keys[1]: target}
        for owner in owners
        for target in sorted(rng.sample(targets, rng.randint(0, min(most, len(targets)))))
    ]


async def _tables_empty(connection: AsyncConnection) -> bool:
    for model in (User, Group, Permission):
        if await connection.scalar(select(exists().select_from(model))):
            return False
    return True


async def _insert_chunked(
    connection: AsyncConnection, statement: Any, rows: list[dict[str, Any]]
) -> None:
    for chunk in _chunks(rows, CHUNK_ROWS):
        await connection.execute(statement, chunk)


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def _advance_sequences(connection: AsyncConnection) -> None:
    # The ids were given explicitly, so PostgreSQL's serial sequences never moved; without
    # this the API's first insert would collide with id 1.
    for table in ("auth_user", "auth_group", "auth_permission"):
        await connection.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        )
