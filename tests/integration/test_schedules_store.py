"""The ScheduleStore contract, run against the in-memory twin and against Postgres: a slot
fires once, with its outbox row; never a slot older than the newest fired."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.ports import OutboxMessage, ScheduleStore
from bus_orchestrator.store import create_pool
from bus_orchestrator.store.memory_schedules import InMemoryScheduleStore
from bus_orchestrator.store.postgres import PostgresSagaStore
from bus_orchestrator.store.schedules import PostgresScheduleStore
from tests.integration.harness import migrated, sql

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def message(n: int) -> OutboxMessage:
    return OutboxMessage(
        message_id=f"event-{n}",
        message_type="tests.report_due.v1",
        exchange="bus.events",
        routing_key="tests.report_due.v1",
        body=b'{"n": %d}' % n,
        content_type="application/json",
        headers={"ce-id": f"event-{n}"},
    )


@pytest.fixture(params=["memory", "postgres"])
def backend_settings(request: pytest.FixtureRequest) -> Settings | None:
    """``None`` for the in-memory store; settings naming a fresh schema for Postgres."""
    if request.param == "memory":
        return None
    request.getfixturevalue("db_schema")
    settings: Settings = request.getfixturevalue("settings")
    return settings


@pytest.fixture
async def store(backend_settings: Settings | None) -> AsyncIterator[ScheduleStore]:
    if backend_settings is None:
        yield InMemoryScheduleStore(lambda: T0 + timedelta(days=30))
        return
    settings = backend_settings
    await migrated(settings)
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 4}))
    try:
        yield PostgresScheduleStore(pool, LEASE)
    finally:
        await pool.close()


async def test_registering_keeps_when_a_schedule_became_known(store: ScheduleStore) -> None:
    [first] = await store.register_schedules("app", {"report": T0 + timedelta(hours=1)}, T0)
    assert (first.schedule, first.registered_at, first.last_slot) == ("report", T0, None)
    later = T0 + timedelta(hours=5)
    states = await store.register_schedules(
        "app", {"report": later, "other": later + timedelta(hours=1)}, later
    )
    assert [(s.schedule, s.registered_at, s.next_slot) for s in states] == [
        ("other", later, later + timedelta(hours=1)),
        ("report", T0, later),
    ]
    assert await store.schedule_states("another-app") == []


async def test_a_slot_fires_once(store: ScheduleStore) -> None:
    slot = T0 + timedelta(hours=1)
    await store.register_schedules("app", {"report": slot}, T0)
    row = await store.fire("app", "report", slot, slot + timedelta(hours=1), message(1), slot)
    assert row is not None and row.message == message(1)
    again = await store.fire("app", "report", slot, slot + timedelta(hours=1), message(1), slot)
    assert again is None
    [state] = await store.schedule_states("app")
    assert (state.last_slot, state.last_fired_at, state.last_event_id, state.next_slot) == (
        slot,
        slot,
        "event-1",
        slot + timedelta(hours=1),
    )
    # another app's schedule of the same name is another schedule
    assert await store.fire("other-app", "report", slot, None, message(2), slot) is not None


async def test_an_older_slot_never_fires_after_a_newer_one(store: ScheduleStore) -> None:
    newer, older = T0 + timedelta(hours=2), T0 + timedelta(hours=1)
    assert await store.fire("app", "report", newer, None, message(2), newer) is not None
    assert await store.fire("app", "report", older, None, message(1), newer) is None
    [state] = await store.schedule_states("app")
    assert state.last_slot == newer


async def test_concurrent_claims_of_one_slot_fire_it_once(store: ScheduleStore) -> None:
    slot = T0 + timedelta(hours=1)
    rows = await asyncio.gather(
        *(store.fire("app", "report", slot, None, message(1), slot) for _ in range(8))
    )
    assert len([row for row in rows if row is not None]) == 1


async def test_old_firings_are_purged_but_still_never_fire_again(store: ScheduleStore) -> None:
    slots = [T0 + timedelta(minutes=n) for n in range(3)]
    for n, slot in enumerate(slots):
        assert await store.fire("app", "report", slot, None, message(n), slot) is not None
    assert await store.purge_firings("app", timedelta(days=1)) == 3
    assert await store.purge_firings("app", timedelta(days=1)) == 0
    assert await store.fire("app", "report", slots[1], None, message(1), T0) is None


async def test_the_outbox_row_is_the_relays_to_publish(settings: Settings, db_schema: str) -> None:
    """In Postgres the firing's row is the saga store's outbox row: leased for the relay
    that wrote it, then swept up by any relay of the app once the lease runs out."""
    await migrated(settings)
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
    try:
        store = PostgresScheduleStore(pool, timedelta(milliseconds=200))
        row = await store.fire("app", "report", T0, None, message(1), T0)
        assert row is not None
        outbox = PostgresSagaStore(pool, LEASE, None)
        assert await outbox.claim_unsent(LEASE, 10) == []  # leased to the one that fired
        await asyncio.sleep(0.3)
        [swept] = await outbox.claim_unsent(LEASE, 10)
        assert (swept.outbox_id, swept.message) == (row.outbox_id, message(1))
        [stored] = await sql(settings, "SELECT app, message_id FROM outbox")
        assert (stored["app"], stored["message_id"]) == ("app", "event-1")
        [firing] = await sql(settings, "SELECT event_id, event_type FROM schedule_firing")
        assert (firing["event_id"], firing["event_type"]) == ("event-1", "tests.report_due.v1")
    finally:
        await pool.close()
