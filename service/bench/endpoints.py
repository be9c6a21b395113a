"""The endpoints benchmark: the service's users page beside hand-written ones, one worker each.

One seeded PostgreSQL database; ten endpoints on eight uvicorn processes with one worker
each (uvloop + httptools): the reference apps of service/bench/reference.py (FastAPI +
SQLAlchemy hand-tuned, Starlette + asyncpg, a constant body, one Redis GET) and the
service four times: CACHE_URL=memory:// and CACHE_URL=redis://, each asked uncached with
`Cache-Control: no-cache` and cached, and each again with DATABASE_REPLICA_URLS naming the
same database (a server not in recovery is a caught-up replica: the routing is real, the
database work the same), asked uncached, so a read with one replica configured stands
beside the same read without. Before timing, the service and the two database references
must return the same data. Then rounds: in each, every endpoint in turn (the order
rotated each round) gets S seconds of C connections, so a busy moment on the machine
falls on all of them alike; around each phase of a replica server its /metrics say which
database served the reads. Load from wrk (one thread) when it is installed, else from
`service loadtest`'s runner in two client processes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import redis.asyncio as redis
from sqlalchemy import text

from service.bench.common import (
    BenchError,
    capture_body,
    choose_tool,
    free_port,
    machine,
    throwaway_database,
    wrk_version,
)
from service.bench.paging import DEFAULT_ADMIN_URL
from service.bench.reference import (
    BODY_FILE_VARIABLE,
    DATABASE_URL_VARIABLE,
    REDIS_KEY_VARIABLE,
    REDIS_URL_VARIABLE,
    SHAPE,
    TOKEN_VARIABLE,
)
from service.db import database_name, make_engine
from service.migrations import run_upgrade
from service.seed import seed
from service.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

PATH = f"/users?{SHAPE}&limit=100"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
USERS, GROUPS, GROUPS_EACH = 1000, 100, 5
STARTUP_SECONDS = 60.0
WARMUP_SECONDS = 2
# Before each recorded phase, this much of the same load unrecorded: a phase then measures
# its endpoint's steady state, not the wake of the phase before it (whose database work
# can still be settling when the next endpoint starts).
SETTLE_SECONDS = 1
REPLICA_URLS_VARIABLE = "DATABASE_REPLICA_URLS"
UVICORN = ("--host", "127.0.0.1", "--workers", "1", "--loop", "uvloop", "--http", "httptools")

# name, server, extra request headers
FASTAPI, ASYNCPG, CONSTANT, REDIS_GET = "FastAPI hand-tuned", "asyncpg", "constant", "redis GET"
UNCACHED, MEMORY, REDIS_CACHED = "service uncached", "service memory", "service redis"
UNCACHED_REPLICA = "service uncached, replica"
REDIS_UNCACHED, REDIS_UNCACHED_REPLICA = "service redis uncached", "service redis uncached, replica"
NO_CACHE = (("Cache-Control", "no-cache"),)
ENDPOINTS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (FASTAPI, "fastapi", ()),
    (ASYNCPG, "asyncpg", ()),
    (CONSTANT, "constant", ()),
    (REDIS_GET, "redis-get", ()),
    (UNCACHED, "service-memory", NO_CACHE),
    (UNCACHED_REPLICA, "service-memory-replica", NO_CACHE),
    (MEMORY, "service-memory", ()),
    (REDIS_CACHED, "service-redis", ()),
    (REDIS_UNCACHED, "service-redis", NO_CACHE),
    (REDIS_UNCACHED_REPLICA, "service-redis-replica", NO_CACHE),
)
# Issue 16: a read with one caught-up replica configured costs within 10% of the same read
# without, i.e. its rate is at least 1/1.1 of it.
REPLICA_TARGET = 1 / 1.1
# (numerator, denominator, target, aim): the issues' targets, as rate ratios.
TARGETS = (
    (UNCACHED, FASTAPI, 1.5, None),
    (UNCACHED, ASYNCPG, 0.5, 0.8),
    (MEMORY, CONSTANT, 0.7, None),
    (REDIS_CACHED, REDIS_GET, 0.9, None),
    (UNCACHED_REPLICA, UNCACHED, REPLICA_TARGET, None),
    (REDIS_UNCACHED_REPLICA, REDIS_UNCACHED, REPLICA_TARGET, None),
)
TAIL_TARGET = 3.0  # p99 within 3x p50 at 32 connections


@dataclass(frozen=True, slots=True)
class Phase:
    endpoint: str
    round: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_seconds: float  # the server process's user + system time over the phase
    # On a server with a replica: (reads the replica served, reads the primary served).
    reads: tuple[int, int] | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Summary:
    endpoint: str
    rate: float  # all rounds' requests over all rounds' seconds
    p50_ms: float  # median over rounds
    p99_ms: float  # median over rounds
    cpu_us: float  # server CPU per request
    errors: int
    replica_reads: tuple[int, int] | None = None  # (by the replica, by the primary)

    @property
    def replica_share(self) -> float:
        """Of the reads in the recorded phases, the share the replica served."""
        if self.replica_reads is None or not sum(self.replica_reads):
            return math.nan
        return self.replica_reads[0] / sum(self.replica_reads)

    @property
    def tail(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms else math.nan


@dataclass(frozen=True, slots=True)
class Ratio:
    numerator: str
    denominator: str
    rate: float  # of the aggregate rates
    per_round: tuple[float, ...]
    cpu: float  # denominator's CPU per request over the numerator's
    target: float
    aim: float | None

    @property
    def met(self) -> bool:
        return self.rate >= self.target


@dataclass(frozen=True, slots=True)
class EndpointsReport:
    tool: str
    seconds: int
    connections: int
    rounds: int
    body_bytes: int
    same_data: bool
    phases: tuple[Phase, ...]
    environment: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...] = ()
    summaries: tuple[Summary, ...] = field(default=())
    ratios: tuple[Ratio, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    base: str
    pid: int
    log: Path
    process: asyncio.subprocess.Process
    replica: str | None = None  # the name of the replica it reads from (metrics, logs)


async def run_endpoints(
    *,
    admin_url: str | None,
    seconds: int,
    connections: int,
    rounds: int,
    redis_url: str = DEFAULT_REDIS_URL,
    tool: str = "auto",
    service_env: Sequence[tuple[str, str]] = (),
    warmup_seconds: int = WARMUP_SECONDS,
    settle_seconds: int = SETTLE_SECONDS,
) -> EndpointsReport:
    """Seed, start the eight servers, check their data, drive them in rotated rounds."""
    if seconds < 1 or connections < 1 or rounds < 1:
        raise BenchError("seconds, connections and rounds must be 1 or more")
    chosen = choose_tool(tool, fallback="loadtest")
    prefix = "svc_bench_" + secrets.token_hex(6)
    token, cursor_secret = secrets.token_hex(16), secrets.token_hex(16)
    warnings: list[str] = []
    if chosen != "wrk":
        warnings.append(
            "WARNING: without wrk the load comes from Python clients, which top out near "
            "the speed of the cached and constant endpoints: those ratios then measure the "
            "client. Install wrk (apt-get install wrk) for them."
        )
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        async with throwaway_database(admin_url or DEFAULT_ADMIN_URL) as url:
            await prepare_endpoints_database(url)
            body = await capture_body(url, PATH, token=token, cursor_secret=cursor_secret)
            body_file = Path(workdir) / "body.json"
            body_file.write_bytes(body)
            redis_key = f"{prefix}:reference-body"
            try:
                await _redis_set(redis_url, redis_key, body)
                env = {
                    DATABASE_URL_VARIABLE: url, TOKEN_VARIABLE: token,
                    BODY_FILE_VARIABLE: str(body_file), REDIS_URL_VARIABLE: redis_url,
                    REDIS_KEY_VARIABLE: redis_key, "DATABASE_URL": url, "API_TOKENS": token,
                    "CURSOR_SECRET": cursor_secret, "CACHE_PREFIX": prefix,
                    "LOG_LEVEL": "WARNING", "CACHE_SKIP": "", "READ_REQUIRES_TOKEN": "false",
                    **dict(service_env),
                }  # fmt: skip
                async with start_servers(env, Path(workdir), redis_url) as servers:
                    same, notes = await check_same_data(servers, token, body)
                    warnings += notes
                    load_before = os.getloadavg()[0]
                    phases = await drive(
                        servers, chosen, token=token, seconds=seconds,
                        connections=connections, rounds=rounds, warmup_seconds=warmup_seconds,
                        settle_seconds=settle_seconds,
                    )  # fmt: skip
                    load_after = os.getloadavg()[0]
                    warnings += [f"{s.name}: {line}" for s in servers.values() for line in _log(s)]
                    check_replica_served(phases, warnings)
                environment = await describe(url, redis_url, chosen)
                environment += (("1-min load average", f"{load_before:.2f} -> {load_after:.2f}"),)
            finally:
                await forget_keys(redis_url, prefix)
    summaries = summarize(phases)
    return EndpointsReport(
        tool=chosen, seconds=seconds, connections=connections, rounds=rounds,
        body_bytes=len(body), same_data=same, phases=tuple(phases),
        environment=environment, warnings=tuple(warnings), summaries=summaries,
        ratios=ratios(phases, summaries),
    )  # fmt: skip


async def prepare_endpoints_database(url: str) -> None:
    """1,000 users in exactly 5 of 100 groups each: the 100-user page is about 20 KB."""
    await asyncio.to_thread(run_upgrade, url)
    engine = make_engine(Settings(database_url=url))
    try:
        await seed(engine, users=USERS, groups=GROUPS, permissions=30)
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM auth_user_group"))
            links = [
                {"u": user, "g": (user * 7 + k * 19) % GROUPS + 1}
                for user in range(1, USERS + 1)
                for k in range(GROUPS_EACH)
            ]
            await connection.execute(
                text("INSERT INTO auth_user_group (user_id, group_id) VALUES (:u, :g)"), links
            )
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM (ANALYZE)"))
    finally:
        await engine.dispose()


def server_commands(
    redis_url: str, database_url: str | None = None
) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each server's command line and its own environment on top of the shared one; with
    `database_url`, also the two service servers that name it as their one replica."""
    python = sys.executable
    reference = "service.bench.reference:"
    uvicorn = [python, "-m", "uvicorn", "--factory", *UVICORN, "--log-level", "warning"]
    service = [python, "-m", "service", "serve", "--workers", "1"]
    commands = {
        "fastapi": ([*uvicorn, "--no-access-log", reference + "make_fastapi_app"], {}),
        "asyncpg": ([*uvicorn, "--no-access-log", reference + "make_asyncpg_app"], {}),
        "constant": ([*uvicorn, "--no-access-log", reference + "make_constant_app"], {}),
        "redis-get": ([*uvicorn, "--no-access-log", reference + "make_redis_app"], {}),
        "service-memory": (service, {"CACHE_URL": "memory://"}),
        "service-redis": (service, {"CACHE_URL": redis_url}),
    }
    if database_url is not None:
        replica = {REPLICA_URLS_VARIABLE: database_url}
        commands["service-memory-replica"] = (service, {"CACHE_URL": "memory://", **replica})
        commands["service-redis-replica"] = (service, {"CACHE_URL": redis_url, **replica})
    return commands


@asynccontextmanager
async def start_servers(
    env: dict[str, str], workdir: Path, redis_url: str
) -> AsyncIterator[dict[str, Server]]:
    """Every server on its own loopback port; all terminated on the way out."""
    async with AsyncExitStack() as stack:
        servers: dict[str, Server] = {}
        for name, (command, own) in server_commands(redis_url, env["DATABASE_URL"]).items():
            port = free_port()
            if name.startswith("service"):
                command = [*command, "--port", str(port)]
            else:
                command = [*command[:-1], "--port", str(port), command[-1]]
            replica = own.get(REPLICA_URLS_VARIABLE)
            log = workdir / f"{name}.log"
            named = database_name(replica) if replica else None
            servers[name] = await stack.enter_async_context(
                _server(name, command, {**env, **own}, port, log, replica=named)
            )
        await asyncio.gather(*(_wait_until_up(server, env) for server in servers.values()))
        yield servers


@asynccontextmanager
async def _server(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    log: Path,
    *,
    replica: str | None = None,
) -> AsyncIterator[Server]:
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        process = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, **env}, stdout=descriptor, stderr=descriptor
        )
    finally:
        os.close(descriptor)
    try:
        yield Server(name, f"http://127.0.0.1:{port}", process.pid, log, process, replica)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_until_up(server: Server, env: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {env[TOKEN_VARIABLE]}"}
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(base_url=server.base, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.returncode is not None:
                break
            try:
                if (await client.get(PATH, headers=headers)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    tail = "\n".join(server.log.read_text(errors="replace").splitlines()[-20:])
    raise BenchError(f"{server.name} did not come up within {STARTUP_SECONDS:.0f} s:\n{tail}")


async def check_same_data(
    servers: dict[str, Server], token: str, body: bytes
) -> tuple[bool, list[str]]:
    """The service and the database references must return the same users, groups, fields;
    the cached and the floor endpoints the captured bytes, and so must every service server
    asked uncached (a replica server's read made on its replica, as its metrics tell)."""
    headers = {"Authorization": f"Bearer {token}"}
    notes: list[str] = []
    services = [name for name in servers if name.startswith("service")]
    async with httpx.AsyncClient(timeout=10.0, headers=headers) as client:
        service = await client.get(servers["service-memory"].base + PATH)
        expected = service.json()["data"]
        for name in ("fastapi", "asyncpg"):
            data = (await client.get(servers[name].base + PATH)).json()["data"]
            if data != expected:
                notes.append(f"WARNING: {name} does not return the service's data")
        for name in ("constant", "redis-get", *services):
            for _ in range(2):  # the second one is a cache hit
                response = await client.get(servers[name].base + PATH)
            if response.content != body:
                notes.append(f"WARNING: {name} does not return the captured body")
            if name.startswith("service") and response.headers.get("x-cache") != "HIT":
                notes.append(f"WARNING: {name} gave X-Cache {response.headers.get('x-cache')}")
        for name in services:
            server = servers[name]
            before = await reads_served(client, server)
            response = await client.get(server.base + PATH, headers=dict(NO_CACHE))
            after = await reads_served(client, server)
            if response.content != body:
                notes.append(f"WARNING: {name} does not return the captured body uncached")
            if before is not None and after is not None and after[0] <= before[0]:
                notes.append(f"WARNING: {name}'s replica did not serve its uncached read")
    return not notes, notes


READS = re.compile(r'^db_reads_total\{database="([^"]*)"\} ([0-9.e+]+)$', re.MULTILINE)


async def reads_served(client: httpx.AsyncClient, server: Server) -> tuple[int, int] | None:
    """(reads its replica served, reads the primary served) so far, from the server's
    /metrics; None for a server without a replica."""
    if server.replica is None:
        return None
    response = await client.get(server.base + "/metrics")
    if response.status_code != 200:
        raise BenchError(f"{server.name}: GET /metrics answered {response.status_code}")
    counts = {name: round(float(value)) for name, value in READS.findall(response.text)}
    return counts.get(server.replica, 0), counts.get("primary", 0)


def check_replica_served(phases: Sequence[Phase], warnings: Sequence[str]) -> None:
    """A replica server whose replica served none of the reads measured nothing of what it
    stands for: the run is refused."""
    for name in sorted({p.endpoint for p in phases if p.reads is not None}):
        reads = [p.reads for p in phases if p.endpoint == name and p.reads is not None]
        if not sum(served for served, _ in reads):
            primary = sum(on_primary for _, on_primary in reads)
            raise BenchError(
                f"{name}: its replica served none of the reads ({primary} on the primary)"
                + "".join(f"\n{line}" for line in warnings)
            )


async def drive(
    servers: dict[str, Server],
    tool: str,
    *,
    token: str,
    seconds: int,
    connections: int,
    rounds: int,
    warmup_seconds: int = WARMUP_SECONDS,
    settle_seconds: int = SETTLE_SECONDS,
) -> list[Phase]:
    phases: list[Phase] = []
    # A warm-up per endpoint, not recorded: pools filled, statements prepared, caches full.
    for _, server_name, extra in ENDPOINTS if warmup_seconds > 0 else ():
        headers = (("Authorization", f"Bearer {token}"), *extra)
        await _load(
            tool, "warm-up", servers[server_name].base, headers, warmup_seconds, connections
        )
    async with httpx.AsyncClient(timeout=10.0) as metrics:
        for number in range(1, rounds + 1):
            shift = (number - 1) % len(ENDPOINTS)
            for name, server_name, extra in ENDPOINTS[shift:] + ENDPOINTS[:shift]:
                server = servers[server_name]
                headers = (("Authorization", f"Bearer {token}"), *extra)
                if settle_seconds > 0:
                    await _load(tool, "settle", server.base, headers, settle_seconds, connections)
                reads_before = await reads_served(metrics, server)
                cpu_before = _cpu_seconds(server.pid)
                phase = await _load(tool, name, server.base, headers, seconds, connections, number)
                cpu = _cpu_seconds(server.pid) - cpu_before
                reads_after = await reads_served(metrics, server)
                reads = None
                if reads_before is not None and reads_after is not None:
                    reads = (reads_after[0] - reads_before[0], reads_after[1] - reads_before[1])
                phases.append(Phase(name, number, *phase, cpu, reads))
    return phases


Measured = tuple[int, float, float, float, int]  # requests, seconds, p50 ms, p99 ms, errors


async def _load(
    tool: str,
    name: str,
    base: str,
    headers: Sequence[tuple[str, str]],
    seconds: int,
    connections: int,
    number: int = 0,
) -> Measured:
    if tool == "wrk":
        return await load_with_wrk(name, number, base + PATH, headers, seconds, connections)
    return await load_with_runner(name, number, base, headers, seconds, connections)


async def load_with_wrk(
    name: str,
    number: int,
    url: str,
    headers: Sequence[tuple[str, str]],
    seconds: int,
    connections: int,
) -> Measured:
    """One wrk thread: on two cores the server keeps the other one."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "--latency"]
    for key, value in headers:
        command += ["-H", f"{key}: {value}"]
    process = await asyncio.create_subprocess_exec(
        *command, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), seconds + 30)
    except TimeoutError:
        raise BenchError(f"wrk on {name} did not finish within {seconds + 30} s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return parse_wrk(output.decode())


def parse_wrk(output: str) -> Measured:
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    p50 = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if total is None or p50 is None or p99 is None:
        raise BenchError(f"cannot read wrk's output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return (
        int(total.group(1)),
        _ms(total.group(2), total.group(3)) / 1000,
        _ms(p50.group(1), p50.group(2)),
        _ms(p99.group(1), p99.group(2)),
        errors,
    )


def _ms(number: str, unit: str) -> float:
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


async def load_with_runner(
    name: str,
    number: int,
    base: str,
    headers: Sequence[tuple[str, str]],
    seconds: int,
    connections: int,
) -> Measured:
    """`service loadtest`'s runner in two client processes (httpx costs the client CPU)."""
    from service.loadtest.report import percentile
    from service.loadtest.runner import LoadPlan, run_processes

    path, query = PATH.split("?", 1)
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as scenario:
        spec = {"path": path, "params": params, "headers": dict(headers)}
        json.dump({"name": name, "requests": [spec]}, scenario)
    try:
        plan = LoadPlan(base, scenario.name, connections, float(seconds), None, None, number, 5.0)
        results = await asyncio.to_thread(run_processes, plan, 2)
    finally:
        os.unlink(scenario.name)
    latencies = sorted(results.latencies)
    errors = sum(results.errors.values()) + sum(
        n for status, n in results.statuses.items() if not status.startswith("2")
    )
    return (
        results.count,
        results.elapsed,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        errors,
    )


def summarize(phases: Sequence[Phase]) -> tuple[Summary, ...]:
    summaries = []
    for name, _, _ in ENDPOINTS:
        mine = [p for p in phases if p.endpoint == name]
        requests = sum(p.requests for p in mine)
        reads = [p.reads for p in mine if p.reads is not None]
        by_replica = (sum(r for r, _ in reads), sum(q for _, q in reads)) if reads else None
        summaries.append(
            Summary(
                endpoint=name,
                rate=requests / sum(p.seconds for p in mine),
                p50_ms=statistics.median(p.p50_ms for p in mine),
                p99_ms=statistics.median(p.p99_ms for p in mine),
                cpu_us=sum(p.cpu_seconds for p in mine) / requests * 1e6 if requests else math.nan,
                errors=sum(p.errors for p in mine),
                replica_reads=by_replica,
            )
        )
    return tuple(summaries)


def ratios(phases: Sequence[Phase], summaries: Sequence[Summary]) -> tuple[Ratio, ...]:
    by_name = {s.endpoint: s for s in summaries}
    rate = {(p.endpoint, p.round): p.rate for p in phases}
    rounds = sorted({p.round for p in phases})
    result = []
    for top, bottom, target, aim in TARGETS:
        per_round = tuple(rate[(top, r)] / rate[(bottom, r)] for r in rounds)
        result.append(
            Ratio(
                numerator=top,
                denominator=bottom,
                rate=by_name[top].rate / by_name[bottom].rate,
                per_round=per_round,
                cpu=by_name[bottom].cpu_us / by_name[top].cpu_us,
                target=target,
                aim=aim,
            )
        )
    return tuple(result)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _redis_set(url: str, key: str, body: bytes) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5.0)
    try:
        await client.set(key, body)
    finally:
        await client.aclose()


async def forget_keys(url: str, prefix: str) -> None:
    """Delete this run's keys, and only them: the prefix is unique to the run."""
    client = redis.Redis.from_url(url, socket_timeout=5.0)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


def _log(server: Server) -> list[str]:
    lines = server.log.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line for line in lines if line.strip()][:20]


async def describe(url: str, redis_url: str, tool: str) -> tuple[tuple[str, str], ...]:
    engine = make_engine(Settings(database_url=url))
    try:
        async with engine.connect() as connection:
            server_version = str(await connection.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0)
    try:
        redis_version = str((await client.info("server")).get("redis_version", "?"))
    finally:
        await client.aclose()
    environment = [
        *machine(),
        ("PostgreSQL", server_version),
        ("Redis", redis_version),
    ]
    for package in ("uvicorn", "uvloop", "httptools", "fastapi", "starlette", "sqlalchemy"):
        environment.append((package, version(package)))
    environment.append(("asyncpg", version("asyncpg")))
    environment.append(("load", await _tool_version(tool)))
    return tuple(environment)


async def _tool_version(tool: str) -> str:
    if tool != "wrk":
        return f"service loadtest runner, 2 processes, httpx {version('httpx')}"
    return await wrk_version() + " (1 thread)"


def print_tables(
    console: Console,
    summaries: Sequence[Summary],
    ratios: Sequence[Ratio],
    *,
    title: str | None = None,
) -> None:
    """The endpoint table and the ratio table (the endpoints and shop suites print both)."""
    from rich.table import Table

    table = Table(title=title)
    header = ("endpoint", "req/s", "p50 ms", "p99 ms", "p99/p50", "CPU us/req", "errors")
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for s in summaries:
        table.add_row(
            s.endpoint, f"{s.rate:,.0f}", f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}",
            f"{s.tail:.2f}", f"{s.cpu_us:.0f}", str(s.errors),
        )  # fmt: skip
    console.print(table)
    ratio_table = Table(title="ratios (requests/s; CPU = inverse ratio of server CPU per request)")
    for index, name in enumerate(("ratio", "req/s", "per round", "CPU", "target", "verdict")):
        ratio_table.add_column(name, justify="left" if index == 0 else "right")
    for r in ratios:
        goal = f">= {r.target:.2f}" + (f" (aim {r.aim})" if r.aim else "")
        ratio_table.add_row(
            f"{r.numerator} / {r.denominator}", f"{r.rate:.2f}",
            " ".join(f"{x:.2f}" for x in r.per_round), f"{r.cpu:.2f}", goal,
            "met" if r.met else f"MISSED by {1 - r.rate / r.target:.1%}",
        )  # fmt: skip
    console.print(ratio_table)


def print_report(report: EndpointsReport) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, width=max(110, Console().width))
    title = (
        f"GET {PATH} with a token; one worker each, {report.connections} connections, "
        f"{report.rounds} rounds of {report.seconds} s, {report.body_bytes:,}-byte body"
    )
    print_tables(console, report.summaries, report.ratios, title=escape(title))
    tails = [s for s in report.summaries if s.tail > TAIL_TARGET]
    console.print(
        f"p99 within {TAIL_TARGET:g}x p50: "
        + ("all endpoints" if not tails else "missed by " + ", ".join(
            f"{s.endpoint} ({s.tail:.1f}x)" for s in tails)),
        markup=False,
    )  # fmt: skip
    replicas = [s for s in report.summaries if s.replica_reads is not None]
    if replicas:
        console.print(
            "reads served by the replica (db_reads_total over the recorded phases): "
            + "; ".join(f"{s.endpoint} {s.replica_share:.1%} ({s.replica_reads[0]:,} of "
                        f"{sum(s.replica_reads):,})" for s in replicas if s.replica_reads),
            markup=False,
        )  # fmt: skip
    console.print(", ".join(f"{k} {v}" for k, v in report.environment), markup=False)
    for line in report.warnings:
        console.print(line, markup=False)
