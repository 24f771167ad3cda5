"""The timer loop: delivers each saga's passed deadline to the coordinator."""

from __future__ import annotations

import asyncio
import logging

from bus_orchestrator.errors import BusOrchestratorError
from bus_orchestrator.ports import Clock, SagaStore
from bus_orchestrator.runtime.coordinator import Coordinator

log = logging.getLogger(__name__)


class TimerLoop:
    """Polls the store for due deadlines. Several coordinators may poll at once: the saga
    version and the inbox make sure each deadline is acted on once."""

    def __init__(
        self, store: SagaStore, coordinator: Coordinator, clock: Clock, interval: float
    ) -> None:
        self._store = store
        self._coordinator = coordinator
        self._clock = clock
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def tick(self) -> int:
        """Fire every timer due now; returns how many were due."""
        due = await self._store.due_timers(self._clock(), limit=200)
        for instance in due:
            try:
                await self._coordinator.fire(instance)
            except BusOrchestratorError as exc:
                log.warning("timer of saga %s not fired yet: %s", instance.saga_id, exc)
            except Exception:
                log.exception("timer of saga %s failed", instance.saga_id)
        return len(due)

    async def _run(self) -> None:
        while True:
            try:
                due = await self.tick()
            except BusOrchestratorError as exc:
                log.warning("timer poll failed: %s", exc)
                due = 0
            if due < 200:
                await asyncio.sleep(self._interval)
