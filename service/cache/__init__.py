"""The response cache: canonical keys, per-table versions, memory/Redis/none backends."""

from service.cache.backend import CacheBackend, CacheUnavailable, Entry, NullBackend
from service.cache.layer import Outcome, ResponseCache, Served, make_backend, make_positions

__all__ = [
    "CacheBackend",
    "CacheUnavailable",
    "Entry",
    "NullBackend",
    "Outcome",
    "ResponseCache",
    "Served",
    "make_backend",
    "make_positions",
]
