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
    """Register every suite under `service bench`; `loading` and `writes` slot in beside."""
    suites = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    for add in (_add_paging,):
        add(suites)


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
    from service.bench.paging import BenchError, print_report, run_paging

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
