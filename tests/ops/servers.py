"""Throwaway servers on loopback for the operational tests: `service serve`, PostgreSQL, PgBouncer.

Every helper is a context manager that kills what it started in its `finally`, by the id of
the process (group) it started. Directories handed to the `postgres` OS user (initdb and
pgbouncer refuse to run as root) are made with `tempfile.mkdtemp` and chowned to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.settings import Settings

PG_BIN = Path(os.environ.get("TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PGBOUNCER_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, *, timeout: float, alive: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the process exited with {alive.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {LOOPBACK}:{port} within {timeout} s")


def stop_process(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """SIGTERM the process group this module started, then SIGKILL what is left."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # workers that outlived their supervisor
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)


def postgres_owned_dir(prefix: str) -> Path:
    """A temporary directory (mode 0700) owned by whoever runs the PostgreSQL tools."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    give_to_postgres(path)
    return path


def give_to_postgres(path: Path) -> None:
    """chown to the `postgres` OS user when we are root (the tools then run as that user)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def as_postgres(argv: list[str]) -> list[str]:
    """Run as the `postgres` OS user when we are root; as ourselves otherwise."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


# --- `service serve` -------------------------------------------------------------------------

SETTING_NAMES = frozenset(name.upper() for name in Settings.model_fields)


@dataclass
class Served:
    """A running `service serve`: its base URL and the file its stderr goes to."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The parent's environment minus every service setting, plus `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key.upper() not in SETTING_NAMES and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update({key.upper(): value for key, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def serve(
    settings: Mapping[str, str],
    *,
    log_dir: Path,
    workers: int = 1,
    name: str = "serve",
    args: Sequence[str] = (),
) -> Iterator[Served]:
    """`python -m service serve [args]` on an ephemeral loopback port, up once /healthz answers."""
    port = free_port()
    log_path = log_dir / f"{name}-{port}.log"
    argv = [sys.executable, "-m", "service", "serve", "--host", LOOPBACK, "--port", str(port)]
    argv += ["--workers", str(workers), *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            env=serve_env(settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(process, port, log_path)
    try:
        _wait_healthy(served, workers=workers)
        yield served
    finally:
        stop_process(process)


def _wait_healthy(served: Served, *, workers: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if served.process.poll() is not None:
                pytest.fail(f"service serve exited early:\n{served.log_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if http.get(served.url + "/healthz").status_code == 200:
                    if workers > 1:
                        _wait_for_workers(served, workers, deadline)
                    return
            time.sleep(0.1)
    pytest.fail(f"service serve did not answer /healthz in time:\n{served.log_text()[-3000:]}")


def _wait_for_workers(served: Served, workers: int, deadline: float) -> None:
    """uvicorn logs `Application startup complete.` once per worker."""
    while time.monotonic() < deadline:
        if served.log_text().count("Application startup complete") >= workers:
            return
        time.sleep(0.1)
    pytest.fail(f"not every worker started:\n{served.log_text()[-3000:]}")


# --- a throwaway PostgreSQL cluster ----------------------------------------------------------


class ThrowawayPostgres:
    """initdb into a temporary directory; start and stop it with pg_ctl on an ephemeral port."""

    def __init__(self) -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (PG_BIN / tool).exists():
                pytest.fail(
                    f"{PG_BIN / tool} is missing: the PostgreSQL server binaries are needed"
                )
        self.root = postgres_owned_dir("svc_ops_pg_")
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@{LOOPBACK}:{self.port}/{database}"

    def _run(self, argv: list[str], timeout: float = 60.0) -> None:
        result = subprocess.run(
            as_postgres(argv), capture_output=True, timeout=timeout, check=False, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({result.returncode}):\n{result.stdout.decode()}\n"
                f"{result.stderr.decode()}\n{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-2000:]
        return ""

    def initdb(self) -> None:
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        )

    # Server options past the port, address and socket directory; a subclass may change them.
    options: tuple[str, ...] = (
        "-c fsync=off",
        "-c synchronous_commit=off",
        "-c full_page_writes=off",
    )

    def start(self) -> None:
        options = " ".join(
            (f"-p {self.port} -c listen_addresses={LOOPBACK} -k {self.root}", *self.options)
        )
        self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "30",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        """Stop the cluster if it runs (immediate mode), then remove its directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
                )
        finally:
            self._kill_leftover_postmaster()
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_leftover_postmaster(self) -> None:
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    cluster = ThrowawayPostgres()
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


# --- PgBouncer -------------------------------------------------------------------------------


def find_pgbouncer() -> str:
    """The pgbouncer binary; its absence is a failure, never a skip."""
    found = shutil.which("pgbouncer") or next(
        (path for path in PGBOUNCER_CANDIDATES if Path(path).exists()), None
    )
    if found is None:
        pytest.fail(
            "pgbouncer is not installed; the PgBouncer tests need it "
            "(Debian/Ubuntu: apt-get install -y pgbouncer)"
        )
    return found


@dataclass
class Bouncer:
    process: subprocess.Popen[bytes]
    port: int
    root: Path

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@{LOOPBACK}:{self.port}/{database}"

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "pgbouncer.log").read_text(errors="replace")
        return ""


@contextlib.contextmanager
def pgbouncer(database: str, *, upstream_port: int = 5432, pool_size: int = 5) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode in front of one database of the local server."""
    binary = find_pgbouncer()
    root = postgres_owned_dir("svc_ops_pgbouncer_")
    port = free_port()
    (root / "userlist.txt").write_text('"postgres" ""\n')
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{database} = host={LOOPBACK} port={upstream_port} dbname={database}\n"
        "[pgbouncer]\n"
        f"listen_addr = {LOOPBACK}\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "pool_mode = transaction\n"
        "auth_type = trust\n"
        f"auth_file = {root / 'userlist.txt'}\n"
        "max_client_conn = 100\n"
        f"default_pool_size = {pool_size}\n"
        f"logfile = {root / 'pgbouncer.log'}\n"
        "admin_users = postgres\n"
    )
    for child in root.iterdir():
        give_to_postgres(child)
    process = subprocess.Popen(
        as_postgres([binary, str(root / "pgbouncer.ini")]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    bouncer = Bouncer(process, port, root)
    try:
        try:
            wait_for_port(port, timeout=10.0, alive=process)
        except (RuntimeError, TimeoutError) as error:
            pytest.fail(f"pgbouncer did not start: {error}\n{bouncer.log_text()[-2000:]}")
        yield bouncer
    finally:
        stop_process(process)
        shutil.rmtree(root, ignore_errors=True)


REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def redis_prefix(name: str) -> Iterator[str]:
    """A Redis key prefix of the caller's own (`name_<random>`, which a test may extend);
    every key under it is deleted at the end. No Redis is a failure, never a skip."""
    prefix = f"{name}_{os.urandom(6).hex()}"
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.fail(f"these tests need Redis at {REDIS_URL}: {error}")
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


async def run_loadtest(url: str, *args: str, seconds: float) -> tuple[dict[str, Any], str]:
    """`python -m service loadtest URL ARGS -d SECONDS --json` with the test token, killed if
    it overruns: its JSON report and its stderr. A non-zero exit fails the test."""
    from tests.conftest import TOKEN

    argv = [sys.executable, "-m", "service", "loadtest", url, *args]
    argv += ["-d", str(seconds), "--json", "--timeout", "10"]
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=serve_env({"api_token": TOKEN}),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), seconds + 60)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    assert process.returncode == 0, stderr.decode()[-3000:]
    report: dict[str, Any] = json.loads(stdout)
    return report, stderr.decode()
