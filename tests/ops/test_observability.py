"""/metrics and the JSON request log of a real `service serve` process."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import TOKEN
from tests.ops.conftest import metric_samples, metric_value, serve_settings
from tests.ops.servers import Served, serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REQUEST_LOG_KEYS = {"method", "route", "status", "duration_ms", "queries", "cache", "request_id"}


async def test_metrics_show_routes_statements_cache_pool_and_in_flight(
    ops_db: tuple[str, str], log_dir: Path
) -> None:
    _, url = ops_db
    settings = serve_settings(url, pool_size="7", max_overflow="3")
    with serve(settings, log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            for _ in range(2):
                assert (await http.get("/users?include=groups&limit=5")).status_code == 200
            assert (await http.get("/users/3")).status_code == 200
            assert (await http.get("/users/999999")).status_code == 404
            assert (await http.get("/groups?limit=1", headers=AUTH)).status_code == 200
            bypass = await http.get("/groups?limit=1", headers={"Cache-Control": "no-cache"})
            assert bypass.headers["x-cache"] == "BYPASS"
            for invented in ("PROPFIND", "MKCOL"):  # methods the parser knows, routes do not
                assert (await http.request(invented, "/permissions")).status_code == 405
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    duration = "http_request_duration_seconds_count"
    assert metric_value(text, duration, method="GET", route="/users", status="200") == 2
    assert metric_value(text, duration, method="GET", route="/users/{id}", status="200") == 1
    assert metric_value(text, duration, method="GET", route="/users/{id}", status="404") == 1
    # Invented methods share one label value: clients cannot grow the number of series.
    assert metric_value(text, duration, method="other", route="/permissions", status="405") == 2
    methods = {labels["method"] for labels, _ in metric_samples(text)[duration]}
    assert methods == {"GET", "other"}, methods
    routes = {labels["route"] for labels, _ in metric_samples(text)[duration]}
    assert not any("999999" in route or "?" in route for route in routes), routes
    # A list with one include is 1 + 1 statements; the cached second one ran none.
    statements = "http_request_sql_statements"
    assert metric_value(text, statements + "_count", route="/users") == 2
    assert metric_value(text, statements + "_sum", route="/users") == 2
    assert metric_value(text, statements + "_bucket", route="/users", le="0.0") == 1
    assert metric_value(text, "cache_requests_total", outcome="HIT") == 1
    assert metric_value(text, "cache_requests_total", outcome="MISS") == 3  # a 404 is not cached
    assert metric_value(text, "cache_requests_total", outcome="BYPASS") == 1
    assert metric_value(text, "cache_circuit_open") == 0
    assert metric_value(text, "db_pool_size") == 7
    assert metric_value(text, "db_pool_checked_out") == 0
    assert metric_value(text, "db_pool_overflow") == 0
    assert metric_value(text, "http_requests_in_flight") == 1  # the scrape itself


def request_lines(log: str) -> list[dict[str, Any]]:
    lines = []
    for raw in log.splitlines():
        if raw.strip():
            record = json.loads(raw)  # every line on stderr is one JSON object
            if record.get("logger") == "service.requests":
                lines.append(record)
    return lines


async def wait_for_lines(server: Served, request_ids: set[str]) -> str:
    """The log once every request's line is in (it is written after the last byte is sent)."""
    deadline = time.monotonic() + 5.0
    while True:
        log = server.log_text()
        logged = {line["request_id"] for line in request_lines(log)}
        if request_ids <= logged or time.monotonic() > deadline:
            return log
        await asyncio.sleep(0.05)


async def test_one_json_log_line_per_request_without_secrets(
    ops_db: tuple[str, str], log_dir: Path
) -> None:
    _, url = ops_db
    secret_filter = f"needle{uuid.uuid4().hex[:8]}"
    wrong_token = f"wrongtoken{uuid.uuid4().hex}"
    sent: dict[str, int] = {}
    with serve(serve_settings(url), log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as http:
            requests: list[tuple[str, str, dict[str, str], Any]] = [
                ("GET", f"/users?filter[name]={secret_filter}&fields=id,name", AUTH, None),
                ("GET", f"/users?filter[email_address][contains]={secret_filter}", AUTH, None),
                ("GET", f"/users/1?fields=name&token={TOKEN}", AUTH, None),
                (
                    "GET",
                    f"/users?filter[name]={secret_filter}",
                    {"Authorization": wrong_token},
                    None,
                ),
                ("PATCH", f"/users/4?q={secret_filter}", AUTH, {"display_name": secret_filter}),
                ("GET", f"/groups?filter[name][nmae]={secret_filter}", {}, None),
            ]
            for method, path, headers, body in requests:
                request_id = uuid.uuid4().hex
                response = await http.request(
                    method, path, headers={**headers, "X-Request-ID": request_id}, json=body
                )
                assert response.headers["x-request-id"] == request_id
                sent[request_id] = response.status_code
        log = await wait_for_lines(server, set(sent))
    assert {200, 401, 400} <= set(sent.values()), sent
    lines = request_lines(log)
    by_id = {line["request_id"]: line for line in lines}
    assert len(by_id) == len(lines)  # one line per request
    for request_id, status in sent.items():
        line = by_id[request_id]
        assert line.keys() >= REQUEST_LOG_KEYS, line
        assert line["status"] == status
        assert line["method"] in {"GET", "PATCH"}
        assert line["route"] in {"/users", "/users/{id}", "/groups"}
        assert isinstance(line["duration_ms"], int | float)
        assert isinstance(line["queries"], int)
    assert by_id[next(iter(sent))]["cache"] == "MISS"
    for forbidden in (TOKEN, wrong_token, secret_filter, "filter[", "Bearer test", "?"):
        assert forbidden not in log, f"{forbidden!r} leaked into the log"
