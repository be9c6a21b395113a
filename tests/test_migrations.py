"""The Alembic revisions build exactly the models' schema, both ways, on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from service.db import make_engine
from service.migrations import compare_to_models, run_downgrade, run_upgrade
from service.models import Group, Permission, User, group_permission, user_group
from service.settings import Settings

if TYPE_CHECKING:
    from conftest import DatabaseFactory

AUTH_TABLES = {
    "auth_user",
    "auth_group",
    "auth_permission",
    "auth_user_group",
    "auth_group_permission",
}


async def table_names(database_url: str) -> set[str]:
    def names(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(names)
    finally:
        await engine.dispose()


async def test_upgrade_from_empty_matches_the_models(databases: DatabaseFactory) -> None:
    url = await databases.empty()
    await asyncio.to_thread(run_upgrade, url)

    assert await table_names(url) == {*AUTH_TABLES, "alembic_version"}
    assert await asyncio.to_thread(compare_to_models, url) == []


async def test_downgrade_to_base_and_back_round_trips(databases: DatabaseFactory) -> None:
    url = await databases.empty()
    await asyncio.to_thread(run_upgrade, url)

    await asyncio.to_thread(run_downgrade, url, "base")
    assert await table_names(url) == {"alembic_version"}
    missing = await asyncio.to_thread(compare_to_models, url)
    assert {diff[1].name for diff in missing if diff[0] == "add_table"} == set(AUTH_TABLES)

    await asyncio.to_thread(run_upgrade, url)
    assert await table_names(url) == {*AUTH_TABLES, "alembic_version"}
    assert await asyncio.to_thread(compare_to_models, url) == []


async def test_each_revision_downgrades_and_upgrades_alone(databases: DatabaseFactory) -> None:
    url = await databases.empty()
    await asyncio.to_thread(run_upgrade, url)
    await asyncio.to_thread(run_downgrade, url, "0001")
    assert await asyncio.to_thread(compare_to_models, url) != []
    await asyncio.to_thread(run_upgrade, url)
    assert await asyncio.to_thread(compare_to_models, url) == []


async def test_upgrade_at_head_is_a_no_op(database_url: str) -> None:
    await asyncio.to_thread(run_upgrade, database_url)
    assert await asyncio.to_thread(compare_to_models, database_url) == []


async def test_sqlite_connections_enforce_foreign_keys_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}"
    await asyncio.to_thread(run_upgrade, url)
    engine = make_engine(Settings(database_url=url))
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
            assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
    finally:
        await engine.dispose()


async def test_deleting_a_row_cascades_to_its_links(database_url: str) -> None:
    engine = make_engine(Settings(database_url=database_url))
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(User), [{"id": 1, "name": "alice", "email_address": "a@example.com"}]
            )
            await connection.execute(insert(Group), [{"id": 1, "name": "admins"}])
            await connection.execute(insert(Permission), [{"id": 1, "name": "read"}])
            await connection.execute(insert(user_group), [{"user_id": 1, "group_id": 1}])
            await connection.execute(
                insert(group_permission), [{"group_id": 1, "permission_id": 1}]
            )

        async with engine.begin() as connection:
            await connection.execute(delete(User).where(User.id == 1))
            assert await connection.scalar(select(func.count()).select_from(user_group)) == 0
            await connection.execute(delete(Permission).where(Permission.id == 1))
            links = select(func.count()).select_from(group_permission)
            assert await connection.scalar(links) == 0
            assert await connection.scalar(select(func.count()).select_from(Group)) == 1
    finally:
        await engine.dispose()
