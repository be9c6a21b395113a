"""Scenarios: weighted requests read from JSON files or the built-in set."""

from __future__ import annotations

import itertools
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One kind of request. `{unique}` in a path, parameter or body string becomes a fresh token."""

    path: str
    method: str = "GET"
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    weight: float = 1.0
    auth: bool = False  # send the token from --token-env
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    requests: tuple[RequestSpec, ...]

    def picker(self, seed: int) -> Picker:
        return Picker(self, seed)


class Picker:
    """Draws requests by weight; fills `{unique}` so writes never clash."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self._rng = random.Random(seed)
        self._specs = scenario.requests
        self._weights = [spec.weight for spec in scenario.requests]
        self._counter = itertools.count()
        # Fixed widths, so no two (process, worker) prefixes plus counters can spell the same
        # token; "u" + 6 + counter stays within a 16-character name for 16M requests.
        self._prefix = f"{os.getpid() % 4096:03x}{seed % 4096:03x}"

    def next(self) -> tuple[RequestSpec, dict[str, Any]]:
        spec = self._rng.choices(self._specs, weights=self._weights)[0]
        token = f"{self._prefix}{next(self._counter):x}"
        return spec, _fill({"path": spec.path, "params": spec.params, "body": spec.body}, token)


def _fill(value: Any, token: str) -> Any:
    if isinstance(value, str):
        return value.replace("{unique}", token)
    if isinstance(value, dict):
        return {key: _fill(item, token) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, token) for item in value]
    return value


def load_scenario(source: str) -> Scenario:
    """A built-in name, or a JSON file: {"name": ..., "requests": [{path, method, ...}]}."""
    if source in BUILTIN:
        return BUILTIN[source]
    path = Path(source)
    if not path.is_file():
        known = ", ".join(sorted(BUILTIN))
        raise ValueError(f"no scenario {source!r}: give a JSON file or one of {known}")
    raw = json.loads(path.read_text())
    specs = tuple(RequestSpec(**item) for item in raw["requests"])
    if not specs:
        raise ValueError(f"scenario {source!r} has no requests")
    return Scenario(raw.get("name", path.stem), specs)


_USERS_PAGE = {"fields": "id,name", "include": "groups", "limit": "100"}
BUILTIN: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("users-groups", (RequestSpec("/users", params=_USERS_PAGE),)),
        Scenario(
            "users-groups-uncached",
            (RequestSpec("/users", params=_USERS_PAGE, headers={"Cache-Control": "no-cache"}),),
        ),
        Scenario(
            "reads",
            (
                RequestSpec("/users", params=_USERS_PAGE, weight=4),
                RequestSpec("/users", params={"limit": "50"}, weight=2),
                RequestSpec("/users/1", params={"include": "groups.permissions"}, weight=2),
                RequestSpec("/groups", params={"include": "users,permissions", "limit": "20"}),
                RequestSpec("/groups/1/users", params={"sort": "-created", "limit": "50"}),
                RequestSpec("/users", params={"filter[groups.name]": "admins", "count": "true"}),
                RequestSpec("/permissions", params={"include": "groups"}),
            ),
        ),
        Scenario(
            "mixed",
            (
                RequestSpec("/users", params=_USERS_PAGE, weight=6),
                RequestSpec("/users/1", params={"include": "groups"}, weight=3),
                RequestSpec("/groups", params={"include": "permissions"}, weight=2),
                RequestSpec(
                    "/users",
                    method="POST",
                    auth=True,
                    body={
                        "name": "u{unique}",
                        "email_address": "{unique}@load.test",
                        "group_ids": [1],
                    },
                    weight=1,
                    name="POST /users",
                ),
                RequestSpec(
                    "/groups/2",
                    method="PATCH",
                    auth=True,
                    body={"display_name": "load {unique}"},
                    weight=1,
                    name="PATCH /groups/2",
                ),
            ),
        ),
    )
}
