"""Schedules on the real Postgres and RabbitMQ: several runners on one schema fire each slot
once, and each firing reaches the broker as one event."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import ContractRegistry
from bus_orchestrator.core.schedule import slot_event_id
from bus_orchestrator.runtime.relay import OutboxRelay
from bus_orchestrator.runtime.schedules import ScheduleRunner
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.store import PostgresSagaStore, create_pool
from bus_orchestrator.store.schedules import PostgresScheduleStore
from bus_orchestrator.testing.clock import ManualClock
from bus_orchestrator.transport.publisher import AmqpPublisher
from tests.conftest import TestBus
from tests.e2e.schedule_app import NAME, Ticked, schedules
from tests.integration.harness import migrated, sql

pytestmark = pytest.mark.integration

LEASE = timedelta(seconds=2)


async def drain_all(queue: aio_pika.abc.AbstractQueue, quiet: float = 1.0) -> list[dict[str, str]]:
    """Every message on ``queue`` until none came for ``quiet`` seconds, as (id, data)."""
    got: list[dict[str, str]] = []
    loop = asyncio.get_running_loop()
    last = loop.time()
    while loop.time() - last < quiet:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        last = loop.time()
        got.append({"id": str(message.message_id), **json.loads(message.body)})
    return got


async def test_two_runners_on_one_schema_fire_each_slot_once(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    """Two runners (each with its own pool, relay and broker channel) tick at the same
    moments of one clock, 40 slots: every slot is claimed by exactly one of them."""
    await migrated(settings)
    tap = await bus.tap(bus.topology.events, Ticked.message_type)
    clock = ManualClock(datetime(2026, 1, 1, 12, 0, 0, 300_000, tzinfo=UTC))
    runners, relays, pools = [], [], []
    for _ in range(2):
        pool = await create_pool(settings.model_copy(update={"db_pool_size": 3}))
        pools.append(pool)
        relay = OutboxRelay(
            PostgresSagaStore(pool, LEASE, None),
            AmqpPublisher(await bus.channel()),
            lease=LEASE,
            sweep_interval=0.2,
        )
        relay.start()
        relays.append(relay)
        runners.append(
            ScheduleRunner(
                NAME,
                schedules(),
                PostgresScheduleStore(pool, LEASE),
                relay,
                clock,
                exchange=bus.topology.events,
                source="urn:test",
            )
        )
    try:
        await asyncio.gather(*(r.start_up() for r in runners))
        fired = []
        for _ in range(40):
            clock.advance(timedelta(seconds=1))
            for done in await asyncio.gather(*(r.tick() for r in runners)):
                fired += done
        received = await drain_all(tap)
    finally:
        for relay in relays:
            await relay.stop()
        for pool in pools:
            await pool.close()

    slots = [datetime(2026, 1, 1, 12, 0, n, tzinfo=UTC) for n in range(1, 41)]
    expected = {(name, slot) for name in ("caught", "skipped") for slot in slots}
    assert len(fired) == 80 and {(f.schedule, f.slot) for f in fired} == expected
    rows = await sql(settings, "SELECT schedule, slot, event_id FROM schedule_firing")
    assert {(r["schedule"], r["slot"]) for r in rows} == expected and len(rows) == 80
    assert all(r["event_id"] == slot_event_id(NAME, r["schedule"], r["slot"]) for r in rows)
    outbox = await sql(settings, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NOT NULL")
    assert outbox[0]["n"] == 80
    assert len(received) == 80
    assert {(m["schedule"], datetime.fromisoformat(m["slot"])) for m in received} == expected
    assert {m["id"] for m in received} == {r["event_id"] for r in rows}


async def test_two_coordinators_fire_a_per_second_schedule_once_a_slot(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    """The coordinator service itself, twice, on the wall clock: every slot between the
    moment both run and the moment one stops fired once, published once."""
    await migrated(settings)
    tap = await bus.tap(bus.topology.events, Ticked.message_type)
    services = [
        CoordinatorService(settings, [], ContractRegistry(), app=NAME, schedules=schedules())
        for _ in range(2)
    ]
    for service in services:
        await service.start()
    try:
        for _ in range(100):
            if all(s.schedule_runner is not None and s.schedule_runner.started for s in services):
                break
            await asyncio.sleep(0.05)
        begin = datetime.now(UTC)
        await asyncio.sleep(4)
        end = datetime.now(UTC)
    finally:
        for service in services:
            await service.stop()
    received = await drain_all(tap)

    rows = await sql(settings, "SELECT schedule, slot FROM schedule_firing ORDER BY slot")
    window = [
        begin.replace(microsecond=0) + timedelta(seconds=n)
        for n in range(1, int((end - begin).total_seconds()))
    ]
    assert len(window) >= 3
    for name in ("caught", "skipped"):
        fired = [r["slot"] for r in rows if r["schedule"] == name]
        assert [slot for slot in fired if slot in window] == window, name
        assert len(fired) == len(set(fired))
    # each firing published once (a slot is the same instant whatever its time zone)
    assert sorted((m["schedule"], datetime.fromisoformat(m["slot"])) for m in received) == [
        (r["schedule"], r["slot"]) for r in sorted(rows, key=lambda r: (r["schedule"], r["slot"]))
    ]
