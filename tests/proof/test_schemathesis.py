"""Schemathesis against the live /openapi.json of a real `service serve`: zero failures, no 5xx.

Two runs over one fresh SQLite database: anonymous, then with a bearer token. Every built-in
check, every phase (examples, coverage, fuzzing, stateful through the document's links), a
fixed seed and a bounded example count.

The query language has rules OpenAPI cannot state per parameter: `fields[path]` needs an
`include` naming the path, a cursor is bound to the sort and filters that issued it, `sort`
may not name a key both ways, a response embeds at most `MAX_EMBEDDED_ROWS` rows, and a body
may only reference rows that exist. Schemathesis is told that a schema-valid request may
therefore meet a 400 or a 422, and this test then checks every such rejection itself: its
problem `detail` must be one of exactly those rules (`CROSS_PARAMETER_RULES`), or the
server's judgement of a name (`NAME_RULES`: names are free text in the document, so that a
misspelling reaches the server's suggestion), so a parameter whose own schema is looser
than the service in any other way still fails the test.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN
from tests.ops.servers import Served, serve, serve_env

pytestmark = pytest.mark.slow

SEED = 20240601
MAX_EXAMPLES = 12
RUN_TIMEOUT = 240.0
SEED_SIZES = ("--users", "40", "--groups", "8", "--permissions", "12")

# (status, problem detail) of a rejection a schema-valid request may meet, and why.
CROSS_PARAMETER_RULES: tuple[tuple[int, re.Pattern[str]], ...] = (
    (400, re.compile(r"^(fields|sort|limit)\[[a-z_.]+\] names a path that is not included$")),
    (400, re.compile(r"^count\[[a-z_.]+\] names no to-many relationship of a returned level")),
    (400, re.compile(r"^the cursor is not valid for this query")),
    (400, re.compile(r"^sort(\[[a-z_.]+\])? names '[a-z_]+' both ascending and descending$")),
    (400, re.compile(r"^the response would embed more than \d+ rows")),
    (400, re.compile(r"^at most \d+ filters$")),  # each filter is its own parameter
    (400, re.compile(r"^the response may embed up to \d+ rows \(limit x limit\[path\]\)")),
    # A zoned timestamp whose UTC value falls outside years 1..9999.
    (400, re.compile(r"^'[^']*' is out of range$")),
    # An id list names rows by key; any integer in the key's range is valid JSON for it.
    (422, re.compile(r"^/(\d+/)?[a-z]+_ids/\d+: no [a-z]+ with id -?\d+$")),
)
# Names are free text in the document (the server judges them and suggests the right one;
# a browser-side pattern would hide that): a schema-valid string may name nothing.
NAME_RULES: tuple[tuple[int, re.Pattern[str]], ...] = (
    (400, re.compile(r"^(['\"]).*\1 is not a valid name$", re.DOTALL)),
    (400, re.compile(r"^unknown (field|relationship) '.*' for [a-z_]+", re.DOTALL)),
    (400, re.compile(r"^[a-z]+(\[[a-z_.]+\])? must name at least one (attribute|relationship)$")),
    (400, re.compile(r"^NUL characters are not allowed$")),
    (400, re.compile(r"^bad include path '.*'$", re.DOTALL)),
    (400, re.compile(r"^a path has at most \d+ names$")),
    (400, re.compile(r"^at most \d+ include paths \(counting parents\)$")),
    (400, re.compile(r"^include paths are at most \d+ deep$")),
    (400, re.compile(r"^'[a-z_]+' is a relationship and cannot be a sort key$")),
)
# Rejections of schema-valid input that are service bugs, each pinned by a strict xfail below.
KNOWN_BUGS: tuple[tuple[int, re.Pattern[str]], ...] = ()

CONFIG = """
[checks.positive_data_acceptance]
# The cross-parameter rules above; the test audits every such rejection itself. 414: every
# declared parameter at once (about 170 on some lists) can exceed the 8 KiB URL limit.
expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "414", "422", "429", "5xx"]
"""


@dataclass
class Outcome:
    """What one schemathesis run did, read from its NDJSON event stream."""

    returncode: int
    output: str
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    unexplained_rejections: list[str] = field(default_factory=list)
    known_bugs: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)


def _matches(status: int, body: bytes, rules: tuple[tuple[int, re.Pattern[str]], ...]) -> bool:
    try:
        detail = str(json.loads(body).get("detail", ""))
    except (ValueError, AttributeError):
        return False
    return any(status == rule_status and rule.search(detail) for rule_status, rule in rules)


def _content(response: dict[str, object]) -> bytes:
    content = response.get("content") or {}
    assert isinstance(content, dict)
    if "$base64" in content:
        return base64.b64decode(str(content["$base64"]))
    return str(content.get("text", "")).encode()


def read_events(path: Path, outcome: Outcome) -> None:
    for line in path.read_text().splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if finished is None:
            continue
        recorder = finished["recorder"]
        cases = recorder.get("cases", {})
        for case_id, interaction in recorder.get("interactions", {}).items():
            response = interaction.get("response")
            if response is None:
                continue
            outcome.requests += 1
            status = int(response["status_code"])
            outcome.statuses[status] = outcome.statuses.get(status, 0) + 1
            request = interaction["request"]
            where = f"{request['method']} {request['uri']} -> {status}"
            if status >= 500:
                outcome.server_errors.append(where)
            mode = cases.get(case_id, {}).get("value", {}).get("meta", {}).get("generation", {})
            positive = mode.get("mode") == "positive"
            body = _content(response)
            if not positive or status not in (400, 422):
                continue
            if _matches(status, body, KNOWN_BUGS):
                outcome.known_bugs.append(f"{where}: {body[:300]!r}")
            elif not _matches(status, body, CROSS_PARAMETER_RULES + NAME_RULES):
                outcome.unexplained_rejections.append(f"{where}: {body[:300]!r}")
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check.get("status") == "failure":
                    outcome.failed_checks.append(
                        f"{recorder.get('label')} {case_id}: {check['name']}"
                    )


def run_schemathesis(
    served: Served,
    work: Path,
    name: str,
    headers: list[str],
    *,
    checks: tuple[str, ...] = ("--checks", "all", "--exclude-checks", "allow_header_conformance"),
    phases: str = "examples,coverage,fuzzing,stateful",
) -> Outcome:
    report_dir = work / f"report-{name}"
    config = work / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color"]
    argv += ["run", f"{served.url}/openapi.json", *checks, "--phases", phases]
    argv += ["--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1"]
    argv += ["--generation-database", "none", "--request-timeout", "10"]
    argv += ["--report", "ndjson", "--report-dir", str(report_dir)]
    for header in headers:
        argv += ["--header", header]
    process = subprocess.Popen(
        argv,
        cwd=work,
        env=serve_env({}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    outcome = Outcome(process.returncode, output.decode(errors="replace"))
    reports = sorted(report_dir.glob("*.ndjson"))
    assert reports, f"schemathesis wrote no report:\n{outcome.output[-4000:]}"
    read_events(reports[-1], outcome)
    return outcome


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp_path = tmp_path_factory.mktemp("schemathesis-server")
    database = tmp_path / "schemathesis.db"
    settings = {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "api_tokens": TOKEN,
        "cursor_secret": "schemathesis-secret",
        "cache_url": "memory://",
        "log_level": "INFO",
    }
    # A small data set keeps deep includes under the embedded-rows limit, so most are 200s.
    subprocess.run(
        [sys.executable, "-m", "service", "seed", *SEED_SIZES],
        env=serve_env(settings),
        check=True,
        capture_output=True,
        timeout=120,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    with serve(settings, log_dir=logs, name="schemathesis") as running:
        yield running


def test_schemathesis_finds_nothing_anonymous_or_with_a_token(
    served: Served, tmp_path: Path
) -> None:
    """Every check but `allow_header_conformance` (run on its own below, in one phase)."""
    started = time.monotonic()
    runs = {
        "anonymous": run_schemathesis(served, tmp_path, "anonymous", []),
        "token": run_schemathesis(served, tmp_path, "token", [f"Authorization: Bearer {TOKEN}"]),
    }
    elapsed = time.monotonic() - started
    problems: list[str] = []
    for name, outcome in runs.items():
        summary = (
            f"{name}: {outcome.requests} requests, statuses {sorted(outcome.statuses.items())}"
        )
        if outcome.returncode != 0 or outcome.failed_checks:
            problems.append(
                f"{summary}\nexit {outcome.returncode}; failed checks:\n"
                + "\n".join(outcome.failed_checks[:20])
                + "\n"
                + outcome.output[-6000:]
            )
        if outcome.server_errors:
            problems.append(f"{summary}\n5xx:\n" + "\n".join(outcome.server_errors[:20]))
        if outcome.unexplained_rejections:
            problems.append(
                f"{summary}\nschema-valid requests rejected for no documented reason:\n"
                + "\n".join(outcome.unexplained_rejections[:20])
            )
        if outcome.known_bugs:
            print(f"\n{name}: {len(outcome.known_bugs)} rejections by known bugs, e.g.")
            print("\n".join(outcome.known_bugs[:3]))
        assert outcome.requests > 500, summary
        assert outcome.statuses.get(200, 0) > 100, summary
    assert runs["token"].statuses.get(201, 0) > 0, "the token run never created anything"
    assert runs["token"].statuses.get(204, 0) > 0, "the token run never deleted anything"
    log = served.log_text()
    if "Traceback" in log or re.search(r'"status":\s*5\d\d', log):
        problems.append("the server logged an error:\n" + log[-4000:])
    assert not problems, "\n\n".join(problems)
    assert elapsed < 300, f"the two runs took {elapsed:.0f} s"


def test_schemathesis_allow_header_conformance(served: Served, tmp_path: Path) -> None:
    outcome = run_schemathesis(
        served,
        tmp_path,
        "allow",
        [f"Authorization: Bearer {TOKEN}"],
        checks=("--checks", "allow_header_conformance"),
        phases="coverage",
    )
    assert outcome.returncode == 0, outcome.output[-4000:]
    assert not outcome.failed_checks


def test_an_integral_number_written_with_a_fraction_is_an_integer(served: Served) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=served.url, headers=auth, timeout=10) as http:
        group = http.post("/groups", json={"name": "st-float-group"})
        assert group.status_code == 201, group.text
        group_id = float(group.json()["data"]["id"])
        response = http.post("/permissions", json={"name": "st-float", "group_ids": [group_id]})
    assert response.status_code == 201, response.text
