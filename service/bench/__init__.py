"""`service bench SUITE`: measurements on throwaway PostgreSQL databases, one module per suite.

Each suite registers its own sub-command here with an `_add_<suite>` function (the same
pattern as service/cli.py) and imports its module only when it runs, so `service --help`
and the other commands never load the web stack or the suites.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from service.settings import Settings


def add_suites(parser: argparse.ArgumentParser) -> None:
    """Register every suite under `service bench`; with none named, `loading` runs."""
    suites = parser.add_subparsers(dest="suite", required=False, metavar="SUITE")
    for add in (
        _add_loading, _add_paging, _add_endpoints, _add_shop, _add_writes, _add_cache,
        _add_embedded,
    ):  # fmt: skip
        add(suites)
    parser.set_defaults(handler=default_command)


def default_command(_args: argparse.Namespace, settings: Settings) -> int:
    """`service bench` alone: the loading strategies on SQLite at the default size."""
    defaults = argparse.Namespace(database_url=None, users=10_000, repeats=20)
    return loading_command(defaults, settings)


def _add_cache(suites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from service.bench.cache import add_arguments

    parser = suites.add_parser(
        "cache", help="a cached page beside a constant body of the same size (one uvicorn worker)"
    )
    add_arguments(parser)
    parser.set_defaults(handler=cache_command)


def cache_command(args: argparse.Namespace, _settings: Settings) -> int:
    from service.bench.cache import run

    return run(args)


def _add_admin_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-url",
        default=None,
        help="a PostgreSQL URL to create the throwaway svc_bench_* database from "
        "(default postgresql+asyncpg://postgres@127.0.0.1:5432/test)",
    )


def _add_paging(suites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = suites.add_parser(
        "paging", help="page 1 against a deep page: keyset cursors beside OFFSET"
    )
    _add_admin_url(parser)
    parser.add_argument("--users", type=_positive, default=1_000_000)
    parser.add_argument("--page", type=_positive, default=50, help="rows per page")
    parser.add_argument("--depth", type=_positive, default=20_000, help="the deep page's number")
    parser.add_argument("--repeats", type=_positive, default=30, help="timed runs per case")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also print EXPLAIN (ANALYZE, BUFFERS) of the main read shapes",
    )
    parser.set_defaults(handler=paging_command)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def paging_command(args: argparse.Namespace, _settings: Settings) -> int:
    from service.bench.common import BenchError
    from service.bench.paging import print_report, run_paging

    # One INFO line per timed request (the client's and the service's) would bury the table.
    for name in ("httpx", "service.requests"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        report = asyncio.run(
            run_paging(
                database_url=args.admin_url,
                users=args.users,
                page=args.page,
                depth=args.depth,
                repeats=args.repeats,
                explain=args.explain,
            )
        )
    except BenchError as error:
        print(f"service bench paging: {error}", file=sys.stderr)
        return 1
    print_report(report)
    return 0


def _add_loading(suites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = suites.add_parser(
        "loading",
        help="users with their groups: lazy N+1, the eager strategies, the planner, the driver",
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="also run on PostgreSQL: an admin URL to create the throwaway svc_bench_* "
        "database from (SQLite, in a temporary file, always runs)",
    )
    parser.add_argument("--users", type=_positive, default=10_000)
    parser.add_argument("--repeats", type=_positive, default=20, help="timed runs per case")
    parser.set_defaults(handler=loading_command)


def loading_command(args: argparse.Namespace, _settings: Settings) -> int:
    from service.bench.common import BenchError
    from service.bench.loading import print_report, run_loading

    try:
        report = asyncio.run(
            run_loading(database_url=args.database_url, users=args.users, repeats=args.repeats)
        )
    except BenchError as error:
        print(f"service bench loading: {error}", file=sys.stderr)
        return 1
    print_report(report)
    return 0


def _add_endpoints(suites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = suites.add_parser(
        "endpoints",
        help="the users page beside hand-written FastAPI, asyncpg, constant and Redis endpoints",
    )
    _add_admin_url(parser)
    parser.add_argument("--seconds", type=_positive, default=10, help="per endpoint and round")
    parser.add_argument("--connections", type=_positive, default=32)
    parser.add_argument("--rounds", type=_positive, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--tool", choices=("auto", "wrk", "loadtest"), default="auto")
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the service's servers only (what-if runs), repeatable",
    )
    parser.set_defaults(handler=endpoints_command)


def endpoints_command(args: argparse.Namespace, _settings: Settings) -> int:
    from service.bench.common import BenchError
    from service.bench.endpoints import print_report, run_endpoints

    for name in ("httpx", "service.requests", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    pairs = [item.partition("=") for item in args.service_env]
    if any(not name or not equals for name, equals, _ in pairs):
        print("service bench endpoints: --service-env takes NAME=VALUE", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            run_endpoints(
                admin_url=args.admin_url,
                seconds=args.seconds,
                connections=args.connections,
                rounds=args.rounds,
                redis_url=args.redis_url,
                tool=args.tool,
                service_env=[(name, value) for name, _, value in pairs],
            )
        )
    except BenchError as error:
        print(f"service bench endpoints: {error}", file=sys.stderr)
        return 1
    print_report(report)
    return 0


def _add_shop(suites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = suites.add_parser(
        "shop",
        help="the shop's products page and the users page, each beside hand-written asyncpg",
    )
    _add_admin_url(parser)
    parser.add_argument("--seconds", type=_positive, default=10, help="per endpoint and round")
    parser.add_argument("--connections", type=_positive, default=32)
    parser.add_argument("--rounds", type=_positive, default=3)
    parser.set_defaults(handler=shop_command)


def shop_command(args: argparse.Namespace, _settings: Settings) -> int:
    from service.bench.common import BenchError
    from service.bench.shop import print_report, run_shop

    for name in ("httpx", "service.requests", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        report = asyncio.run(
            run_shop(
                admin_url=args.admin_url,
                seconds=args.seconds,
                connections=args.connections,
                rounds=args.rounds,
            )
        )
    except BenchError as error:
        print(f"service bench shop: {error}", file=sys.stderr)
        return 1
    print_report(report)
    return 0


def _add_writes(suites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = suites.add_parser(
        "writes", help="rows/s of one 1000-item POST batch against 1000 single POSTs"
    )
    _add_admin_url(parser)
    parser.add_argument("--repeats", type=_positive, default=5, help="rounds of the three modes")
    parser.add_argument("--batch", type=_positive, default=1000, help="rows per round and mode")
    parser.add_argument("--concurrency", type=_positive, default=8, help="clients for singles")
    parser.set_defaults(handler=writes_command)


def writes_command(args: argparse.Namespace, _settings: Settings) -> int:
    from service.bench.common import BenchError
    from service.bench.writes import print_report, run_writes

    for name in ("httpx", "service.requests"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        report = asyncio.run(
            run_writes(
                admin_url=args.admin_url,
                repeats=args.repeats,
                batch=args.batch,
                concurrency=args.concurrency,
            )
        )
    except BenchError as error:
        print(f"service bench writes: {error}", file=sys.stderr)
        return 1
    print_report(report)
    return 0


def _add_embedded(suites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = suites.add_parser(
        "embedded",
        help="each group's 5 newest members and count, beside loading all and one query per group",
    )
    _add_admin_url(parser)
    parser.add_argument("--users", type=_positive, default=1_000_000)
    parser.add_argument("--groups", type=_positive, default=1_000)
    parser.add_argument(
        "--memberships", type=_positive, default=2_500_000, help="about; skewed over the groups"
    )
    parser.add_argument("--repeats", type=_positive, default=30, help="timed runs per case")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="also print the key lines of each statement's EXPLAIN (ANALYZE, BUFFERS)",
    )
    parser.set_defaults(handler=embedded_command)


def embedded_command(args: argparse.Namespace, _settings: Settings) -> int:
    from service.bench.common import BenchError
    from service.bench.embedded import print_report, run_embedded

    for name in ("httpx", "service.requests", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        report = asyncio.run(
            run_embedded(
                admin_url=args.admin_url,
                users=args.users,
                groups=args.groups,
                memberships=args.memberships,
                repeats=args.repeats,
                explain=args.explain,
            )
        )
    except BenchError as error:
        print(f"service bench embedded: {error}", file=sys.stderr)
        return 1
    print_report(report)
    return 0
