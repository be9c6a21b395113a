"""The streaming pair the replica tests stand on: what it promises, checked against itself."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.ops.conftest import asyncpg_dsn
from tests.ops.replication import StopMode, StreamingPair, connect, streaming_pair

DATABASE = "svc_replica"


@pytest.fixture
async def pair() -> AsyncIterator[StreamingPair]:
    """A fresh pair per test with a database holding one table, `item`, on both members."""
    async with streaming_pair() as pair:
        await pair.create_database(DATABASE)
        await primary_execute(pair, "CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL)")
        yield pair


async def primary_execute(pair: StreamingPair, sql: str) -> None:
    async with connect(asyncpg_dsn(pair.primary.url(DATABASE))) as connection:
        await connection.execute(sql)


async def names(url: str) -> list[str]:
    async with connect(asyncpg_dsn(url)) as connection:
        return [row["name"] for row in await connection.fetch("SELECT name FROM item ORDER BY id")]


async def test_a_row_written_on_the_primary_is_read_on_the_replica(pair: StreamingPair) -> None:
    await primary_execute(pair, "INSERT INTO item VALUES (1, 'one')")
    await pair.wait_caught_up()

    # Through the URL exactly as the service's engine takes it.
    engine = create_async_engine(pair.replica.url(DATABASE))
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT name FROM item"))).scalars().all() == [
                "one"
            ]
    finally:
        await engine.dispose()
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        async with connect(asyncpg_dsn(pair.replica.url(DATABASE))) as replica:
            await replica.execute("INSERT INTO item VALUES (2, 'two')")


async def test_paused_replay_hides_new_rows_until_resumed(pair: StreamingPair) -> None:
    await primary_execute(pair, "INSERT INTO item VALUES (1, 'before')")
    await pair.wait_caught_up()
    await pair.pause_replay()

    await primary_execute(pair, "INSERT INTO item VALUES (2, 'during')")
    assert await names(pair.primary.url(DATABASE)) == ["before", "during"]
    with pytest.raises(TimeoutError):
        await pair.wait_caught_up(seconds=0.5)
    assert await names(pair.replica.url(DATABASE)) == ["before"]

    await pair.resume_replay()
    await pair.wait_caught_up()
    assert await names(pair.replica.url(DATABASE)) == ["before", "during"]


@pytest.mark.parametrize("mode", ["immediate", "fast"])
async def test_the_replica_reads_while_the_primary_is_down_then_streams_again(
    pair: StreamingPair, mode: StopMode
) -> None:
    await primary_execute(pair, "INSERT INTO item VALUES (1, 'before')")
    await pair.wait_caught_up()

    await pair.stop_primary(mode)
    assert not answers(pair.primary.port)
    assert await names(pair.replica.url(DATABASE)) == ["before"]

    await pair.start_primary()  # returns once the replica streams from it again, by itself
    await primary_execute(pair, "INSERT INTO item VALUES (2, 'after')")
    await pair.wait_caught_up()
    assert await names(pair.replica.url(DATABASE)) == ["before", "after"]


async def test_a_restarted_replica_catches_up_on_what_it_missed(pair: StreamingPair) -> None:
    await pair.stop_replica()
    assert not answers(pair.replica.port)
    await primary_execute(pair, "INSERT INTO item VALUES (1, 'missed')")

    await pair.start_replica()
    await pair.wait_caught_up()
    assert await names(pair.replica.url(DATABASE)) == ["missed"]


async def test_everything_is_removed_even_when_the_body_fails() -> None:
    seen: list[StreamingPair] = []

    async def failing_test() -> None:
        async with streaming_pair() as pair:
            seen.append(pair)
            assert answers(pair.primary.port)
            assert answers(pair.replica.port)
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match="the test failed"):
        await failing_test()
    (pair,) = seen
    assert not pair.primary.root.exists()
    assert not pair.replica.root.exists()
    assert not answers(pair.primary.port)
    assert not answers(pair.replica.port)


def answers(port: int) -> bool:
    """Whether anything accepts a TCP connection on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
