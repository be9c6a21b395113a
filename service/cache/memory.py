"""In-process backend: LRU bounded by entries and bytes, with a TTL; versions in a dict."""

from __future__ import annotations

import time
from collections import OrderedDict

from service.cache.backend import Entry, Versions

_OVERHEAD = 200  # bytes a stored entry costs beyond its body: key, tuple, bookkeeping


class MemoryBackend:
    """One process's cache. Not shared between workers: see CACHE_URL in the docs."""

    name = "memory"
    shared = False
    reachable = True

    def __init__(self, *, max_entries: int, max_bytes: int, ttl_seconds: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds
        self.bytes_used = 0
        self._entries: OrderedDict[str, tuple[float, Entry, int]] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._epoch = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def lookup(self, key: str, tables: tuple[str, ...]) -> tuple[Versions, Entry | None]:
        known = self._versions
        versions = (self._epoch, *[known.get(table, 0) for table in tables])
        stored = self._entries.get(key)
        if stored is None:
            return versions, None
        expires, entry, _ = stored
        if expires < time.monotonic():
            self._drop(key)
            return versions, None
        self._entries.move_to_end(key)
        return versions, entry

    async def store(self, key: str, entry: Entry) -> None:
        cost = entry.size + len(key) + _OVERHEAD
        if cost > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + self.ttl_seconds, entry, cost)
        self.bytes_used += cost
        while len(self._entries) > self.max_entries or self.bytes_used > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def bump(self, tables: frozenset[str]) -> None:
        for table in tables:
            self._versions[table] = self._versions.get(table, 0) + 1

    async def close(self) -> None:
        self._entries.clear()
        self.bytes_used = 0

    def _drop(self, key: str) -> None:
        _, _, cost = self._entries.pop(key)
        self.bytes_used -= cost
