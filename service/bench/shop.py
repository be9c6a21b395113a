"""The shop benchmark: the second schema's products page beside hand-written asyncpg.

The issue: on examples/shop (a list with one to-one and one many-to-many include), the
service's ratio to a hand-written asyncpg endpoint for that shape should be within 10% of
the auth domain's ratio. So one run measures both pairs under the same conditions: two
throwaway PostgreSQL databases (the auth one prepared as the endpoints suite does, the
shop one built with `Base.metadata.create_all` and the example's seed), four servers with
one worker each (the service with `CACHE_URL=none` on each schema, the endpoints suite's
asyncpg reference, and the Starlette + asyncpg app below for the products page), their
`data` compared byte for byte, then wrk on each in turn, the order rotated every round.
The servers, the load and the environment line come from service/bench/endpoints.py.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
from starlette.applications import Starlette

import examples
from examples.shop.models import Base
from examples.shop.seed import seed
from service.bench.common import BenchError, free_port, throwaway_database
from service.bench.endpoints import (
    ASYNCPG,
    DEFAULT_REDIS_URL,
    PATH,
    SETTLE_SECONDS,
    STARTUP_SECONDS,
    TARGETS,
    UNCACHED,
    WARMUP_SECONDS,
    Phase,
    Ratio,
    Server,
    Summary,
    _cpu_seconds,
    _log,
    _server,
    _wait_until_up,
    describe,
    load_with_wrk,
    prepare_endpoints_database,
    print_tables,
    server_commands,
)
from service.bench.paging import DEFAULT_ADMIN_URL
from service.bench.reference import DATABASE_URL_VARIABLE, TOKEN_VARIABLE, asyncpg_endpoint

SHOP_SHAPE = "fields=sku,name,price&include=category,tags&fields[category]=name&fields[tags]=label"
SHOP_PATH = f"/products?{SHOP_SHAPE}&limit=100"
PRODUCTS, CATEGORIES, TAGS = 2000, 30, 40
# The declarative base the shop's service serves, and the directory it is imported from.
MODELS = f"{Base.__module__}:{Base.__qualname__}"
PROJECT_ROOT = Path(examples.__file__).resolve().parent.parent
TOLERANCE = 0.10  # the shop's ratio within 10% of the auth domain's

SHOP_SERVICE, SHOP_ASYNCPG = "shop: service uncached", "shop: asyncpg"
AUTH_SERVICE, AUTH_ASYNCPG = "auth: service uncached", "auth: asyncpg"
# name, server, path; every request carries the bearer token.
ENDPOINTS = (
    (SHOP_SERVICE, "shop-service", SHOP_PATH),
    (SHOP_ASYNCPG, "shop-asyncpg", SHOP_PATH),
    (AUTH_SERVICE, "auth-service", PATH),
    (AUTH_ASYNCPG, "auth-asyncpg", PATH),
)
# (service, reference) for each schema, shop first.
PAIRS = (("shop-service", "shop-asyncpg", SHOP_PATH), ("auth-service", "auth-asyncpg", PATH))


@dataclass(frozen=True, slots=True)
class ShopReport:
    seconds: int
    connections: int
    rounds: int
    body_bytes: tuple[int, int]  # the service's shop page and auth page
    same_data: bool
    phases: tuple[Phase, ...]
    summaries: tuple[Summary, ...]
    ratios: tuple[Ratio, Ratio]  # shop service / asyncpg, auth service / asyncpg
    environment: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...] = ()

    @property
    def relative(self) -> float:
        """The shop's ratio over the auth domain's (1.0: the same overhead on both)."""
        return self.ratios[0].rate / self.ratios[1].rate

    @property
    def relative_per_round(self) -> tuple[float, ...]:
        shop, auth = self.ratios
        return tuple(s / a for s, a in zip(shop.per_round, auth.per_round, strict=True))

    @property
    def within(self) -> bool:
        return abs(self.relative - 1) <= TOLERANCE


async def run_shop(
    *,
    admin_url: str | None,
    seconds: int,
    connections: int,
    rounds: int,
    warmup_seconds: int = WARMUP_SECONDS,
    settle_seconds: int = SETTLE_SECONDS,
) -> ShopReport:
    """Build both databases, start the four servers, check their data, drive them."""
    if seconds < 1 or connections < 1 or rounds < 1:
        raise BenchError("seconds, connections and rounds must be 1 or more")
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (apt-get install wrk)")
    token, cursor_secret = secrets.token_hex(16), secrets.token_hex(16)
    admin = admin_url or DEFAULT_ADMIN_URL
    with tempfile.TemporaryDirectory(prefix="svc_bench_shop_") as workdir:
        async with throwaway_database(admin) as auth_url, throwaway_database(admin) as shop_url:
            await prepare_endpoints_database(auth_url)
            await prepare_shop_database(shop_url)
            env = {
                TOKEN_VARIABLE: token, "API_TOKENS": token, "CURSOR_SECRET": cursor_secret,
                "CACHE_URL": "none", "LOG_LEVEL": "WARNING", "READ_REQUIRES_TOKEN": "false",
            }  # fmt: skip
            async with start_servers(env, Path(workdir), auth_url, shop_url) as servers:
                same, sizes, warnings = await check_same_data(servers, token)
                load_before = os.getloadavg()[0]
                phases = await drive(
                    servers, token=token, seconds=seconds, connections=connections,
                    rounds=rounds, warmup_seconds=warmup_seconds, settle_seconds=settle_seconds,
                )  # fmt: skip
                load_after = os.getloadavg()[0]
                warnings += [f"{s.name}: {line}" for s in servers.values() for line in _log(s)]
            environment = await describe(auth_url, DEFAULT_REDIS_URL, "wrk")
    environment += (("1-min load average", f"{load_before:.2f} -> {load_after:.2f}"),)
    summaries = summarize(phases)
    return ShopReport(
        seconds=seconds, connections=connections, rounds=rounds, body_bytes=sizes,
        same_data=same, phases=tuple(phases), summaries=summaries,
        ratios=shop_ratios(phases, summaries), environment=environment,
        warnings=tuple(warnings),
    )  # fmt: skip


async def prepare_shop_database(url: str) -> None:
    """The shop's tables by create_all (its own migrations), seeded so the page is full."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        await seed(engine, products=PRODUCTS, categories=CATEGORIES, tags=TAGS)
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM (ANALYZE)"))
    finally:
        await engine.dispose()


@asynccontextmanager
async def start_servers(
    env: dict[str, str], workdir: Path, auth_url: str, shop_url: str
) -> AsyncIterator[dict[str, Server]]:
    """The four servers on loopback ports, the endpoints suite's command lines."""
    commands = server_commands(DEFAULT_REDIS_URL)
    service, reference = commands["service-memory"][0], commands["asyncpg"][0]
    shop_reference = [*reference[:-1], f"{__name__}:make_asyncpg_shop_app"]
    python_path = os.pathsep.join(filter(None, (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))))
    shop = {"MODELS": MODELS, "PYTHONPATH": python_path}
    plan = {  # name: (command, its own environment, the service's command line or uvicorn's)
        "shop-service": (service, {"DATABASE_URL": shop_url, **shop}, True),
        "shop-asyncpg": (shop_reference, {DATABASE_URL_VARIABLE: shop_url}, False),
        "auth-service": (service, {"DATABASE_URL": auth_url}, True),
        "auth-asyncpg": (reference, {DATABASE_URL_VARIABLE: auth_url}, False),
    }
    async with AsyncExitStack() as stack:
        servers: dict[str, Server] = {}
        for name, (command, own, is_service) in plan.items():
            port = free_port()
            flag = ["--port", str(port)]
            line = [*command, *flag] if is_service else [*command[:-1], *flag, command[-1]]
            servers[name] = await stack.enter_async_context(
                _server(name, line, {**env, **own}, port, workdir / f"{name}.log")
            )
        await asyncio.gather(
            *(_wait_until_up(servers[name], env) for name in ("auth-service", "auth-asyncpg")),
            *(
                _wait_for(servers[name], SHOP_PATH, env)
                for name in ("shop-service", "shop-asyncpg")
            ),
        )
        yield servers


async def _wait_for(server: Server, path: str, env: dict[str, str]) -> None:
    """`endpoints._wait_until_up` for a path of its own (that one polls the users page)."""
    headers = {"Authorization": f"Bearer {env[TOKEN_VARIABLE]}"}
    deadline = time.monotonic() + STARTUP_SECONDS
    async with httpx.AsyncClient(base_url=server.base, timeout=2.0, headers=headers) as client:
        while time.monotonic() < deadline and server.process.returncode is None:
            try:
                if (await client.get(path)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    tail = "\n".join(server.log.read_text(errors="replace").splitlines()[-20:])
    raise BenchError(f"{server.name} did not come up within {STARTUP_SECONDS:.0f} s:\n{tail}")


async def check_same_data(
    servers: dict[str, Server], token: str
) -> tuple[bool, tuple[int, int], list[str]]:
    """Each pair must answer 200 with the same `data`, byte for byte (the envelopes differ
    only in the cursor: the service signs it, the hand-written apps send the plain key)."""
    notes: list[str] = []
    sizes: list[int] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=10.0, headers=headers) as client:
        for service, reference, path in PAIRS:
            bodies = []
            for name in (service, reference):
                response = await client.get(servers[name].base + path)
                if response.status_code != 200:
                    notes.append(f"WARNING: {name} answered {response.status_code}")
                bodies.append(response.content)
            sizes.append(len(bodies[0]))
            if data_bytes(bodies[0]) != data_bytes(bodies[1]):
                notes.append(f"WARNING: {reference} does not return {service}'s data")
    return not notes, (sizes[0], sizes[1]), notes


def data_bytes(body: bytes) -> bytes:
    """The `data` member of a page, as sent (a quote inside a string is escaped, so the
    first unescaped `,"meta":` from the end is the envelope's)."""
    if not body.startswith(b'{"data":') or b',"meta":' not in body:
        return body
    return body[: body.rindex(b',"meta":')]


async def drive(
    servers: dict[str, Server],
    *,
    token: str,
    seconds: int,
    connections: int,
    rounds: int,
    warmup_seconds: int,
    settle_seconds: int,
) -> list[Phase]:
    """`endpoints.drive` over these endpoints and their paths: warm-up, then rounds."""
    headers = (("Authorization", f"Bearer {token}"),)
    for _, name, path in ENDPOINTS if warmup_seconds > 0 else ():
        await load_with_wrk("warm-up", 0, servers[name].base + path, headers, warmup_seconds,
                            connections)  # fmt: skip
    phases: list[Phase] = []
    for number in range(1, rounds + 1):
        shift = (number - 1) % len(ENDPOINTS)
        for endpoint, name, path in ENDPOINTS[shift:] + ENDPOINTS[:shift]:
            server, url = servers[name], servers[name].base + path
            if settle_seconds > 0:
                await load_with_wrk("settle", 0, url, headers, settle_seconds, connections)
            before = _cpu_seconds(server.pid)
            measured = await load_with_wrk(endpoint, number, url, headers, seconds, connections)
            phases.append(Phase(endpoint, number, *measured, _cpu_seconds(server.pid) - before))
    return phases


def summarize(phases: Sequence[Phase]) -> tuple[Summary, ...]:
    """`endpoints.summarize` over these endpoints' names."""
    summaries = []
    for endpoint, _, _ in ENDPOINTS:
        mine = [p for p in phases if p.endpoint == endpoint]
        requests = sum(p.requests for p in mine)
        cpu = sum(p.cpu_seconds for p in mine) / requests * 1e6 if requests else math.nan
        summaries.append(
            Summary(
                endpoint=endpoint,
                rate=requests / sum(p.seconds for p in mine),
                p50_ms=statistics.median(p.p50_ms for p in mine),
                p99_ms=statistics.median(p.p99_ms for p in mine),
                cpu_us=cpu,
                errors=sum(p.errors for p in mine),
            )
        )
    return tuple(summaries)


def shop_ratios(phases: Sequence[Phase], summaries: Sequence[Summary]) -> tuple[Ratio, Ratio]:
    """Service over asyncpg per schema; the auth ratio keeps the endpoints suite's target,
    the shop's is 0.9 of the auth ratio (the lower edge of "within 10%")."""
    target, aim = next((t[2], t[3]) for t in TARGETS if t[:2] == (UNCACHED, ASYNCPG))
    auth = _ratio(phases, summaries, AUTH_SERVICE, AUTH_ASYNCPG, target, aim)
    shop = _ratio(phases, summaries, SHOP_SERVICE, SHOP_ASYNCPG, auth.rate * (1 - TOLERANCE), None)
    return shop, auth


def _ratio(
    phases: Sequence[Phase],
    summaries: Sequence[Summary],
    top: str,
    bottom: str,
    target: float,
    aim: float | None,
) -> Ratio:
    by_name = {s.endpoint: s for s in summaries}
    rate = {(p.endpoint, p.round): p.rate for p in phases}
    rounds = sorted({p.round for p in phases})
    return Ratio(
        numerator=top,
        denominator=bottom,
        rate=by_name[top].rate / by_name[bottom].rate,
        per_round=tuple(rate[(top, r)] / rate[(bottom, r)] for r in rounds),
        cpu=by_name[bottom].cpu_us / by_name[top].cpu_us,
        target=target,
        aim=aim,
    )


def print_report(report: ShopReport) -> None:
    from rich.console import Console

    console = Console(highlight=False, width=max(110, Console().width))
    console.print(
        f"shop: GET {SHOP_PATH} ({report.body_bytes[0]:,} bytes)\n"
        f"auth: GET {PATH} ({report.body_bytes[1]:,} bytes)\n"
        f"with a token; one worker each, the service with CACHE_URL=none; "
        f"{report.connections} connections, {report.rounds} rounds of {report.seconds} s",
        markup=False,
    )
    print_tables(console, report.summaries, report.ratios)
    difference = report.relative - 1
    verdict = "within 10%" if report.within else ("above" if difference > 0 else "MISSED")
    console.print(
        f"shop ratio / auth ratio: {report.relative:.2f} (per round "
        + " ".join(f"{x:.2f}" for x in report.relative_per_round)
        + f"): {difference:+.0%}, {verdict}",
        markup=False,
    )
    console.print(", ".join(f"{k} {v}" for k, v in report.environment), markup=False)
    for line in report.warnings:
        console.print(line, markup=False)


# The hand-written endpoint: Starlette + asyncpg + orjson, three statements, dicts, one dumps.

PRODUCTS_SQL = "SELECT sku, name, price, category_id FROM products ORDER BY sku LIMIT $1"
CATEGORIES_SQL = "SELECT id, name FROM categories WHERE id = ANY($1::int[])"
TAGS_SQL = (
    "SELECT pt.product_sku, t.label FROM product_tags pt JOIN tags t ON t.id = pt.tag_id "
    "WHERE pt.product_sku = ANY($1::varchar[]) ORDER BY t.id"
)


def _exact_decimal(value: object) -> object:
    """orjson's `default=`: a price as a JSON number with its stored digits (615.90)."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def _products_page(connection: asyncpg.Connection, limit: int) -> bytes:
    rows = await connection.fetch(PRODUCTS_SQL, limit + 1)
    page = rows[:limit]
    wanted = list({row[3] for row in page if row[3] is not None})
    categories: dict[int, dict[str, Any]] = {}
    if wanted:
        for category_id, name in await connection.fetch(CATEGORIES_SQL, wanted):
            categories[category_id] = {"name": name}
    items: list[dict[str, Any]] = []
    by_sku: dict[str, list[dict[str, Any]]] = {}
    for sku, name, price, category_id in page:
        tags: list[dict[str, Any]] = []
        category = categories.get(category_id)
        items.append({"sku": sku, "name": name, "price": price, "category": category, "tags": tags})
        by_sku[sku] = tags
    if by_sku:
        for sku, label in await connection.fetch(TAGS_SQL, list(by_sku)):
            by_sku[sku].append({"label": label})
    cursor = items[-1]["sku"] if len(rows) > limit else None
    following = f"/products?{SHOP_SHAPE}&limit={limit}&cursor={cursor}" if cursor else None
    envelope = {"data": items, "meta": {"next_cursor": cursor}, "links": {"next": following}}
    return orjson.dumps(envelope, default=_exact_decimal)


def make_asyncpg_shop_app() -> Starlette:
    """The products page with its category and tags, for `uvicorn --factory`."""
    return asyncpg_endpoint("/products", _products_page)
