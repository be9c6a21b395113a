"""Prometheus metrics; several workers share them through the multiprocess mode."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "Time from request to the last byte of the response",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUEST_STATEMENTS = Histogram(
    "http_request_sql_statements",
    "SQL statements run per request",
    ["route"],
    buckets=(0, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 50),
)
IN_FLIGHT = Gauge("http_requests_in_flight", "Requests being served", multiprocess_mode="livesum")
CACHE_REQUESTS = Counter("cache_requests_total", "Cache outcomes", ["outcome"])
CACHE_BATCH_KEYS = Histogram(
    "cache_redis_lookups_per_mget",
    "Cache lookups answered by one Redis MGET (lookups made in the same event-loop turn)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
CACHE_CIRCUIT_OPEN = Gauge(
    "cache_circuit_open", "1 while the shared cache's circuit is open", multiprocess_mode="max"
)
DB_READS = Counter("db_reads_total", "Reads served, by database", ["database"])
REPLICA_UP = Gauge(
    "db_replica_up", "1 while a replica answers its poll", ["database"], multiprocess_mode="min"
)
REPLICA_LAG_BYTES = Gauge(
    "db_replica_lag_bytes",
    "WAL bytes a replica trails the primary by, at the last poll",
    ["database"],
    multiprocess_mode="max",
)
REPLICA_POOL_CHECKED_OUT = Gauge(
    "db_replica_pool_checked_out",
    "Connections in use, per replica",
    ["database"],
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge("db_pool_size", "Connections the pool keeps", multiprocess_mode="livesum")
POOL_CHECKED_OUT = Gauge("db_pool_checked_out", "Connections in use", multiprocess_mode="livesum")
POOL_OVERFLOW = Gauge(
    "db_pool_overflow", "Connections beyond the pool size", multiprocess_mode="livesum"
)


# Methods outside this set share one label value: a client inventing methods must not be
# able to grow the number of series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(method: str, route: str, status: int, seconds: float, statements: int) -> None:
    """One finished request into the latency and statement histograms."""
    duration, count = _request_series(method if method in _METHODS else "other", route, status)
    duration.observe(seconds)
    count.observe(statements)


@lru_cache(maxsize=4096)
def _request_series(method: str, route: str, status: int) -> tuple[Histogram, Histogram]:
    # Looking a labelled child up takes a lock and validates the labels: do it once per
    # combination (routes are templates and statuses few, so the set is small).
    return REQUEST_SECONDS.labels(method, route, str(status)), REQUEST_STATEMENTS.labels(route)


@lru_cache(maxsize=8)
def cache_outcome(outcome: str) -> Counter:
    """The counter child of one cache outcome (HIT, MISS, BYPASS)."""
    return CACHE_REQUESTS.labels(outcome)


def render_metrics() -> tuple[bytes, str]:
    """The exposition text: every live worker's series when PROMETHEUS_MULTIPROC_DIR is set."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        forget_dead_workers(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST


def forget_dead_workers(directory: str) -> None:
    """A worker that died (and was replaced) must not keep counting in the live gauges."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, under another user


def reset_directory(directory: str) -> None:
    """prometheus-client needs an empty directory when the server starts."""
    for path in Path(directory).glob("*.db"):
        path.unlink()
