"""Background work done every so often: housekeeping, the park sweep, log retention.

``Periodic`` runs one round every ``interval`` seconds in a task of its own until stopped;
a round that fails is logged and the next one comes as usual, so a passing outage of
Postgres never ends the loop. ``until_empty`` runs a bounded purge batch after batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bus_orchestrator.errors import BusOrchestratorError

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``work`` every ``interval`` seconds, the first time one interval after start."""

    def __init__(self, name: str, work: Callable[[], Awaitable[object]], interval: float) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.name = name
        self._work = work
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Started, and not ended (by ``stop`` or by a bug that escaped a round)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._work()
            except BusOrchestratorError as exc:
                log.warning("%s failed, will retry: %s", self.name, exc)
            except Exception:
                log.exception("%s failed", self.name)


async def until_empty(purge: Callable[[], Awaitable[int]]) -> int:
    """Run a bounded purge until a batch comes back empty; how many rows went in all."""
    total = batch = await purge()
    while batch:
        batch = await purge()
        total += batch
    return total
