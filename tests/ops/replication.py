"""A throwaway streaming-replication pair on loopback: a primary and a hot standby made from it.

Both members are `ThrowawayPostgres` clusters (initdb/pg_ctl as the `postgres` OS user, on
ephemeral loopback ports); the standby is a `pg_basebackup -R -X stream` of the primary. Every
method of `StreamingPair` is a coroutine: the blocking pg_ctl calls run in a thread, so a
service under test in the same event loop keeps answering while a member stops or starts.

    async with streaming_pair() as pair:
        await pair.create_database("app")          # on the primary, and replayed on the replica
        settings = Settings(database_url=pair.primary.url("app"),
                            database_replica_urls=(pair.replica.url("app"),))
        await pair.pause_replay()                  # the replica's reads go stale ...
        await pair.resume_replay()
        await pair.wait_caught_up()                # ... until it replayed the primary's WAL
        await pair.stop_primary()                  # the replica keeps answering reads
        await pair.start_primary()                 # returns once the replica streams again

Unlike `ThrowawayPostgres.start`, the members keep synchronous_commit on: a committed row is
flushed WAL that the primary may ship at once, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import asyncpg
import pytest

from tests.ops.servers import LOOPBACK, PG_BIN, ThrowawayPostgres

POLL_SECONDS = 0.05
# The same on both members: a hot standby refuses to start with max_connections,
# max_wal_senders and friends below the primary's.
SHARED_OPTIONS = (
    "-c shared_buffers=16MB",
    "-c max_wal_senders=4",
    "-c wal_level=replica",
    "-c hot_standby=on",
    # WAL the standby may still need after a stop_replica(), even across checkpoints.
    "-c wal_keep_size=128MB",
    # How soon a standby whose primary went away tries to stream again (default 5 s).
    "-c wal_retrieve_retry_interval=200ms",
    # Unsafe across an OS crash, irrelevant to replication; synchronous_commit stays on, so a
    # commit on the primary is flushed WAL the walsender may ship at once.
    "-c fsync=off",
    "-c full_page_writes=off",
)
HBA = (
    "local all all trust\n"
    f"host all all {LOOPBACK}/32 trust\n"
    f"host replication all {LOOPBACK}/32 trust\n"
)
StopMode = Literal["immediate", "fast"]


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> the byte position it names, so two LSNs compare as integers."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


class Member(ThrowawayPostgres):
    """A ThrowawayPostgres started with the replication settings rather than the defaults."""

    options = SHARED_OPTIONS


class Primary(Member):
    def initdb(self) -> None:
        super().initdb()
        # Written whole rather than trusting initdb's defaults; root keeps postgres's ownership.
        (self.data / "pg_hba.conf").write_text(HBA)


class Replica(Member):
    def __init__(self) -> None:
        if not (PG_BIN / "pg_basebackup").exists():
            pytest.fail(f"{PG_BIN / 'pg_basebackup'} is missing: the streaming pair needs it")
        super().__init__()

    def basebackup(self, primary: Primary) -> None:
        """Copy the running primary; -R leaves standby.signal and its primary_conninfo."""
        self._run(
            [
                str(PG_BIN / "pg_basebackup"),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
                "-h",
                LOOPBACK,
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(self.data),
            ]
        )


async def poll(
    connection: asyncpg.Connection,
    query: str,
    *,
    done: Callable[[Any], bool],
    seconds: float,
    what: str,
) -> None:
    """Run `query` until `done` holds for its value; a TimeoutError names the last one."""
    deadline = time.monotonic() + seconds
    while not done(value := await connection.fetchval(query)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still {value!r} after {seconds} s")
        await asyncio.sleep(POLL_SECONDS)


@contextlib.asynccontextmanager
async def connect(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        yield connection
    finally:
        await connection.close()


class StreamingPair:
    """A primary, a hot standby streaming from it, and the levers the replica tests pull."""

    def __init__(self, primary: Primary, replica: Replica) -> None:
        self.primary = primary
        self.replica = replica
        self.primary_running = True
        self.replica_running = True

    async def create_database(self, name: str, *, seconds: float = 10.0) -> None:
        """CREATE DATABASE on the primary, returning once the replica has it too."""
        async with connect(self.primary.admin_dsn) as connection:
            await connection.execute(f'CREATE DATABASE "{name}"')
        await self.wait_caught_up(seconds)

    async def pause_replay(self, *, seconds: float = 10.0) -> None:
        """Stop applying WAL on the replica (it still receives it): its reads go stale."""
        async with connect(self.replica.admin_dsn) as connection:
            await connection.execute("SELECT pg_wal_replay_pause()")
            # The request is asynchronous (PostgreSQL 14+): wait until replay really stopped.
            await poll(
                connection,
                "SELECT pg_get_wal_replay_pause_state()",
                done=lambda state: state == "paused",
                seconds=seconds,
                what="the replica's replay pause state",
            )

    async def resume_replay(self) -> None:
        async with connect(self.replica.admin_dsn) as connection:
            await connection.execute("SELECT pg_wal_replay_resume()")

    async def wait_caught_up(self, seconds: float = 10.0) -> None:
        """Wait until the replica has replayed everything the primary had written at the call."""
        async with connect(self.primary.admin_dsn) as connection:
            target = await connection.fetchval("SELECT pg_current_wal_lsn()::text")
        async with connect(self.replica.admin_dsn) as connection:
            await poll(
                connection,
                "SELECT pg_last_wal_replay_lsn()::text",
                done=lambda replayed: (
                    replayed is not None and parse_lsn(replayed) >= parse_lsn(target)
                ),
                seconds=seconds,
                what=f"the replica's replay position (the primary's was {target})",
            )

    async def wait_streaming(self, seconds: float = 10.0) -> None:
        """Wait until the primary has a WAL sender streaming to the replica.

        Asked of the primary, not of the replica's pg_stat_wal_receiver: a receiver that has not
        yet noticed its primary went away still says 'streaming', a fresh sender cannot lie.
        """
        async with connect(self.primary.admin_dsn) as connection:
            try:
                await poll(
                    connection,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                    done=lambda senders: senders == 1,
                    seconds=seconds,
                    what="the primary's streaming WAL senders",
                )
            except TimeoutError as error:
                raise TimeoutError(
                    f"{error}; the replica's log:\n{self.replica._log_tail()}"
                ) from None

    async def stop_replica(self, mode: StopMode = "fast") -> None:
        """Stop the replica; with the primary up, return once its WAL sender is gone too."""
        await asyncio.to_thread(self.replica.stop, mode)
        self.replica_running = False
        if self.primary_running:
            async with connect(self.primary.admin_dsn) as connection:
                await poll(
                    connection,
                    "SELECT count(*) FROM pg_stat_replication",
                    done=lambda senders: senders == 0,
                    seconds=10.0,
                    what="the primary's WAL senders",
                )

    async def start_replica(self) -> None:
        """Start the replica again; with the primary up, return once it streams from it."""
        await asyncio.to_thread(self.replica.start)
        self.replica_running = True
        if self.primary_running:
            await self.wait_streaming()

    async def stop_primary(self, mode: StopMode = "immediate") -> None:
        await asyncio.to_thread(self.primary.stop, mode)
        self.primary_running = False

    async def start_primary(self) -> None:
        """Start the primary again; return once the replica reconnected to it by itself."""
        await asyncio.to_thread(self.primary.start)
        self.primary_running = True
        if self.replica_running:
            await self.wait_streaming()


@contextlib.asynccontextmanager
async def streaming_pair() -> AsyncIterator[StreamingPair]:
    """A primary and a hot standby streaming from it; both stopped and removed at the end."""
    primary = Primary()
    try:
        await asyncio.to_thread(primary.initdb)
        await asyncio.to_thread(primary.start)
        replica = Replica()
        try:
            await asyncio.to_thread(replica.basebackup, primary)
            await asyncio.to_thread(replica.start)
            pair = StreamingPair(primary, replica)
            await pair.wait_streaming()
            yield pair
        finally:
            await asyncio.to_thread(replica.destroy)
    finally:
        await asyncio.to_thread(primary.destroy)
