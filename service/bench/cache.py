"""The cache benchmark: a cached list page beside a constant body, one uvicorn worker, loopback.

The question it answers: how close does a cache hit come to the cheapest response the
same app can give? Both endpoints run in one worker behind the same middleware; the
constant one returns the very bytes of the cached page, so wire size and JSON parsing
in the load tool are equal and only the route's own work differs. The goal is a cached
rate of at least 70% of the constant rate.

Beside the rates it reads the server process's CPU time from /proc, per request. On a
machine busy with other work the rates follow the scheduler more than the code; CPU per
request does not, and its inverse ratio is the rate ratio a worker with a core to itself
would reach.

Run it with `python -m service.bench.cache` (see `--help`). The load comes from wrk
when it is installed (`apt-get install wrk`), else from an httpx loop in this process,
which shares the CPU with the server and so understates both rates.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

import httpx
import redis.asyncio as redis
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from starlette.responses import Response

from service.app import create_app
from service.bench.common import (
    BenchError,
    capture_body,
    choose_tool,
    free_port,
    machine,
    throwaway_database,
    wrk_version,
)
from service.db import make_engine
from service.migrations import run_upgrade
from service.seed import seed
from service.settings import Settings

CACHED_PATH = "/users?fields=id,name&include=groups&limit=100"
CONSTANT_PATH = "/bench/constant"
CONSTANT_FILE_VARIABLE = "BENCH_CONSTANT_FILE"
DATABASE_PREFIX = "svc_bench_"
SIZES = {"users": 1000, "groups": 50, "permissions": 30}
GOAL = 0.70
IDLE_SECONDS = 3  # the one-connection latency run, per endpoint
STARTUP_SECONDS = 30.0
MAX_REQUESTS = 5_000_000  # per phase, for the httpx loop; wrk is bounded by its duration


def make_bench_app() -> FastAPI:
    """The service's app plus `/bench/constant`: for `uvicorn --factory` in the benchmark only."""
    body = Path(os.environ[CONSTANT_FILE_VARIABLE]).read_bytes()
    app = create_app(Settings())

    async def constant() -> Response:
        return Response(body, media_type="application/json")

    app.add_api_route(CONSTANT_PATH, constant, methods=["GET"], include_in_schema=False)
    return app


@dataclass(frozen=True, slots=True)
class Phase:
    """One endpoint driven for a fixed time: its rate, latency percentiles and failures."""

    endpoint: str  # "cached" or "constant"
    round: int  # 0 for the one-connection latency run
    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers, socket errors and timeouts
    cpu_seconds: float = math.nan  # user + system time the server process spent meanwhile

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU per request: unlike the rate, barely moved by other load on the machine."""
        return self.cpu_seconds / self.requests * 1e6 if self.requests else math.nan


@dataclass(frozen=True, slots=True)
class CacheReport:
    cache_url: str
    database: str
    tool: str
    body_bytes: int
    phases: tuple[Phase, ...]
    environment: tuple[tuple[str, str], ...]
    server_log: tuple[str, ...]  # warnings and errors the server printed

    def loaded(self, endpoint: str) -> list[Phase]:
        return [p for p in self.phases if p.endpoint == endpoint and p.round > 0]

    def rate(self, endpoint: str) -> float:
        """Requests per second over every loaded round together."""
        phases = self.loaded(endpoint)
        return sum(p.requests for p in phases) / sum(p.seconds for p in phases)

    def cpu_us(self, endpoint: str) -> float:
        phases = self.loaded(endpoint)
        return sum(p.cpu_seconds for p in phases) / sum(p.requests for p in phases) * 1e6

    @property
    def ratio(self) -> float:
        return self.rate("cached") / self.rate("constant")

    @property
    def cpu_ratio(self) -> float:
        """The rate ratio a worker with a core to itself would reach: CPU per request, inverted."""
        return self.cpu_us("constant") / self.cpu_us("cached")

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.phases)


async def run_cache_bench(
    *,
    database_url: str | None,
    cache_url: str,
    seconds: int,
    connections: int,
    rounds: int = 3,
    tool: str = "auto",
) -> CacheReport:
    """Seed a throwaway database, start one worker, and drive both endpoints in turn."""
    if seconds < 1 or connections < 1 or rounds < 1:
        raise BenchError("seconds, connections and rounds must be 1 or more")
    chosen = choose_tool(tool, fallback="httpx")
    prefix = DATABASE_PREFIX + secrets.token_hex(6)
    cursor_secret = secrets.token_hex(16)
    token = secrets.token_hex(16)  # only so the app does not warn that writes are refused
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        async with bench_database(database_url, Path(workdir)) as url:
            await prepare_database(url)
            body = await capture_body(url, CACHED_PATH, token=token, cursor_secret=cursor_secret)
            constant_file = Path(workdir) / "constant.json"
            _write(constant_file, body)
            env = {
                "DATABASE_URL": url,
                "CACHE_URL": cache_url,
                "CACHE_PREFIX": prefix,
                "CURSOR_SECRET": cursor_secret,
                "API_TOKENS": token,
                CONSTANT_FILE_VARIABLE: str(constant_file),
            }
            try:
                async with bench_server(env, Path(workdir) / "server.log") as (base, log, pid):
                    await warm(base, body)
                    load_before = os.getloadavg()[0]
                    phases = await drive(
                        base, pid, chosen, seconds=seconds, connections=connections, rounds=rounds
                    )
                    load_after = os.getloadavg()[0]
                    await warm(base, body)  # still answering, still a hit
                    environment = await describe(url, cache_url, chosen)
                    environment += (
                        ("1-min load average", f"{load_before:.2f} -> {load_after:.2f}"),
                    )
                server_log = _problems(log)
            finally:
                await forget_keys(cache_url, prefix)
    return CacheReport(
        cache_url=cache_url,
        database=make_url(url).get_backend_name(),
        tool=chosen,
        body_bytes=len(body),
        phases=tuple(phases),
        environment=environment,
        server_log=server_log,
    )


@asynccontextmanager
async def bench_database(admin_url: str | None, workdir: Path) -> AsyncIterator[str]:
    """A SQLite file in `workdir`, or a fresh svc_bench_* database beside a PostgreSQL URL."""
    if admin_url is None:
        yield f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        return
    async with throwaway_database(admin_url) as url:
        yield url


async def prepare_database(url: str) -> None:
    await asyncio.to_thread(run_upgrade, url)
    engine = make_engine(Settings(database_url=url))
    try:
        await seed(engine, **SIZES)
    finally:
        await engine.dispose()


@asynccontextmanager
async def bench_server(env: dict[str, str], log: Path) -> AsyncIterator[tuple[str, Path, int]]:
    """One uvicorn worker on a free loopback port; always terminated on the way out."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "service.bench.cache:make_bench_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    with _open_log(log) as output:
        # Pinned, whatever the caller's environment says: every request cached, all public.
        pinned = {"CACHE_SKIP": "", "READ_REQUIRES_TOKEN": "false", "LOG_LEVEL": "WARNING"}
        process = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, **pinned, **env}, stdout=output, stderr=output
        )
        try:
            base = f"http://127.0.0.1:{port}"
            await _wait_until_up(base, process, log)
            yield base, log, process.pid
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _wait_until_up(base: str, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(base_url=base, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise BenchError(f"the server exited ({process.returncode}):\n{_tail(log)}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise BenchError(f"the server did not answer within {STARTUP_SECONDS:.0f} s:\n{_tail(log)}")


async def warm(base: str, body: bytes) -> None:
    """Fill the cache, then check a hit serves the captured bytes and the constant matches."""
    async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
        first = await client.get(CACHED_PATH)
        hit = await client.get(CACHED_PATH)
        constant = await client.get(CONSTANT_PATH)
    if first.status_code != 200 or hit.headers.get("x-cache") != "HIT":
        raise BenchError(
            f"no cache hit: {first.status_code}, X-Cache {hit.headers.get('x-cache')!r}"
        )
    if hit.content != body or constant.content != body:
        raise BenchError("the server's cached page differs from the captured body")


async def drive(
    base: str, pid: int, tool: str, *, seconds: int, connections: int, rounds: int
) -> list[Phase]:
    """One-connection latency first, then `rounds` loaded rounds, alternating which goes first."""
    endpoints = {"cached": CACHED_PATH, "constant": CONSTANT_PATH}
    phases = []
    for name, path in endpoints.items():
        phase = await load(tool, name, base + path, 0, pid, seconds=IDLE_SECONDS, connections=1)
        phases.append(phase)
    for number in range(1, rounds + 1):
        order = list(endpoints.items())
        if number % 2 == 0:
            order.reverse()
        for name, path in order:
            phase = await load(
                tool, name, base + path, number, pid, seconds=seconds, connections=connections
            )
            phases.append(phase)
    return phases


async def load(
    tool: str, endpoint: str, url: str, number: int, pid: int, *, seconds: int, connections: int
) -> Phase:
    """One phase, with the server's CPU time over it."""
    cpu_before = _cpu_seconds(pid)
    if tool == "wrk":
        phase = await load_with_wrk(endpoint, url, number, seconds=seconds, connections=connections)
    else:
        phase = await load_with_httpx(
            endpoint, url, number, seconds=seconds, connections=connections
        )
    return replace(phase, cpu_seconds=_cpu_seconds(pid) - cpu_before)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (NaN where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    # After the ")" closing the command name: state is field 3, utime 14 and stime 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_with_wrk(
    endpoint: str, url: str, number: int, *, seconds: int, connections: int
) -> Phase:
    """One wrk thread (the server has the other core to itself on a two-core machine)."""
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency", url,
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), seconds + 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"wrk did not finish within {seconds + 30} s") from None
    return parse_wrk(output.decode(), endpoint=endpoint, number=number, connections=connections)


def parse_wrk(output: str, *, endpoint: str, number: int, connections: int) -> Phase:
    """Requests, duration, the 50% and 99% latencies and every kind of failure wrk reports."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if total is None or p50 is None or p99 is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return Phase(
        endpoint=endpoint,
        round=number,
        connections=connections,
        requests=int(total.group(1)),
        seconds=_to_ms(total.group(2), total.group(3)) / 1000,
        p50_ms=_to_ms(p50.group(1), p50.group(2)),
        p99_ms=_to_ms(p99.group(1), p99.group(2)),
        errors=errors,
    )


def _to_ms(number: str, unit: str) -> float:
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]
    return float(number) * scale


async def load_with_httpx(
    endpoint: str, url: str, number: int, *, seconds: int, connections: int
) -> Phase:
    """The fallback: `connections` keep-alive loops until the deadline (or MAX_REQUESTS)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline and len(latencies) + errors < MAX_REQUESTS:
                sent = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - sent) * 1000)
                errors += response.status_code >= 400

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Phase(
        endpoint=endpoint,
        round=number,
        connections=connections,
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        errors=errors,
    )


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


async def forget_keys(cache_url: str, prefix: str) -> None:
    """Delete this run's Redis keys (and only them: the prefix is unique to the run)."""
    if not cache_url.startswith(("redis://", "rediss://", "unix://")):
        return
    client = redis.Redis.from_url(cache_url, socket_timeout=5.0)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


async def describe(url: str, cache_url: str, tool: str) -> tuple[tuple[str, str], ...]:
    """What the figures were measured on."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                database = "PostgreSQL " + str(await connection.scalar(text("SHOW server_version")))
            else:
                database = "SQLite " + str(await connection.scalar(text("SELECT sqlite_version()")))
    finally:
        await engine.dispose()
    environment = [
        *machine(),
        ("database", database),
    ]
    if cache_url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(cache_url, socket_timeout=5.0)
        try:
            info = await client.info("server")
        finally:
            await client.aclose()
        environment.append(("Redis", str(info.get("redis_version", "?"))))
    for package in ("uvicorn", "uvloop", "httptools", "fastapi", "starlette"):
        environment.append((package, version(package)))
    environment.append(("load", await _tool_version(tool)))
    return tuple(environment)


async def _tool_version(tool: str) -> str:
    if tool != "wrk":
        return f"httpx {version('httpx')} (in-process loop)"
    return await wrk_version()


def _write(path: Path, body: bytes) -> None:
    path.write_bytes(body)


@contextmanager
def _open_log(path: Path) -> Iterator[int]:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        yield descriptor
    finally:
        os.close(descriptor)


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def _problems(path: Path) -> tuple[str, ...]:
    """The server's warnings, errors and tracebacks (its log level is WARNING)."""
    text_ = path.read_text(encoding="utf-8", errors="replace")
    return tuple(line for line in text_.splitlines() if line.strip())


def print_report(report: CacheReport) -> None:
    from rich.console import Console
    from rich.table import Table

    cached, constant = report.rate("cached"), report.rate("constant")
    verdict = "meets" if report.ratio >= GOAL else "misses"
    table = Table(
        title=f"CACHE_URL={report.cache_url} on {report.database}, one worker, "
        f"{report.body_bytes:,}-byte body, load from {report.tool}"
    )
    table.caption = f"cached: GET {CACHED_PATH}; constant: GET {CONSTANT_PATH}"
    header = ("endpoint", "round", "conns", "req/s", "p50 ms", "p99 ms", "CPU us/req", "errors")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for phase in sorted(report.phases, key=lambda p: (p.endpoint, p.round)):
        table.add_row(
            phase.endpoint,
            str(phase.round) if phase.round else "idle",
            str(phase.connections),
            f"{phase.rate:,.0f}",
            f"{phase.p50_ms:.2f}",
            f"{phase.p99_ms:.2f}",
            f"{phase.cpu_us:.0f}",
            str(phase.errors),
        )
    console = Console(highlight=False, width=max(100, Console().width))
    console.print(table)
    console.print(
        f"cached {cached:,.0f} req/s, constant {constant:,.0f} req/s: ratio {report.ratio:.0%} "
        f"({verdict} the {GOAL:.0%} goal); errors {report.errors}",
        markup=False,
    )
    console.print(
        f"server CPU per request: cached {report.cpu_us('cached'):.0f} us, constant "
        f"{report.cpu_us('constant'):.0f} us: CPU ratio {report.cpu_ratio:.0%}",
        markup=False,
    )
    console.print(", ".join(f"{k} {v}" for k, v in report.environment), markup=False)
    for line in report.server_log:
        console.print(f"server: {line}", markup=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service.bench.cache",
        description="Cached GET beside a constant body of the same size, one uvicorn worker.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL URL to create the throwaway svc_bench_* database beside "
        "(default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--cache-url",
        action="append",
        help="memory:// (default) or redis://host:port/db; repeat to run each in turn",
    )
    parser.add_argument("--seconds", type=_positive, default=5, help="per endpoint and round")
    parser.add_argument("--connections", type=_positive, default=16)
    parser.add_argument("--rounds", type=_positive, default=3)
    parser.add_argument("--tool", choices=("auto", "wrk", "httpx"), default="auto")


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    failed = False
    for cache_url in args.cache_url or ["memory://"]:
        try:
            report = asyncio.run(
                run_cache_bench(
                    database_url=args.database_url,
                    cache_url=cache_url,
                    seconds=args.seconds,
                    connections=args.connections,
                    rounds=args.rounds,
                    tool=args.tool,
                )
            )
        except BenchError as error:
            print(f"cache bench ({cache_url}): {error}", file=sys.stderr)
            failed = True
            continue
        print_report(report)
        failed = failed or report.errors > 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
