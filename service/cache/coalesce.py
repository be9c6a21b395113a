"""MGETs asked for in the same event-loop turn travel to Redis as one (auto-pipelining).

Under load many requests look up at once; each MGET through redis-py costs more CPU than
the round trip itself, so one MGET of their keys (each key once) serves them all. A lone
request waits for nothing: its batch leaves at the end of the turn it was asked in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from service.metrics import CACHE_BATCH_KEYS

Value = bytes | str | None  # redis-py types replies as either
Fetch = Callable[[list[str]], Awaitable[Sequence[Value]]]


class CoalescingReader:
    """`mget(keys)` as if alone; the batch's failure is every waiter's failure."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch
        self._waiting: list[tuple[list[str], asyncio.Future[list[Value]]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def mget(self, keys: list[str]) -> list[Value]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Value]] = loop.create_future()
        self._waiting.append((keys, future))
        if len(self._waiting) == 1:
            loop.call_soon(self._send)
        return await future

    def _send(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._answer(batch))
        self._running.add(task)  # keep it alive until it lands
        task.add_done_callback(self._running.discard)

    async def _answer(self, batch: list[tuple[list[str], asyncio.Future[list[Value]]]]) -> None:
        unique = list(dict.fromkeys(key for keys, _ in batch for key in keys))
        CACHE_BATCH_KEYS.observe(len(batch))
        try:
            values = dict(zip(unique, await self._fetch(unique), strict=True))
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for keys, future in batch:
            if not future.done():  # a waiter that went away is skipped
                future.set_result([values[key] for key in keys])

    async def close(self) -> None:
        """Let batches in flight land (their waiters may still be listening)."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
