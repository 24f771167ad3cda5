"""The timer loop: delivers each saga's passed deadline to the coordinator.

Due timers are claimed with a lease (``SagaStore.claim_timers``), so with several
coordinators on one database each deadline is fired by one of them; a process that dies
holding a lease loses it when the lease runs out. A timer that cannot be fired (its saga
type has no definition here, or saga code raises) is not claimed again until its backoff
has passed, doubling with each try; after its attempts, its saga is failed with the reason,
in its history. The loop sleeps whenever a poll claims less than a full batch, however many
timers keep failing: those wait out their backoff in the store, not in the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from bus_orchestrator.config import Settings
from bus_orchestrator.errors import BusOrchestratorError
from bus_orchestrator.ports import Clock, CommitResult, DueTimer, SagaStore
from bus_orchestrator.runtime.coordinator import Coordinator

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class TimerPolicy:
    """How often to poll, how long a claim lasts, and how a failing timer backs off."""

    interval: float
    """Seconds between polls when no full batch was due."""
    lease: timedelta
    attempts: int
    """Tries of one deadline before its saga is failed."""
    retry: timedelta
    """The wait after the first failed try; it doubles with each further one."""
    retry_max: timedelta
    batch: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> TimerPolicy:
        return cls(
            interval=settings.timer_poll_seconds,
            lease=timedelta(seconds=settings.timer_lease_seconds),
            attempts=settings.timer_attempts,
            retry=timedelta(seconds=settings.timer_retry_seconds),
            retry_max=timedelta(seconds=settings.timer_retry_max_seconds),
        )

    def backoff(self, failed: int) -> timedelta:
        """The wait after ``failed`` failed tries (``failed`` >= 1)."""
        return min(self.retry * (1 << min(failed - 1, 32)), self.retry_max)


class TimerLoop:
    """Polls the store for due deadlines and fires them through the coordinator."""

    def __init__(
        self,
        store: SagaStore,
        coordinator: Coordinator,
        clock: Clock,
        policy: TimerPolicy,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._store = store
        self._coordinator = coordinator
        self._clock = clock
        self._policy = policy
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def tick(self) -> int:
        """Claim one batch of due timers and fire them; returns how many were claimed."""
        policy = self._policy
        claimed = await self._store.claim_timers(self._clock(), policy.lease, policy.batch)
        for timer in claimed:
            try:
                await self._fire(timer)
            except Exception as exc:
                # Recording a failed try failed too (the store, most likely): the lease runs
                # out and the timer is tried again. The others in the batch go on.
                log.warning(
                    "timer of saga %s: failed try not recorded: %s",
                    timer.instance.saga_id,
                    exc,
                    exc_info=not isinstance(exc, BusOrchestratorError),
                )
        return len(claimed)

    async def _fire(self, timer: DueTimer) -> None:
        instance = timer.instance
        try:
            await self._coordinator.fire(instance)
        except BusOrchestratorError as exc:
            if not exc.retryable:
                await self._failed(timer, str(exc), first_trace=False)
                return
            # The store or a race, not the timer: its lease runs out and it is tried again.
            log.warning("timer of saga %s not fired yet: %s", instance.saga_id, exc)
        except Exception as exc:
            await self._failed(timer, f"{type(exc).__name__}: {exc}", first_trace=True)

    async def _failed(self, timer: DueTimer, error: str, *, first_trace: bool) -> None:
        """One failed try: back off, or fail the saga once its attempts are spent."""
        instance, policy = timer.instance, self._policy
        assert instance.deadline is not None  # noqa: S101 - claimed for its deadline
        failed = timer.failed_attempts + 1
        trace = first_trace and failed == 1  # the stack trace once, then one line per try
        if failed < policy.attempts:
            wait = policy.backoff(failed)
            log.warning(
                "timer of saga %s (%s) failed, try %d of %d; next in %gs: %s",
                instance.saga_id,
                instance.saga_type,
                failed,
                policy.attempts,
                wait.total_seconds(),
                error,
                exc_info=trace,
            )
            next_try = self._clock() + wait
            await self._store.back_off_timer(instance.saga_id, instance.deadline, failed, next_try)
            return
        reason = f"timer failed {failed} times: {error}"
        log.error("timer of saga %s (%s): %s", instance.saga_id, instance.saga_type, reason)
        result = await self._coordinator.give_up(instance, reason)
        if result is not CommitResult.COMMITTED:
            log.info("saga %s moved on meanwhile (%s): not failed", instance.saga_id, result)

    async def _run(self) -> None:
        while True:
            try:
                claimed = await self.tick()
            except BusOrchestratorError as exc:
                log.warning("timer poll failed: %s", exc)
                claimed = 0
            except Exception:
                log.exception("timer poll failed")
                claimed = 0
            if claimed < self._policy.batch:
                await self._sleep(self._policy.interval)
