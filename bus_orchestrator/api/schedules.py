"""``GET /schedules``: the app's schedules, with their next and last firing.

The next firing is computed from each schedule's expression (what a coordinator of the app
fires next, if one runs); the last comes from the store (migration 0011's tables).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import FastAPI, Request
from pydantic import BaseModel

from bus_orchestrator.api.errors import GUARDED
from bus_orchestrator.api.guard import READER
from bus_orchestrator.api.models import Time
from bus_orchestrator.app import App
from bus_orchestrator.ports import Clock, ScheduleStore
from bus_orchestrator.store.memory_schedules import InMemoryScheduleStore
from bus_orchestrator.views import schedule_views


class FiringView(BaseModel):
    slot: Time
    """The slot's time (UTC)."""
    fired_at: Time | None
    """When it fired: later than the slot when a coordinator caught it up at start-up."""
    event_id: str | None


class ScheduleView(BaseModel):
    name: str
    cron: str
    timezone: str
    catch_up: bool
    """Whether a slot missed while no coordinator ran fires once at start-up."""
    publishes: str
    """The type of the event published at each slot."""
    next_firing: Time | None
    """The next slot (UTC); ``null`` when the expression matches nothing in 50 years."""
    last_firing: FiringView | None
    """The newest slot fired; ``null`` until one has."""


class ScheduleList(BaseModel):
    items: list[ScheduleView]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def add_schedule_routes(
    api: FastAPI, app: App, *, store: ScheduleStore | None = None, clock: Clock = _utc_now
) -> None:
    """Add ``GET /schedules`` for ``app``: from ``store`` if given, else from the API's
    Postgres pool (opened in its lifespan); an API over a store given by a test, with no
    pool, knows of no firing."""

    def states_of(request: Request) -> ScheduleStore:
        if store is not None:
            return store
        pool = request.app.state.pool
        if pool is None:
            return InMemoryScheduleStore()
        from bus_orchestrator.store.schedules import PostgresScheduleStore

        return PostgresScheduleStore(pool, timedelta(0))

    @api.get(
        "/schedules",
        dependencies=READER,
        responses=GUARDED,
        tags=["schedules"],
        summary="The app's schedules, with their next and last firing",
    )
    async def list_schedules(request: Request) -> ScheduleList:
        """Each schedule the app declares: its cron expression and time zone, the event
        type it publishes, its next slot and the newest slot fired (by any coordinator)."""
        states = await states_of(request).schedule_states(app.name) if app.schedules else []
        views = schedule_views(app.schedules, states, clock())
        return ScheduleList(items=[ScheduleView.model_validate(v) for v in views])
