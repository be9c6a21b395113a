"""The `service loadtest` command: options, the live progress line, the final report."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import orjson
from rich.console import Console
from rich.live import Live
from rich.text import Text

from service.loadtest.report import print_summary, summarize
from service.loadtest.runner import LoadPlan, Results, run_load, run_processes
from service.loadtest.scenario import BUILTIN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("-c", "--concurrency", type=int, default=32, help="open connections")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds (upper bound)")
    parser.add_argument("-n", "--requests", type=int, default=None, help="request budget")
    parser.add_argument(
        "-s", "--scenario", default="reads",
        help=f"a JSON file or a built-in: {', '.join(sorted(BUILTIN))}",
    )  # fmt: skip
    parser.add_argument(
        "--token-env",
        default="API_TOKEN",
        help="environment variable holding the bearer token for writes",
    )
    parser.add_argument("-p", "--processes", type=int, default=1, help="client processes")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.processes < 1 or args.duration <= 0:
        print("loadtest: concurrency, processes and duration must be positive", file=sys.stderr)
        return 2
    if not args.url.startswith(("http://", "https://")):
        print("loadtest: the URL must start with http:// or https://", file=sys.stderr)
        return 2
    plan = LoadPlan(
        base_url=args.url.rstrip("/"), scenario=args.scenario, concurrency=args.concurrency,
        duration=args.duration, max_requests=args.requests,
        token=os.environ.get(args.token_env), seed=args.seed, timeout=args.timeout,
    )  # fmt: skip
    try:
        results = _measure(plan, processes=args.processes, quiet=args.json)
    except ValueError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    summary = summarize(results)
    if args.json:
        sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_summary(summary, Console())
    return 0


def _measure(plan: LoadPlan, *, processes: int, quiet: bool) -> Results:
    if processes > 1:
        return run_processes(plan, processes)
    if quiet or not sys.stderr.isatty():
        return asyncio.run(run_load(plan))
    console = Console(stderr=True)
    with Live(Text("starting..."), console=console, refresh_per_second=4) as live:

        def progress(results: Results) -> None:
            rate = results.count / results.elapsed if results.elapsed else 0.0
            errors = sum(results.errors.values()) + sum(
                n for status, n in results.statuses.items() if status.startswith("5")
            )
            done = min(1.0, results.elapsed / plan.duration)
            bar = "#" * int(done * 30)
            live.update(
                Text(
                    f"[{bar:<30}] {results.elapsed:5.1f}s  {results.count:,} requests"
                    f"  {rate:,.0f}/s  errors {errors}"
                )
            )

        return asyncio.run(run_load(plan, progress=progress))
