"""A circuit breaker for the shared cache: open on a failure, closed again by a recovery task."""

from __future__ import annotations

import logging
from enum import Enum

from service.metrics import CACHE_CIRCUIT_OPEN

logger = logging.getLogger("service.cache")


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"


class Circuit:
    """Open after any failure; whoever owns it closes it once the backend answers again."""

    def __init__(self, *, retry_seconds: float, name: str) -> None:
        self.retry_seconds = retry_seconds
        self.name = name
        self.state = State.CLOSED
        self.trips = 0

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def trip(self, error: BaseException) -> None:
        if self.state is State.CLOSED:
            self.state = State.OPEN
            self.trips += 1
            CACHE_CIRCUIT_OPEN.set(1)
            logger.warning(
                "%s cache unavailable (%s): serving from the database until it recovers",
                self.name,
                type(error).__name__,
            )

    def close(self) -> None:
        if self.state is State.OPEN:
            self.state = State.CLOSED
            CACHE_CIRCUIT_OPEN.set(0)
            logger.warning("%s cache recovered: caching again", self.name)
