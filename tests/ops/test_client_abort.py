"""Clients that hang up: mid-query nothing stays checked out; mid-body it is a 499, not a 500.

A disconnect reaches the app in one place only: `http.disconnect` while it reads the body
(Starlette's `ClientDisconnect`). Sending to a closed connection raises nothing (uvicorn
drops the response), so a read or a write whose body was read simply finishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from starlette.types import Message

from tests.conftest import TOKEN, app_of, record_statements
from tests.ops.conftest import (
    TableLock,
    metric_samples,
    metric_value,
    serve_settings,
    sessions_of,
)
from tests.ops.servers import LOOPBACK, Served, serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]
HALF_BODY = b'{"name": "hungup", "email_address": "hung'
DURATION_COUNT = "http_request_duration_seconds_count"


def status_counts(exposition: str) -> dict[str, float]:
    """Finished requests by status, from the latency histogram."""
    counts: dict[str, float] = {}
    for labels, value in metric_samples(exposition).get(DURATION_COUNT, []):
        counts[labels["status"]] = counts.get(labels["status"], 0.0) + value
    return counts


def server_errors(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The 5xx statuses counted between two scrapes."""
    return {
        status: after[status] - before.get(status, 0.0)
        for status in after
        if status.startswith("5") and after[status] != before.get(status, 0.0)
    }


def assert_no_error_logged(server: Served) -> list[dict[str, object]]:
    text = server.log_text()
    assert "Traceback" not in text, text[-3000:]
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    errors = [entry for entry in entries if entry["level"] in {"error", "critical"}]
    assert errors == [], errors
    return entries


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
                before = status_counts((await http.get("/metrics")).text)
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
            # The abandoned requests finished as if the client were there: the PATCH (its body
            # read before the hang-up) wrote, and uvicorn dropped the responses silently.
            assert (await http.get("/users/2?fields=display_name")).json()["data"] == {
                "display_name": "x"
            }
            text = (await http.get("/metrics")).text
    assert server_errors(before, status_counts(text)) == {}
    assert metric_value(text, DURATION_COUNT, method="PATCH", status="200") == 1
    assert_no_error_logged(server)


async def test_a_client_that_hangs_up_mid_body_is_a_499(
    ops_db: tuple[str, str], log_dir: Path
) -> None:
    _, url = ops_db
    with serve(serve_settings(url), log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
            before = status_counts((await http.get("/metrics")).text)
            _reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
            writer.write(
                b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                b"Content-Length: 200\r\n\r\n" + HALF_BODY
            )
            await writer.drain()
            await asyncio.sleep(0.2)  # the app has the first part and waits for the rest
            writer.close()
            for _ in range(30):
                after = status_counts((await http.get("/metrics")).text)
                if after.get("499", 0.0) > before.get("499", 0.0):
                    break
                await asyncio.sleep(0.1)
            assert after.get("499", 0.0) == before.get("499", 0.0) + 1, after
            assert server_errors(before, after) == {}
            found = await http.get("/users", params={"filter[name]": "hungup"})
            assert found.status_code == 200
            assert found.json()["data"] == []
    entries = assert_no_error_logged(server)
    posts = [entry for entry in entries if entry.get("method") == "POST"]
    assert [(entry["route"], entry["status"]) for entry in posts] == [("/users", 499)], posts


async def test_a_disconnect_mid_body_is_a_499_in_process(
    make_client: MakeClient, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The ASGI app driven directly: the body's first chunk, then `http.disconnect`."""
    http = await make_client(database_url)
    app = app_of(http)
    statements = record_statements(http)
    incoming: list[Message] = [{"type": "http.request", "body": HALF_BODY, "more_body": True}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    before = status_counts(generate_latest().decode())
    caplog.set_level(logging.INFO)
    await app(post_scope("/users", body_length=200), receive, send)
    after = status_counts(generate_latest().decode())

    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 499  # what uvicorn would drop: nobody is left to read it
    assert after.get("499", 0.0) == before.get("499", 0.0) + 1
    assert server_errors(before, after) == {}
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    logged = [r for r in caplog.records if r.name == "service.requests"]
    assert [getattr(r, "status", None) for r in logged] == [499]
    assert not [s for s in statements.statements if not s.lstrip().upper().startswith("SELECT")]
    assert (await http.get("/users", params={"count": "true"})).json()["meta"]["total"] == 0


def post_scope(path: str, *, body_length: int) -> dict[str, object]:
    """What uvicorn passes for a JSON POST with a token."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(body_length).encode()),
        ],
        "state": {},
    }


async def test_a_body_that_stops_arriving_is_a_408_not_a_server_error(
    make_client: MakeClient, database_url: str
) -> None:
    """A client that sends part of its body and then nothing (the connection left open):
    the deadline answers for it, as the client's fault (408), and nothing is written."""
    http = await make_client(database_url, request_timeout_seconds=0.3)
    app = app_of(http)
    incoming: list[Message] = [{"type": "http.request", "body": HALF_BODY, "more_body": True}]
    sent: list[Message] = []
    never = asyncio.Event()

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await never.wait()  # the rest of the body never comes
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    before = status_counts(generate_latest().decode())
    await app(post_scope("/users", body_length=200), receive, send)
    after = status_counts(generate_latest().decode())
    assert sent[0]["status"] == 408
    assert dict(sent[0]["headers"])[b"content-type"] == b"application/problem+json"
    assert server_errors(before, after) == {}
    assert (await http.get("/users", params={"count": "true"})).json()["meta"]["total"] == 0
