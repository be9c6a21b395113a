"""A `service serve` told to stop finishes the requests it has started, then exits cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.ops.conftest import TableLock, serve_settings
from tests.ops.servers import serve


@pytest.mark.slow
async def test_sigterm_drains_in_flight_requests(ops_db: tuple[str, str], log_dir: Path) -> None:
    _, url = ops_db
    settings = serve_settings(url, cache_url="none", statement_timeout_ms="10000")
    with serve(settings, log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            assert (await http.get("/users?limit=3")).status_code == 200
            async with TableLock(url) as lock:
                # Three requests wait on the lock: they are in flight when the signal comes.
                in_flight = [
                    asyncio.create_task(http.get(f"/users?limit={n}&fields=id")) for n in (1, 2, 3)
                ]
                await asyncio.sleep(0.5)
                os.kill(server.process.pid, signal.SIGTERM)
                await asyncio.sleep(0.5)
                assert server.process.poll() is None, "it must wait for the requests it started"
                await lock.release()
                responses = await asyncio.gather(*in_flight)
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert [len(r.json()["data"]) for r in responses] == [1, 2, 3]
        returncode = await asyncio.to_thread(server.process.wait, 10)
        # uvicorn re-raises the signal once it has drained, so the exit status names it.
        assert returncode in (0, -signal.SIGTERM), server.log_text()[-3000:]
    log = server.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert "Waiting for application shutdown" in log
    assert "Finished server process" in log
