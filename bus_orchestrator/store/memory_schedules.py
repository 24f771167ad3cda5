"""The in-memory twin of ``PostgresScheduleStore``, for tests: same rules, no database.

The outbox rows it writes are kept in ``outbox`` (the Postgres store writes them to the
saga store's outbox table, which its relay sweeps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from bus_orchestrator.ports import Clock, OutboxMessage, PendingPublish, ScheduleState


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Firing:
    app: str
    schedule: str
    slot: datetime
    event_id: str
    event_type: str
    fired_at: datetime


class InMemoryScheduleStore:
    def __init__(self, clock: Clock = _utc_now) -> None:
        self._clock = clock
        self.states: dict[tuple[str, str], ScheduleState] = {}
        self.firings: dict[tuple[str, str, datetime], Firing] = {}
        self.outbox: list[PendingPublish] = []

    async def register_schedules(
        self, app: str, next_slots: Mapping[str, datetime], now: datetime
    ) -> list[ScheduleState]:
        for name, next_slot in next_slots.items():
            known = self.states.get((app, name)) or ScheduleState(name, now)
            self.states[(app, name)] = replace(known, next_slot=next_slot)
        return [self.states[(app, name)] for name in sorted(next_slots)]

    async def fire(
        self,
        app: str,
        schedule: str,
        slot: datetime,
        next_slot: datetime | None,
        message: OutboxMessage,
        now: datetime,
    ) -> PendingPublish | None:
        state = self.states.get((app, schedule)) or ScheduleState(schedule, now)
        if (app, schedule, slot) in self.firings or (
            state.last_slot is not None and state.last_slot >= slot
        ):
            return None
        self.firings[(app, schedule, slot)] = Firing(
            app, schedule, slot, message.message_id, message.message_type, now
        )
        self.states[(app, schedule)] = replace(
            state,
            last_slot=slot,
            last_fired_at=now,
            last_event_id=message.message_id,
            next_slot=next_slot,
        )
        row = PendingPublish(len(self.outbox) + 1, message)
        self.outbox.append(row)
        return row

    async def schedule_states(self, app: str) -> list[ScheduleState]:
        return sorted(
            (s for (owner, _), s in self.states.items() if owner == app),
            key=lambda s: s.schedule,
        )

    async def purge_firings(self, app: str, older_than: timedelta) -> int:
        cutoff = self._clock() - older_than
        gone = [k for k, f in self.firings.items() if f.app == app and f.fired_at < cutoff]
        for key in gone[:5000]:
            del self.firings[key]
        return len(gone[:5000])
