"""Messages of one saga go through one at a time, in the order the broker delivered them.

The consumer runs prefetched deliveries concurrently. Without this, an ``OrderCancelled``
published right after its ``OrderPlaced`` could be decided first, find no saga, and be lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager


class KeyedLocks:
    """One FIFO lock per key (a correlation id), existing only while a message holds or
    awaits it: nothing per saga stays in memory between messages.

    ``hold`` takes a free lock without yielding to the event loop, and asyncio's locks wake
    their waiters in the order they came. So when every delivery calls ``hold`` before its
    first ``await`` that suspends (decoding is synchronous), deliveries of one key are
    handled in the order the consumer received them.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def __len__(self) -> int:
        """How many keys are held or awaited right now."""
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        ordered = sorted(set(keys))  # one global order: two messages never deadlock
        for key in ordered:
            self._users[key] = self._users.get(key, 0) + 1
            self._locks.setdefault(key, asyncio.Lock())
        held: list[asyncio.Lock] = []
        try:
            for key in ordered:
                lock = self._locks[key]
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in held:
                lock.release()
            for key in ordered:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]
                    del self._locks[key]
