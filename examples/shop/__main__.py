"""`python -m examples.shop`: create the shop's tables, seed them when empty, then serve them."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from examples.shop.models import Base
from examples.shop.seed import is_empty, seed

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./shop.db"
MODELS = "examples.shop.models:Base"
# The directory that holds the `examples` package, so the server can import MODELS
# from wherever it was started.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.shop",
        description="Create and seed the shop schema, then serve it with `service serve`. "
        "Arguments it does not know (e.g. --workers 2) go to `service serve`.",
    )
    parser.add_argument(
        "--seed-only", action="store_true", help="create and seed the tables, then exit"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    return parser


async def prepare(database_url: str) -> bool:
    """Create the tables that are missing, then seed them if they hold no rows; True if seeded."""
    engine = create_async_engine(database_url)
    try:
        # The example's own "migrations": create_all skips what already exists.
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        if not await is_empty(engine):
            return False
        await seed(engine)
        return True
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    args, serve_args = build_parser().parse_known_args(argv)
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    seeded = asyncio.run(prepare(database_url))
    print("seeded the shop" if seeded else "the shop already holds data; not seeded")
    if args.seed_only:
        return 0
    env = dict(os.environ, MODELS=MODELS, DATABASE_URL=database_url)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")))
    )
    command = [sys.executable, "-m", "service", "serve", "--host", args.host]
    command += ["--port", str(args.port), *serve_args]
    sys.stdout.flush()
    # Replaces this process: signals and the exit status are the server's own.
    os.execvpe(sys.executable, command, env)


if __name__ == "__main__":
    sys.exit(main())
