"""Several processes over one database: shared Redis cache stays fresh; --workers serves."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN
from tests.ops.conftest import metric_value, serve_settings
from tests.ops.servers import REDIS_URL, redis_prefix, serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cache_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted at the end."""
    with redis_prefix("svc_ops") as prefix:
        yield prefix


@pytest.mark.slow
def test_writes_through_one_instance_are_seen_by_the_other_at_once(
    ops_db: tuple[str, str], log_dir: Path, cache_prefix: str
) -> None:
    _, url = ops_db
    settings = serve_settings(url, cache_url=REDIS_URL, cache_prefix=cache_prefix)
    with (
        serve(settings, log_dir=log_dir, name="writer") as writer_server,
        serve(settings, log_dir=log_dir, name="reader") as reader_server,
        httpx.Client(base_url=writer_server.url, timeout=10.0, headers=AUTH) as writer,
        httpx.Client(base_url=reader_server.url, timeout=10.0) as reader,
    ):
        item = "/users/5?fields=id,display_name&include=groups&fields[groups]=id"
        listing = "/users?fields=id,display_name&filter[id][lte]=10&count=true"
        group_users = "/groups/2/users?fields=id"
        hits = 0
        for round_number in range(15):
            # Warm both entries on the reader, then write through the other process.
            for path in (item, listing, group_users):
                for _ in range(2):
                    response = reader.get(path)
                    assert response.status_code == 200
                    hits += response.headers["x-cache"] == "HIT"
            name = f"round {round_number}"
            groups = [2] if round_number % 2 else [3, 4]
            patched = writer.patch("/users/5", json={"display_name": name, "group_ids": groups})
            assert patched.status_code == 200, patched.text
            seen = reader.get(item)
            assert seen.status_code == 200
            assert seen.json()["data"] == {
                "id": 5,
                "display_name": name,
                "groups": [{"id": g} for g in groups],
            }
            rows = reader.get(listing).json()
            assert {"id": 5, "display_name": name} in rows["data"]
            members = {row["id"] for row in reader.get(group_users).json()["data"]}
            assert (5 in members) == (2 in groups)
        created = writer.post("/users", json={"name": "ops_new", "email_address": "n@e.org"})
        assert created.status_code == 201, created.text
        new_id = created.json()["data"]["id"]
        assert reader.get(listing).json()["meta"]["total"] == 10
        assert reader.get(f"/users/{new_id}").status_code == 200
        assert writer.delete(f"/users/{new_id}").status_code == 204
        assert reader.get(f"/users/{new_id}").status_code == 404
    assert hits >= 15 * 3  # the reader really served from the shared cache in between


@pytest.mark.slow
def test_two_workers_serve_and_share_their_metrics(
    ops_db: tuple[str, str], log_dir: Path, cache_prefix: str
) -> None:
    _, url = ops_db
    settings = serve_settings(url, cache_url=REDIS_URL, cache_prefix=cache_prefix, pool_size="3")
    settings["tmpdir"] = str(log_dir)  # where serve makes PROMETHEUS_MULTIPROC_DIR
    requests = 40
    with serve(settings, log_dir=log_dir, workers=2) as server:
        for index in range(requests):
            # A new connection each time, so the kernel spreads them over both workers.
            response = httpx.get(
                f"{server.url}/users?limit=2&fields=id",
                timeout=10.0,
                headers={"Connection": "close"},
            )
            assert response.status_code == 200, (index, response.text)
        first_page = httpx.get(f"{server.url}/users?limit=2", timeout=10.0).json()
        cursor_page = httpx.get(server.url + first_page["links"]["next"], timeout=10.0)
        assert cursor_page.status_code == 200  # whichever worker answers, cursors are valid
        metrics = httpx.get(f"{server.url}/metrics", timeout=10.0)
        log = server.log_text()
    assert metrics.status_code == 200
    text = metrics.text
    count = "http_request_duration_seconds_count"
    assert metric_value(text, count, method="GET", route="/users", status="200") == requests + 2
    assert metric_value(text, "db_pool_size") == 2 * 3  # both workers' pools, summed
    assert metric_value(text, "db_pool_checked_out") == 0
    assert log.count("Application startup complete") == 2
    assert "Traceback" not in log
    # The summed series above came from the samples directory serve made; it goes with serve.
    assert not list(log_dir.glob("service-metrics-*"))


def worker_pids(supervisor: int) -> set[int]:
    """The uvicorn worker processes (multiprocessing spawn children) of a serve process."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    pids = set()
    for child in children:
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                pids.add(int(child))
    return pids


@pytest.mark.slow
def test_a_replaced_worker_does_not_count_twice_in_the_gauges(
    ops_db: tuple[str, str], log_dir: Path
) -> None:
    _, url = ops_db
    settings = serve_settings(url, cache_url="none", pool_size="3", tmpdir=str(log_dir))
    with serve(settings, log_dir=log_dir, workers=2) as server:
        before = worker_pids(server.process.pid)
        assert len(before) == 2
        os.kill(min(before), signal.SIGKILL)  # a worker this test started, by its id
        deadline = time.monotonic() + 20.0
        while server.log_text().count("Application startup complete") < 3:
            assert time.monotonic() < deadline, server.log_text()[-2000:]
            time.sleep(0.1)
        assert len(worker_pids(server.process.pid) - before) == 1  # uvicorn replaced it
        metrics = httpx.get(f"{server.url}/metrics", timeout=10.0).text
    assert metric_value(metrics, "db_pool_size") == 2 * 3
