"""The schedule runner: fires the app's schedules from the coordinator process.

Every coordinator of an app runs one; the store lets one of them claim each slot, in the
same transaction as the event's outbox row, and the relay publishes the row at once (its
sweep does, should this process die first). The event's id is derived from the app, the
schedule and the slot, so even a second publish of a slot is one message to consumers.

At start-up, the slots that passed since a schedule last fired (or, if it never did, since
it became known) were missed while no coordinator ran: a schedule with ``catch_up`` fires
the newest of them, once; one without skips them. While running, the runner sleeps until
the next slot and fires it; if it was held up past a whole period (a pause, Postgres away),
it fires the newest due slot and skips the older ones rather than firing them in a burst.
The coordinators' clocks are taken to agree (NTP): one whose clock runs ahead fires early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from bus_orchestrator.core.schedule import Schedule, plan_start, plan_tick, slot_event_id
from bus_orchestrator.errors import BusOrchestratorError
from bus_orchestrator.periodic import Periodic
from bus_orchestrator.ports import Clock, PendingPublish, ScheduleStore
from bus_orchestrator.transport.codec import encode

log = logging.getLogger(__name__)


class Relay(Protocol):
    """Where committed outbox rows go to be published (``OutboxRelay``)."""

    def submit(self, rows: Sequence[PendingPublish]) -> None: ...


@dataclass(frozen=True, slots=True)
class Fired:
    """A slot this runner claimed and handed to the relay."""

    schedule: str
    slot: datetime
    event_id: str
    caught_up: bool = False
    """Fired at start-up for a slot missed while no coordinator ran."""


def _next(schedule: Schedule[Any], moment: datetime) -> datetime | None:
    try:
        return schedule.next_after(moment)
    except StopIteration:  # nothing in the next 50 years
        return None


class ScheduleRunner:
    """Fires ``schedules`` of ``app``; ``start_up`` once, then ``tick`` at each slot.

    ``start``/``stop`` run that loop in a task of its own; tests drive ``start_up`` and
    ``tick`` with a clock of their own instead.
    """

    def __init__(
        self,
        app: str,
        schedules: Sequence[Schedule[Any]],
        store: ScheduleStore,
        relay: Relay,
        clock: Clock,
        *,
        exchange: str,
        source: str,
        retry_seconds: float = 1.0,
        retention: timedelta = timedelta(days=7),
        purge_seconds: float = 60.0,
        max_sleep: float = 30.0,
    ) -> None:
        self._app = app
        self._schedules = list(schedules)
        self._store = store
        self._relay = relay
        self._clock = clock
        self._exchange = exchange
        self._source = source
        self._retry = retry_seconds
        self._retention = retention
        self._max_sleep = max_sleep
        self._after: dict[str, datetime] | None = None
        self._failed = False
        self._task: asyncio.Task[None] | None = None
        self._purge = Periodic("schedule purge", self._purge_round, purge_seconds)

    @property
    def started(self) -> bool:
        """``start_up`` has run to its end: the missed slots were dealt with."""
        return self._after is not None

    async def start_up(self) -> list[Fired]:
        """Record the schedules and deal with the slots missed while no coordinator ran."""
        now = self._clock()
        next_slots = {s.name: _next(s, now) for s in self._schedules}
        states = await self._store.register_schedules(
            self._app, {name: slot for name, slot in next_slots.items() if slot}, now
        )
        known = {state.schedule: state for state in states}
        after: dict[str, datetime] = {}
        fired: list[Fired] = []
        for schedule in self._schedules:
            state = known.get(schedule.name)
            base = now if state is None else state.last_slot or state.registered_at
            plan = plan_start(schedule, base, now)
            if plan.fire is not None:
                done = await self._fire(schedule, plan.fire, now, caught_up=True)
                fired += [done] if done else []
            elif plan.missed:
                log.info(
                    "schedule %s: slots missed since %s skipped (no catch_up)",
                    schedule.name,
                    base.isoformat(),
                )
            after[schedule.name] = plan.after
        self._after = after
        return fired

    async def tick(self) -> list[Fired]:
        """Fire what is due now; a slot whose claim failed is tried again next time."""
        if self._after is None:
            raise RuntimeError("start_up first")
        now = self._clock()
        fired: list[Fired] = []
        self._failed = False
        for schedule in self._schedules:
            plan = plan_tick(schedule, self._after[schedule.name], now)
            if plan.fire is None:
                continue
            if plan.missed:
                log.warning(
                    "schedule %s: held up past a whole period, slots before %s skipped",
                    schedule.name,
                    plan.fire.isoformat(),
                )
            try:
                done = await self._fire(schedule, plan.fire, now)
            except BusOrchestratorError as exc:  # Postgres away: the slot is tried again
                log.warning("schedule %s: slot %s not fired yet: %s", schedule.name, plan.fire, exc)
                self._failed = True
                continue
            except Exception:  # a bug would fail every try: skip the slot, keep the others
                log.exception("schedule %s: slot %s not fired", schedule.name, plan.fire)
                done = None
            fired += [done] if done else []
            self._after[schedule.name] = plan.after
        return fired

    def next_wake(self) -> datetime | None:
        """The earliest slot still to fire (``None`` before ``start_up`` or if none)."""
        if self._after is None:
            return None
        slots = [_next(s, self._after[s.name]) for s in self._schedules]
        return min((slot for slot in slots if slot is not None), default=None)

    async def _fire(
        self, schedule: Schedule[Any], slot: datetime, now: datetime, *, caught_up: bool = False
    ) -> Fired | None:
        """Claim ``slot`` with its event in the outbox; hand the row to the relay. ``None``
        when another coordinator fired it, or when the app's ``event`` failed (logged: the
        slot is skipped rather than tried forever)."""
        try:
            event = schedule.build(slot)
        except Exception:
            log.exception("schedule %s: building the event of slot %s failed", schedule.name, slot)
            return None
        event_id = slot_event_id(self._app, schedule.name, slot)
        message = encode(
            message_id=event_id,
            payload=event,
            exchange=self._exchange,
            source=self._source,
            time=slot,
        )
        row = await self._store.fire(
            self._app, schedule.name, slot, _next(schedule, slot), message, now
        )
        if row is None:
            log.debug("schedule %s: slot %s fired by another coordinator", schedule.name, slot)
            return None
        self._relay.submit([row])
        log.info(
            "schedule %s fired slot %s%s: %s %s",
            schedule.name,
            slot.isoformat(),
            " (caught up)" if caught_up else "",
            event.message_type,
            event_id,
        )
        return Fired(schedule.name, slot, event_id, caught_up)

    async def _purge_round(self) -> None:
        gone = await self._store.purge_firings(self._app, self._retention)
        if gone:
            log.info("schedule purge removed %d firings", gone)

    # -- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="schedules")
        self._purge.start()

    async def stop(self) -> None:
        await self._purge.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self._after is None:
            try:
                await self.start_up()
            except BusOrchestratorError as exc:
                log.warning("schedules not started, will retry: %s", exc)
                await asyncio.sleep(self._retry)
            except Exception:
                log.exception("schedules not started, will retry")
                await asyncio.sleep(self._retry)
        log.info(
            "schedules running: %s",
            ", ".join(f"{s.name} ({s.cron}, {s.timezone})" for s in self._schedules),
        )
        while True:
            await asyncio.sleep(self._delay())
            try:
                await self.tick()
            except Exception:
                log.exception("schedules: unexpected failure")
                self._failed = True

    def _delay(self) -> float:
        if self._failed:
            return self._retry
        wake = self.next_wake()
        if wake is None:
            return self._max_sleep
        return min(max((wake - self._clock()).total_seconds(), 0.0), self._max_sleep)
