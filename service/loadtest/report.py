"""The summary of a load run: a rich table, or JSON for machines."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from service.loadtest.runner import Results

SATURATED = 0.85  # a client process busier than this is measuring itself, not the server


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarize(results: Results) -> dict[str, Any]:
    latencies = sorted(results.latencies)
    hits = results.cache.get("HIT", 0)
    cached = sum(results.cache[k] for k in ("HIT", "MISS", "BYPASS"))
    return {
        "requests": results.count,
        "seconds": round(results.elapsed, 3),
        "requests_per_second": round(results.count / results.elapsed, 1)
        if results.elapsed
        else 0.0,
        "latency_ms": {
            name: round(percentile(latencies, q) * 1000, 2)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
        "statuses": dict(sorted(results.statuses.items())),
        "errors": dict(results.errors),
        "cache_hit_ratio": round(hits / cached, 3) if cached else None,
        "mean_sql_statements": (
            round(results.queries_total / results.queries_seen, 2) if results.queries_seen else None
        ),
        "client_cpu": [round(share, 2) for share in results.client_cpu],
        "client_saturated": any(share > SATURATED for share in results.client_cpu),
        "by_request": dict(results.by_request),
    }


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="service loadtest", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    latency = summary["latency_ms"]
    rows = [
        ("requests", f"{summary['requests']:,} in {summary['seconds']:.1f} s"),
        ("requests/s", f"{summary['requests_per_second']:,.1f}"),
        ("latency p50 / p90", f"{latency['p50']:.2f} / {latency['p90']:.2f} ms"),
        ("latency p99 / max", f"{latency['p99']:.2f} / {latency['max']:.2f} ms"),
        ("status codes", ", ".join(f"{k}: {v:,}" for k, v in summary["statuses"].items()) or "-"),
        ("errors", ", ".join(f"{k}: {v:,}" for k, v in summary["errors"].items()) or "none"),
        ("X-Cache hit ratio", _maybe(summary["cache_hit_ratio"], "{:.1%}")),
        ("mean SQL statements", _maybe(summary["mean_sql_statements"], "{:.2f}")),
        ("client CPU (per process)", ", ".join(f"{s:.0%}" for s in summary["client_cpu"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if summary["client_saturated"]:
        console.print(
            "[bold yellow]warning:[/] a client process used over "
            f"{SATURATED:.0%} of its core: these figures are the client's limit, not the "
            "server's. Add --processes, or run the client on another machine."
        )


def _maybe(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)
