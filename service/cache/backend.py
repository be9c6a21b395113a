"""What a cache backend does: versioned lookups, stores, version bumps; and the null one."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

Versions = tuple[int, ...]  # the epoch, then one counter per table, in the order asked


class CacheUnavailable(Exception):
    """The backend failed or is switched off for now; the caller goes to the database."""


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes
    etag: str
    versions: Versions

    @classmethod
    def of(cls, body: bytes, versions: Versions) -> Entry:
        return cls(body=body, etag=etag_of(body), versions=versions)

    @property
    def size(self) -> int:
        return len(self.body) + len(self.etag) + 8 * len(self.versions)


def etag_of(body: bytes) -> str:
    """A strong validator: equal bodies, equal tags."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


class CacheBackend(Protocol):
    name: str
    # Shared by several instances: a write must reach it before it commits, or the others
    # would go on serving what it changed (SPEC, Caching: the partial outage).
    shared: bool

    @property
    def reachable(self) -> bool:
        """False while the backend is known to be out of reach (a write would be refused)."""
        ...

    async def lookup(self, key: str, tables: tuple[str, ...]) -> tuple[Versions, Entry | None]:
        """The current versions of `tables` and the entry stored at `key`, in one round trip."""
        ...

    async def store(self, key: str, entry: Entry) -> None: ...

    async def bump(self, tables: frozenset[str]) -> None:
        """A committed write changed these tables: entries computed before no longer match."""
        ...

    async def close(self) -> None: ...


class NullBackend:
    """CACHE_URL=none: every request goes to the database."""

    name = "none"
    shared = False
    reachable = True

    async def lookup(self, key: str, tables: tuple[str, ...]) -> tuple[Versions, Entry | None]:
        raise CacheUnavailable("caching is off")

    async def store(self, key: str, entry: Entry) -> None:
        return None

    async def bump(self, tables: frozenset[str]) -> None:
        return None

    async def close(self) -> None:
        return None
