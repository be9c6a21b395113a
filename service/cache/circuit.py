"""A circuit breaker for the shared cache: trip on a failure, probe after a cool-down."""

from __future__ import annotations

import logging
import time
from enum import Enum

from service.metrics import CACHE_CIRCUIT_OPEN

logger = logging.getLogger("service.cache")


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"


class Circuit:
    """Open after any failure; after `retry_seconds` one caller may probe to close it."""

    def __init__(self, *, retry_seconds: float, name: str) -> None:
        self.retry_seconds = retry_seconds
        self.name = name
        self.state = State.CLOSED
        self.trips = 0
        self._retry_at = 0.0
        self._probing = False

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def may_probe(self) -> bool:
        """Open, cooled down, and nobody else probing: this caller should try to close it."""
        if self.closed or self._probing or time.monotonic() < self._retry_at:
            return False
        self._probing = True
        return True

    def trip(self, error: BaseException) -> None:
        self._probing = False
        self._retry_at = time.monotonic() + self.retry_seconds
        if self.state is State.CLOSED:
            self.state = State.OPEN
            CACHE_CIRCUIT_OPEN.set(1)
            self.trips += 1
            logger.warning(
                "%s cache unavailable (%s): serving from the database until it recovers",
                self.name,
                type(error).__name__,
            )

    def close(self) -> None:
        self._probing = False
        if self.state is State.OPEN:
            self.state = State.CLOSED
            CACHE_CIRCUIT_OPEN.set(0)
            logger.warning("%s cache recovered: epoch bumped, caching again", self.name)
