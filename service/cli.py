"""The `service` command line: serve, migrate and seed (loadtest and bench slot in alongside)."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.util
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence

from service.bench import add_suites
from service.db import make_engine
from service.logs import configure_logging
from service.metrics import reset_directory
from service.migrations import run_upgrade
from service.schema import SchemaError, load_base, registry_of
from service.seed import DEFAULT_SEED, DEMO_SIZES, SeedError, SeedReport, is_empty, seed
from service.settings import DEFAULT_MODELS, Settings

log = logging.getLogger("service")

Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `service` console script and of `python -m service`."""
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    handler: Handler = args.handler
    return handler(args, settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="service", description="Run, migrate and seed the service."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_serve, _add_migrate, _add_seed, _add_loadtest, _add_bench):
        add(commands)
    return parser


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("serve", help="run the API with uvicorn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    parser.add_argument(
        "--http",
        choices=("auto", "httptools", "h11"),
        default="auto",
        help="HTTP/1.1 parser (default: httptools when installed, else h11)",
    )
    parser.set_defaults(handler=serve)


def _add_migrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("migrate", help="upgrade the database to the newest revision")
    parser.set_defaults(handler=migrate)


def _add_seed(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "seed", help="migrate, then fill the empty database with deterministic demo data"
    )
    parser.add_argument("--users", type=_count, default=10_000)
    parser.add_argument("--groups", type=_count, default=200)
    parser.add_argument("--permissions", type=_count, default=60)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.set_defaults(handler=seed_command)


def _add_loadtest(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from service.loadtest import command

    parser = commands.add_parser("loadtest", help="drive a running server and report its speed")
    command.add_arguments(parser)
    parser.set_defaults(handler=lambda args, _settings: command.run(args))


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bench", help="benchmarks on throwaway databases (default suite: loading, on SQLite)"
    )
    add_suites(parser)


def _count(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def migrate(_args: argparse.Namespace, settings: Settings) -> int:
    run_upgrade(settings.database_url)
    log.info("database is at the newest revision")
    return 0


def seed_command(args: argparse.Namespace, settings: Settings) -> int:
    run_upgrade(settings.database_url)
    try:
        report = asyncio.run(
            _seed(
                settings,
                users=args.users,
                groups=args.groups,
                permissions=args.permissions,
                seed_value=args.seed,
            )
        )
    except SeedError as error:
        print(f"service seed: {error}", file=sys.stderr)
        return 1
    print(report)
    return 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the other commands should not pay for loading the web stack.
    import uvicorn

    from service.repository.replicas import ReplicaSettingError, check_replica_settings

    http = _http_protocol(args.http)
    try:
        # Checked before the server starts: what is left out is a warning, what cannot be
        # served at all a clear failure (not a worker crash loop).
        registry = registry_of(load_base(settings.models))
    except SchemaError as exc:
        log.error("cannot serve MODELS=%s: %s", settings.models, exc)
        return 2
    try:
        check_replica_settings(settings)
    except ReplicaSettingError as exc:
        log.error("cannot serve: %s", exc)
        return 2
    log.info("serving %s", ", ".join(f"/{name}" for name in registry))
    if settings.is_sqlite and settings.models == DEFAULT_MODELS:
        # The zero-setup path: `make run` on a fresh checkout gives a working, populated API.
        # Anyone's own models belong to their application, whose migrations create them.
        run_upgrade(settings.database_url)
        asyncio.run(_seed_if_empty(settings))
    _prepare_workers(settings, args.workers)
    shown_host = "127.0.0.1" if args.host in {"0.0.0.0", "::"} else args.host
    log.info("API docs at http://%s:%d/docs", shown_host, args.port)
    if settings.api_tokens:
        log.info("writes need Authorization: Bearer <one of API_TOKENS>")
    uvicorn.run(
        "service.app:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        reload=args.reload,
        loop="uvloop" if _importable("uvloop") else "auto",
        http=http,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    return 0


def _http_protocol(choice: str) -> type[asyncio.Protocol]:
    """uvicorn's protocol for the parser chosen, answering what it cannot parse with a problem
    document. A class, not an import string: worker processes get it by pickling, by name."""
    from service import protocol

    if choice == "auto":
        choice = "httptools" if protocol.HTTPTOOLS else "h11"
    if choice == "h11":
        return protocol.ProblemH11Protocol
    if not protocol.HTTPTOOLS:
        raise SystemExit("service serve: --http httptools needs the httptools package")
    return protocol.ProblemHttpToolsProtocol


def _prepare_workers(settings: Settings, workers: int) -> None:
    """What worker processes must share: the cursor secret, the metrics directory, the cache."""
    if not settings.cursor_secret:
        # One secret for every worker of this run, so a cursor works whichever worker answers.
        os.environ["CURSOR_SECRET"] = secrets.token_urlsafe(32)
        log.warning("CURSOR_SECRET is not set: cursors stay valid only until this server stops")
    if workers <= 1:
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        reset_directory(directory)
    else:
        directory = tempfile.mkdtemp(prefix="service-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
    if settings.cache_url.startswith("memory://"):
        log.warning(
            "CACHE_URL=memory:// is per process: with %d workers a write through one would "
            "leave the others stale, so caching is off; set CACHE_URL=redis://... to share it",
            workers,
        )
        os.environ["CACHE_URL"] = "none"


async def _seed(
    settings: Settings, *, users: int, groups: int, permissions: int, seed_value: int
) -> SeedReport:
    engine = make_engine(settings)
    try:
        return await seed(
            engine, users=users, groups=groups, permissions=permissions, seed=seed_value
        )
    finally:
        await engine.dispose()


async def _seed_if_empty(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        if await is_empty(engine):
            log.info("%s", await seed(engine, **DEMO_SIZES))
    except SeedError:
        log.info("demo data is already there")  # another process seeded it first
    finally:
        await engine.dispose()


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
