"""Requests the HTTP parser refuses before the app sees them, against a real `service serve`.

Raw sockets, since no HTTP client sends these. Each parser (`serve --http`) gets one server
for the module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TOKEN
from tests.ops.conftest import OpsDatabases, serve_settings
from tests.ops.servers import (
    LOOPBACK,
    Served,
    serve,
)
from tests.ops.test_client_abort import assert_no_error_logged, server_errors, status_counts

PARSERS = ("httptools", "h11")
PROBLEM = "application/problem+json"
READ_TIMEOUT = 3.0
MALFORMED = {
    "request line": b"GARBAGE\r\n\r\n",
    "byte in a header name": b"GET /users HTTP/1.1\r\nHost: x\r\nX-Fo\x01o: bar\r\n\r\n",
    "NUL in a header value": b"GET /users HTTP/1.1\r\nHost: x\r\nX-Foo: b\x00r\r\n\r\n",
    "header without a colon": b"GET /users HTTP/1.1\r\nHost: x\r\nX-Foo\r\n\r\n",
    "space before the colon": b"GET /users HTTP/1.1\r\nHost: x\r\nX-Foo : bar\r\n\r\n",
    "Content-Length not a number": b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: ab\r\n\r\n",
    "two Content-Lengths": (
        b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
}
# Over each parser's own limit (status, problem code): httptools parses a URL of at most
# 65535 bytes once the head is complete, and has no limit on headers; h11 gives up on a head
# still unfinished past 16 KiB (these never end), whichever part of it is too long.
OVER_LIMIT = {
    "httptools": [
        (b"GET /users?x=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri-too-long"),
    ],
    "h11": [
        (b"GET /users?x=" + b"a" * 20_000, 414, "uri-too-long"),
        (b"GET /users HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000, 400, "malformed-request"),
    ],
}


def serve_parser(settings: Mapping[str, str], *, log_dir: Path, http: str) -> Any:
    """`servers.serve`, with `--http` to choose the parser."""
    return serve(settings, log_dir=log_dir, name=f"serve-{http}", args=("--http", http))


@pytest.fixture(scope="module", params=PARSERS)
def parser(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
async def server(
    parser: str, ops_databases: OpsDatabases, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    _, url = await ops_databases.create()
    log_dir = tmp_path_factory.mktemp("logs")
    with serve_parser(serve_settings(url), log_dir=log_dir, http=parser) as served:
        yield served


@dataclass
class Raw:
    """One response read off a socket, and whatever the server sent after it."""

    status: int
    headers: dict[str, str]
    body: bytes
    rest: bytes

    def problem(self, status: int) -> dict[str, Any]:
        assert self.status == status, (self.status, self.headers, self.body)
        assert self.headers["content-type"] == PROBLEM
        assert int(self.headers["content-length"]) == len(self.body)
        problem: dict[str, Any] = json.loads(self.body)
        assert problem["status"] == status
        assert problem["type"].startswith("https://service.invalid/problems/")
        assert problem["title"]
        assert problem["detail"]
        return problem


async def read_response(reader: asyncio.StreamReader) -> Raw:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} twice"
        headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return Raw(int(status_line.split()[1]), headers, body, b"")


async def exchange(server: Served, data: bytes) -> Raw:
    """Send `data`; the response, and what followed it before the server closed."""
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    try:
        writer.write(data)
        await writer.drain()
        response = await read_response(reader)
        response.rest = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
        return response
    finally:
        writer.close()


def assert_answered_by_the_server(response: Raw) -> None:
    """The parser's own answer: uvicorn's default headers, none of the app's, and a close."""
    assert response.headers["connection"] == "close"
    assert response.headers["server"] == "uvicorn"
    assert "date" in response.headers
    assert "x-request-id" not in response.headers  # the app never saw the request
    assert response.rest == b""  # and the connection closed after it


async def scrape(http: httpx.AsyncClient) -> dict[str, float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return status_counts(response.text)


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_request_the_parser_refuses_is_a_problem(
    server: Served, request_bytes: bytes
) -> None:
    response = await exchange(server, request_bytes)
    problem = response.problem(400)
    assert problem["type"].endswith("/malformed-request")
    assert_answered_by_the_server(response)
    assert_no_error_logged(server)


async def test_a_head_over_the_parser_limit_is_a_problem(server: Served, parser: str) -> None:
    for request_bytes, status, code in OVER_LIMIT[parser]:
        response = await exchange(server, request_bytes)
        assert response.problem(status)["type"].endswith("/" + code)
        assert_answered_by_the_server(response)
    assert_no_error_logged(server)


async def test_a_broken_body_after_an_early_answer_gets_no_second_response(
    server: Served,
) -> None:
    """No token: the app answers 401 without reading the body, whose rest is then broken."""
    reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
    try:
        writer.write(
            b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        first = await read_response(reader)
        writer.write(b"zz\r\n")  # not a chunk size
        await writer.drain()
        after = await asyncio.wait_for(reader.read(), READ_TIMEOUT)
    finally:
        writer.close()
    assert first.problem(401)["type"].endswith("/unauthorized")
    assert after == b"", after  # a second response would answer the client's next request
    assert_no_error_logged(server)


async def test_a_broken_body_while_it_is_read_is_a_400_and_writes_nothing(
    server: Served,
) -> None:
    """The parser answers 400 and closes; the app, cut off mid-body, records a 499."""
    async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as http:
        before = await scrape(http)
        first_chunk = b'{"name": "brokenbody", '
        response = await exchange(
            server,
            b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(first_chunk)
            + first_chunk
            + b"\r\nzz\r\n",
        )
        assert response.problem(400)["type"].endswith("/malformed-request")
        assert_answered_by_the_server(response)
        for _ in range(30):  # the app notices the closed connection a moment later
            after = await scrape(http)
            if after.get("499", 0) > before.get("499", 0):
                break
            await asyncio.sleep(0.1)
        assert after.get("499", 0) == before.get("499", 0) + 1, after
        assert server_errors(before, after) == {}
        read = await http.get("/users", params={"filter[name]": "brokenbody"})
        assert read.json()["data"] == []
    recorded = [e for e in assert_no_error_logged(server) if e.get("route") == "/users"]
    assert any(e["method"] == "POST" and e["status"] == 499 for e in recorded), recorded


@pytest.mark.slow
async def test_worker_processes_answer_with_problems_too(
    ops_db: tuple[str, str], log_dir: Path
) -> None:
    _, url = ops_db
    with serve(serve_settings(url), log_dir=log_dir, workers=2) as served:
        for _ in range(4):  # whichever worker takes the connection
            response = await exchange(served, MALFORMED["request line"])
            assert response.problem(400)["type"].endswith("/malformed-request")
            assert_answered_by_the_server(response)
    assert_no_error_logged(served)
