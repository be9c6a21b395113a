"""Clients that hang up mid-query against a real `service serve`: nothing stays checked out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN
from tests.ops.conftest import TableLock, metric_value, serve_settings, sessions_of
from tests.ops.servers import serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def pool_checked_out(http: httpx.AsyncClient) -> float:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return metric_value(response.text, "db_pool_checked_out")


@pytest.mark.slow
async def test_aborted_requests_leave_no_connection_checked_out(
    ops_db: tuple[str, str], log_dir: Path
) -> None:
    database, url = ops_db
    settings = serve_settings(
        url, cache_url="none", statement_timeout_ms="10000", pool_size="4", max_overflow="0"
    )
    with serve(settings, log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
            assert (await http.get("/users?limit=5")).status_code == 200
            async with TableLock(url) as lock:
                async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as impatient:
                    calls = [impatient.get(f"/users?limit={n}&include=groups") for n in range(1, 7)]
                    calls.append(
                        impatient.patch("/users/2", json={"display_name": "x"}, headers=AUTH)
                    )
                    outcomes = await asyncio.gather(*calls, return_exceptions=True)
                    aborted = sum(isinstance(o, httpx.TimeoutException) for o in outcomes)
                assert aborted == len(outcomes), outcomes
                # The server is still waiting on the lock for the requests nobody reads.
                assert await pool_checked_out(http) == 4
                blocked = [row for row in await sessions_of(database) if row["pid"] != lock.pid]
                assert any(row["wait_event_type"] == "Lock" for row in blocked), blocked
                await asyncio.sleep(0.5)
            for _ in range(100):  # the queries finish once the lock is gone
                if not await pool_checked_out(http):
                    break
                await asyncio.sleep(0.1)
            assert await pool_checked_out(http) == 0
            await asyncio.sleep(0.3)
            rows = [dict(row) for row in await sessions_of(database)]
            assert rows, "the app's pooled connections should still be open"
            assert [row for row in rows if row["state"] != "idle"] == [], rows
            assert (await http.get("/users?limit=5")).status_code == 200
    assert "Traceback" not in server.log_text(), server.log_text()[-3000:]
