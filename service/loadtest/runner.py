"""Drive a server with concurrent httpx requests for a bounded time or count."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import httpx

from service.loadtest.scenario import Scenario, load_scenario

_QUERIES = re.compile(rb'desc="(\d+) queries"')


@dataclass(slots=True)
class Results:
    """Everything measured; merged across client processes."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    by_request: Counter[str] = field(default_factory=Counter)
    queries_total: int = 0
    queries_seen: int = 0
    elapsed: float = 0.0
    client_cpu: list[float] = field(default_factory=list)  # per process, share of one core

    @property
    def count(self) -> int:
        return len(self.latencies)

    def merge(self, other: Results) -> None:
        self.latencies += other.latencies
        self.statuses.update(other.statuses)
        self.cache.update(other.cache)
        self.errors.update(other.errors)
        self.by_request.update(other.by_request)
        self.queries_total += other.queries_total
        self.queries_seen += other.queries_seen
        self.elapsed = max(self.elapsed, other.elapsed)
        self.client_cpu += other.client_cpu

    def to_json(self) -> dict[str, Any]:
        return {
            "latencies": self.latencies, "statuses": dict(self.statuses),
            "cache": dict(self.cache), "errors": dict(self.errors),
            "by_request": dict(self.by_request), "queries_total": self.queries_total,
            "queries_seen": self.queries_seen, "elapsed": self.elapsed,
            "client_cpu": self.client_cpu,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        return cls(
            latencies=data["latencies"], statuses=Counter(data["statuses"]),
            cache=Counter(data["cache"]), errors=Counter(data["errors"]),
            by_request=Counter(data["by_request"]), queries_total=data["queries_total"],
            queries_seen=data["queries_seen"], elapsed=data["elapsed"],
            client_cpu=data["client_cpu"],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoadPlan:
    base_url: str
    scenario: str
    concurrency: int
    duration: float
    max_requests: int | None
    token: str | None
    seed: int
    timeout: float


Progress = Callable[[Results], None]


async def run_load(plan: LoadPlan, *, progress: Progress | None = None) -> Results:
    """`concurrency` workers share one client until the time or the request budget runs out."""
    scenario = load_scenario(plan.scenario)
    results = Results()
    budget = [plan.max_requests if plan.max_requests is not None else -1]
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    started = time.perf_counter()
    cpu_started = time.process_time()
    deadline = started + plan.duration
    async with httpx.AsyncClient(
        base_url=plan.base_url, limits=limits, timeout=plan.timeout
    ) as client:
        workers = [
            _worker(client, scenario, plan, results, budget, deadline, seed=plan.seed * 1000 + n)
            for n in range(plan.concurrency)
        ]
        reporter = asyncio.create_task(_report(results, started, progress)) if progress else None
        await asyncio.gather(*workers)
        if reporter is not None:
            reporter.cancel()
    results.elapsed = time.perf_counter() - started
    results.client_cpu.append((time.process_time() - cpu_started) / results.elapsed)
    return results


async def _worker(
    client: httpx.AsyncClient,
    scenario: Scenario,
    plan: LoadPlan,
    results: Results,
    budget: list[int],
    deadline: float,
    *,
    seed: int,
) -> None:
    picker = scenario.picker(seed)
    while time.perf_counter() < deadline and budget[0] != 0:
        budget[0] -= 1
        spec, filled = picker.next()
        headers = dict(spec.headers)
        if spec.auth and plan.token:
            headers["Authorization"] = f"Bearer {plan.token}"
        started = time.perf_counter()
        try:
            response = await client.request(
                spec.method, filled["path"], params=filled["params"], json=filled["body"],
                headers=headers,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            results.errors[type(exc).__name__] += 1
            continue
        results.latencies.append(time.perf_counter() - started)
        results.statuses[str(response.status_code)] += 1
        results.by_request[spec.label] += 1
        results.cache[response.headers.get("x-cache", "-")] += 1
        match = _QUERIES.search(response.headers.get("server-timing", "").encode())
        if match:
            results.queries_total += int(match.group(1))
            results.queries_seen += 1


async def _report(results: Results, started: float, progress: Progress) -> None:
    while True:
        await asyncio.sleep(0.25)
        results.elapsed = time.perf_counter() - started
        progress(results)


def _in_process(plan: LoadPlan) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run_load(plan)).to_json()


def run_processes(plan: LoadPlan, processes: int) -> Results:
    """Split the concurrency (and the request budget) over several client processes."""
    shares = [
        plan.concurrency // processes + (i < plan.concurrency % processes) for i in range(processes)
    ]
    plans = []
    for index, share in enumerate(shares):
        budget = None
        if plan.max_requests is not None:
            budget = plan.max_requests // processes + (index < plan.max_requests % processes)
        plans.append(
            LoadPlan(
                plan.base_url,
                plan.scenario,
                share,
                plan.duration,
                budget,
                plan.token,
                plan.seed + index,
                plan.timeout,
            )
        )
    results = Results()
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        for data in pool.map(_in_process, plans):
            results.merge(Results.from_json(data))
    return results
