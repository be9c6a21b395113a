"""argon2id hashing on a small thread pool, so a batch never stalls the event loop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError

from service.settings import Settings


class PasswordHasher:
    """argon2id; at most `hash_concurrency` hashes at once (argon2 releases the GIL)."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = Argon2Hasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=settings.hash_concurrency, thread_name_prefix="argon2"
        )

    async def hash_many(self, passwords: list[str]) -> list[str]:
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(self._executor, self._hasher.hash, p) for p in passwords]
        return list(await asyncio.gather(*jobs))

    def verify(self, stored: str, password: str) -> bool:
        """For tests and future logins: whether `password` matches the stored hash."""
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
