"""Demo data: deterministic, sized as asked, and shaped to exercise the query language."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db import make_engine
from service.models import Group, Permission, User, group_permission, user_group
from service.seed import (
    DEMO_GROUPS,
    DEMO_USERS,
    MAX_GROUPS_PER_USER,
    MAX_PERMISSIONS_PER_GROUP,
    SeedError,
    build_rows,
    is_empty,
    seed,
)
from service.settings import Settings

if TYPE_CHECKING:
    from conftest import DatabaseFactory

SIZES = {"users": 300, "groups": 25, "permissions": 12}


def open_engine(url: str) -> AsyncEngine:
    return make_engine(Settings(database_url=url))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = open_engine(database_url)
    yield engine
    await engine.dispose()


async def dump(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    tables = (User, Group, Permission)
    links = ((user_group, "user_id", "group_id"), (group_permission, "group_id", "permission_id"))
    async with engine.connect() as connection:
        rows = {
            model.__tablename__: [
                tuple(row)
                for row in await connection.execute(select(model.__table__).order_by("id"))
            ]
            for model in tables
        }
        for table, *keys in links:
            result = await connection.execute(select(table).order_by(*keys))
            rows[table.name] = [tuple(row) for row in result]
    return rows


async def test_the_same_seed_gives_identical_rows(databases: DatabaseFactory) -> None:
    dumps = []
    for _ in range(2):
        engine = open_engine(await databases.migrated())
        try:
            await seed(engine, **SIZES, seed=7)
            dumps.append(await dump(engine))
        finally:
            await engine.dispose()

    assert dumps[0] == dumps[1]
    assert len(dumps[0]["auth_user"]) == SIZES["users"]


def test_a_different_seed_gives_different_rows() -> None:
    first = build_rows(**SIZES, seed=1)
    assert build_rows(**SIZES, seed=1) == first
    assert build_rows(**SIZES, seed=2) != first


async def test_counts_are_as_asked_and_reported(engine: AsyncEngine) -> None:
    report = await seed(engine, **SIZES)

    async with engine.connect() as connection:

        async def count(table: Any) -> int | None:
            return await connection.scalar(select(func.count()).select_from(table))

        assert await count(User) == report.users == SIZES["users"]
        assert await count(Group) == report.groups == SIZES["groups"]
        assert await count(Permission) == report.permissions == SIZES["permissions"]
        assert await count(user_group) == report.memberships > 0
        assert await count(group_permission) == report.grants > 0
    assert report.seconds > 0


async def test_links_stay_within_bounds(engine: AsyncEngine) -> None:
    await seed(engine, **SIZES)
    rows = await dump(engine)

    groups_per_user = Counter(user_id for user_id, _ in rows["auth_user_group"])
    permissions_per_group = Counter(group_id for group_id, _ in rows["auth_group_permission"])
    assert max(groups_per_user.values()) <= MAX_GROUPS_PER_USER
    assert max(permissions_per_group.values()) <= MAX_PERMISSIONS_PER_GROUP
    # Some owners have no links at all: 0 is part of the range.
    assert len(groups_per_user) < SIZES["users"]
    assert len(permissions_per_group) < SIZES["groups"]


async def test_the_demo_rows_come_first(engine: AsyncEngine) -> None:
    await seed(engine, **SIZES)
    rows = await dump(engine)

    names = [row[1] for row in rows["auth_user"]]
    assert names[: len(DEMO_USERS)] == [name for name, _, _ in DEMO_USERS]
    assert names[len(DEMO_USERS)] == f"user{len(DEMO_USERS) + 1:05d}"
    alice_groups = {group_id for user_id, group_id in rows["auth_user_group"] if user_id == 1}
    assert alice_groups == {1}  # admins
    admins = {user_id for user_id, group_id in rows["auth_user_group"] if group_id == 1}
    assert admins == {1}
    assert [row[1] for row in rows["auth_group"][: len(DEMO_GROUPS)]] == [
        name for name, _, _ in DEMO_GROUPS
    ]


def test_names_fit_and_emails_are_unique_at_scale() -> None:
    rows = build_rows(users=120_000, groups=0, permissions=0, seed=3)

    assert max(len(row["name"]) for row in rows.users) <= 16
    assert len({row["email_address"] for row in rows.users}) == 120_000
    assert len({row["name"] for row in rows.users}) == 120_000
    assert rows.memberships == []


def test_values_exercise_the_query_language() -> None:
    users = build_rows(users=2_000, groups=0, permissions=0, seed=42).users
    display = [row["display_name"] for row in users]
    created = [row["created"] for row in users]
    texts = [name for name in display if name is not None]

    assert 0.05 < display.count(None) / len(display) < 0.15
    assert len(set(texts)) < len(texts)  # ties in display_name
    assert len(set(created)) < len(created)  # ties in created
    assert all(c.tzinfo is None and 2023 <= c.year <= 2025 for c in created)
    assert any("%" in name for name in texts)
    assert any("_" in name for name in texts)
    assert any(set(name) & set("éßÖë") for name in texts)
    assert any(name != name.lower() and name != name.upper() for name in texts)
    assert all(row["password"] is None for row in users)


@pytest.mark.parametrize(
    ("users", "groups", "permissions"),
    [(0, 0, 0), (1, 1, 1), (4, 2, 3), (10, 0, 5), (40, 8, 0)],
)
async def test_any_sizes_seed_cleanly(
    engine: AsyncEngine, users: int, groups: int, permissions: int
) -> None:
    report = await seed(engine, users=users, groups=groups, permissions=permissions)

    assert (report.users, report.groups, report.permissions) == (users, groups, permissions)
    rows = await dump(engine)
    assert len(rows["auth_user"]) == users
    assert len(rows["auth_group"]) == groups
    assert len(rows["auth_permission"]) == permissions


async def test_seeding_refuses_a_database_with_data(engine: AsyncEngine) -> None:
    assert await is_empty(engine)
    await seed(engine, users=5, groups=2, permissions=2)
    assert not await is_empty(engine)

    with pytest.raises(SeedError):
        await seed(engine, users=5, groups=2, permissions=2)


async def test_new_rows_get_fresh_ids_after_seeding(engine: AsyncEngine) -> None:
    await seed(engine, users=20, groups=3, permissions=4)

    async with engine.begin() as connection:
        result = await connection.execute(
            insert(User).returning(User.id), [{"name": "zed", "email_address": "zed@example.com"}]
        )
        assert result.scalar_one() == 21
        group = await connection.execute(insert(Group).returning(Group.id), [{"name": "new"}])
        assert group.scalar_one() == 4
