"""The writes benchmark: rows per second of one batch POST against the same rows POSTed singly.

On a throwaway PostgreSQL database (migrated, small seed), through the whole app in this
process (`httpx.AsyncClient` over `ASGITransport(create_app(settings))`: routing, auth,
body validation, the transaction, cache invalidation and the read-back are all in; the
socket and the HTTP parser are not, which favours the single POSTs, the ones with the
most requests). Each round creates `batch` users three ways, interleaved: one `POST
/users` with a JSON array, `batch` single POSTs one after another, and the same spread
over `concurrency` clients. No passwords (argon2id would time the hash, not the write).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import httpx
import sqlalchemy
from sqlalchemy import text

from service.bench.common import BenchError, cpu_model, in_process, throwaway_database
from service.bench.paging import DEFAULT_ADMIN_URL, prepare_database
from service.settings import Settings

MODES = ("batch", "single, sequential", "single, concurrent")
SEED_USERS = 1000
WARMUP_ROWS = 40
_QUERIES = re.compile(r'desc="(\d+) queries"')


@dataclass(frozen=True, slots=True)
class ModeResult:
    mode: str
    requests: int  # per round
    median_seconds: float  # for `batch` rows
    statements: int  # SQL statements per request, from Server-Timing
    rows_per_second: float


@dataclass(frozen=True, slots=True)
class WritesReport:
    batch: int
    concurrency: int
    repeats: int
    results: tuple[ModeResult, ...]
    environment: tuple[tuple[str, str], ...]

    def result(self, mode: str) -> ModeResult:
        return next(r for r in self.results if r.mode == mode)

    def ratio(self, mode: str) -> float:
        """How many times the batch's rows/s the given mode's is below."""
        return self.result("batch").rows_per_second / self.result(mode).rows_per_second


async def run_writes(
    *, admin_url: str | None, repeats: int, batch: int = 1000, concurrency: int = 8
) -> WritesReport:
    if repeats < 1 or batch < 1 or concurrency < 1:
        raise BenchError("repeats, batch and concurrency must be 1 or more")
    token = secrets.token_hex(16)
    async with throwaway_database(admin_url or DEFAULT_ADMIN_URL) as url:
        await prepare_database(url, users=SEED_USERS)
        settings = Settings(
            database_url=url, api_tokens=(token,), cursor_secret=token, max_batch=batch
        )
        headers = {"Authorization": f"Bearer {token}"}
        async with in_process(settings, headers=headers) as (c, app):
            # Warm the pool, the statement caches and the code paths before timing.
            warmup = [f"w{i:05d}" for i in range(WARMUP_ROWS)]
            await create_batch(c, warmup[: WARMUP_ROWS // 2], concurrency)
            await create_concurrent(c, warmup[WARMUP_ROWS // 2 :], concurrency)
            seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
            statements: dict[str, int] = {}
            for number in range(repeats):
                order = MODES[number % 3 :] + MODES[: number % 3]
                for mode in order:
                    create = _MODES[mode]
                    started = time.perf_counter()
                    statements[mode] = await create(c, _names(mode, number, batch), concurrency)
                    seconds[mode].append(time.perf_counter() - started)
            async with app.state.services.db.engine.connect() as connection:
                created = await connection.scalar(
                    text("SELECT count(*) FROM auth_user WHERE email_address LIKE '%@bench.test'")
                )
                server = str(await connection.scalar(text("SHOW server_version")))
    expected = batch * repeats * len(MODES) + WARMUP_ROWS
    if created != expected:
        raise BenchError(f"expected {expected} new users, found {created}")
    results = []
    for mode in MODES:
        median = statistics.median(seconds[mode])
        requests = 1 if mode == "batch" else batch
        results.append(ModeResult(mode, requests, median, statements[mode], batch / median))
    environment = (
        ("CPU", cpu_model()),
        ("PostgreSQL", server),
        ("SQLAlchemy", sqlalchemy.__version__),
        ("asyncpg", version("asyncpg")),
        ("client", f"httpx {version('httpx')} ASGITransport, in-process"),
    )
    return WritesReport(batch, concurrency, repeats, tuple(results), environment)


def _names(mode: str, number: int, batch: int) -> list[str]:
    """Unique across modes and rounds, within varchar(16): 'b03x00999'."""
    letter = {"batch": "b", "single, sequential": "s", "single, concurrent": "c"}[mode]
    return [f"{letter}{number:02d}x{i:05d}" for i in range(batch)]


def _user(name: str) -> dict[str, Any]:
    return {"name": name, "email_address": f"{name}@bench.test"}


async def _post(client: httpx.AsyncClient, body: Any) -> int:
    response = await client.post("/users", params={"fields": "id"}, json=body)
    if response.status_code != 201:
        raise BenchError(f"POST /users answered {response.status_code}: {response.text[:500]}")
    match = _QUERIES.search(response.headers.get("server-timing", ""))
    return int(match.group(1)) if match else -1


async def create_batch(client: httpx.AsyncClient, names: list[str], _concurrency: int) -> int:
    return await _post(client, [_user(name) for name in names])


async def create_sequential(client: httpx.AsyncClient, names: list[str], _concurrency: int) -> int:
    statements = 0
    for name in names:
        statements = await _post(client, _user(name))
    return statements


async def create_concurrent(client: httpx.AsyncClient, names: list[str], concurrency: int) -> int:
    queue = list(reversed(names))
    counts: list[int] = []

    async def worker() -> None:
        while queue:
            counts.append(await _post(client, _user(queue.pop())))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts[-1]


_MODES: dict[str, Callable[[httpx.AsyncClient, list[str], int], Awaitable[int]]] = {
    "batch": create_batch,
    "single, sequential": create_sequential,
    "single, concurrent": create_concurrent,
}


def print_report(report: WritesReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=max(100, Console().width))
    table = Table(
        title=f"{report.batch} users created (no passwords) on PostgreSQL, in-process ASGI; "
        f"median of {report.repeats}"
    )
    header = ("mode", "requests", "seconds", "SQL per request", "rows/s", "batch is x faster")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for r in report.results:
        mode = r.mode if r.mode != "single, concurrent" else f"{r.mode} ({report.concurrency})"
        table.add_row(
            mode, f"{r.requests:,}", f"{r.median_seconds:.3f}", str(r.statements),
            f"{r.rows_per_second:,.0f}", f"{report.ratio(r.mode):.1f}",
        )  # fmt: skip
    console.print(table)
    console.print(", ".join(f"{k} {v}" for k, v in report.environment), markup=False)
