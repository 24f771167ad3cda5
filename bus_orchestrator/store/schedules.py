"""The Postgres store of schedule firings (``ScheduleStore``, tables of migration 0011).

A slot is claimed by one statement that also writes the event's outbox row, so the slot
fires exactly when its event is committed for publishing. The relay publishes the row at
once; should the process die first, a relay's sweep publishes it once its lease runs out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from importlib.resources import files

import asyncpg

from bus_orchestrator.ports import OutboxMessage, PendingPublish, ScheduleState
from bus_orchestrator.store.driver_errors import postgres_errors


@dataclass(frozen=True, slots=True)
class ScheduleQueries:
    """The statements of the schedule store; each field is named after its ``.sql`` file."""

    schedule_register: str
    schedule_fire: str
    schedule_states: str
    schedule_purge: str

    @classmethod
    def load(cls) -> ScheduleQueries:
        folder = files("bus_orchestrator.store").joinpath("sql")
        return cls(
            **{
                f.name: folder.joinpath(f"{f.name}.sql").read_text(encoding="utf-8")
                for f in fields(cls)
            }
        )


def _state(row: asyncpg.Record) -> ScheduleState:
    return ScheduleState(
        schedule=row["schedule"],
        registered_at=row["registered_at"],
        last_slot=row["last_slot"],
        last_fired_at=row["last_fired_at"],
        last_event_id=row["last_event_id"],
        next_slot=row["next_slot"],
    )


class PostgresScheduleStore:
    """Schedule state and firings in the orchestrator's schema, next to the outbox."""

    def __init__(self, pool: asyncpg.Pool, outbox_lease: timedelta) -> None:
        self._pool = pool
        self._outbox_lease = outbox_lease
        self._sql = ScheduleQueries.load()

    async def register_schedules(
        self, app: str, next_slots: Mapping[str, datetime], now: datetime
    ) -> list[ScheduleState]:
        names = sorted(next_slots)
        with postgres_errors:
            rows = await self._pool.fetch(
                self._sql.schedule_register, app, names, [next_slots[n] for n in names], now
            )
        return sorted((_state(row) for row in rows), key=lambda s: s.schedule)

    async def fire(
        self,
        app: str,
        schedule: str,
        slot: datetime,
        next_slot: datetime | None,
        message: OutboxMessage,
        now: datetime,
    ) -> PendingPublish | None:
        with postgres_errors:
            outbox_id = await self._pool.fetchval(
                self._sql.schedule_fire,
                app,
                schedule,
                slot,
                next_slot,
                message.message_id,
                now,
                self._outbox_lease,
                message.message_type,
                message.exchange,
                message.routing_key,
                message.content_type,
                message.correlation_id,
                json.dumps(dict(message.headers)),
                message.body,
            )
        return None if outbox_id is None else PendingPublish(outbox_id, message)

    async def schedule_states(self, app: str) -> list[ScheduleState]:
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.schedule_states, app)
        return [_state(row) for row in rows]

    async def purge_firings(self, app: str, older_than: timedelta) -> int:
        with postgres_errors:
            count: int = await self._pool.fetchval(self._sql.schedule_purge, app, older_than)
        return count
