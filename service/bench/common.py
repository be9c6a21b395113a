"""What every benchmark suite shares: its error, a throwaway database, a page's bytes, the CPU."""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path

import httpx
import sqlalchemy
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from service.app import create_app
from service.settings import Settings

DATABASE_PREFIX = "svc_bench_"


class BenchError(Exception):
    """The benchmark cannot run as asked (bad sizes, not PostgreSQL, wrong rows, server gone)."""


@asynccontextmanager
async def throwaway_database(admin_url: str) -> AsyncIterator[str]:
    """A fresh svc_bench_* database on the admin URL's server, dropped on the way out."""
    url = make_url(admin_url)
    if url.get_backend_name() != "postgresql":
        raise BenchError(f"the benchmark needs PostgreSQL, not {url.get_backend_name()}")
    name = DATABASE_PREFIX + secrets.token_hex(6)
    admin = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            # FORCE: a connection left over by a failed run must not keep the database alive.
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@asynccontextmanager
async def in_process(
    settings: Settings, *, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The service on `settings` in this process: a client of it, and the app. ASGITransport
    sends no lifespan events, so the app's own runs here (it disposes the pool)."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as client,
    ):
        yield client, app


async def capture_body(url: str, path: str, *, token: str, cursor_secret: str) -> bytes:
    """A page's exact bytes from a short-lived in-process app on the same data and secret."""
    settings = Settings(
        database_url=url, cache_url="none", cursor_secret=cursor_secret, api_tokens=(token,)
    )
    async with in_process(settings) as (client, _app):
        response = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        raise BenchError(f"GET {path} answered {response.status_code}: {response.text}")
    return response.content


def machine() -> list[tuple[str, str]]:
    """The CPU and Python a benchmark ran on: the first lines of every suite's report."""
    return [("CPU", f"{os.cpu_count()} x {cpu_model()}"), ("Python", platform.python_version())]


def postgres_stack(server_version: str) -> tuple[tuple[str, str], ...]:
    """The machine, then the PostgreSQL server and the libraries between it and the service."""
    return (
        *machine(),
        ("PostgreSQL", server_version),
        ("SQLAlchemy", sqlalchemy.__version__),
        ("asyncpg", version("asyncpg")),
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def choose_tool(tool: str, *, fallback: str) -> str:
    """`wrk` when asked for or (with "auto") installed, else the suite's own `fallback`."""
    if tool == "auto":
        return "wrk" if shutil.which("wrk") else fallback
    if tool == "wrk" and not shutil.which("wrk"):
        raise BenchError(f"wrk is not installed (apt-get install wrk), or use --tool {fallback}")
    return tool


async def wrk_version() -> str:
    process = await asyncio.create_subprocess_exec(
        "wrk", "--version", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 10)
    first = output.decode().splitlines()[0] if output else "wrk"
    return " ".join(first.split()[:2])
