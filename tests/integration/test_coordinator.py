"""The coordinator on the real broker and database, without adapters: the tests play them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus, saga_id_for
from bus_orchestrator.ports import Change, Direction, HistoryEntry
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.transport.codec import encode
from contracts import OrderCancelled, StockReserved
from tests.conftest import TestBus
from tests.integration.harness import (
    migrated,
    order,
    publish,
    publish_raw,
    rows_when,
    sql,
    start_coordinator,
    structured,
    wait_for_status,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def schema(settings: Settings, db_schema: str) -> str:
    await migrated(settings)
    return db_schema


async def test_event_starts_a_saga_and_sends_the_first_command(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    commands = await bus.tap(bus.topology.commands)
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        event_id = await publish(channel, bus.topology.events, order("o-1"), correlation_id="o-1")
        [command] = await bus.drain(commands, 1)
        assert command.routing_key == "inventory.reserve_stock.v1"
        headers = command.headers or {}
        assert headers["ce-correlationid"] == "o-1"
        assert headers["ce-causationid"] == event_id
        assert command.message_id == headers["ce-id"]
        assert command.correlation_id == "o-1"
        assert command.type == "inventory.reserve_stock.v1"
        assert command.delivery_mode == 2
        saga = (await wait_for_status(settings, ["o-1"], {SagaStatus.RUNNING}))["o-1"]
        assert saga.pending_command_id == command.message_id
        history = await sql(
            settings, "SELECT direction, message_type FROM saga_history ORDER BY id"
        )
        assert [(r["direction"], r["message_type"]) for r in history] == [
            ("in", "orders.order_placed.v1"),
            ("out", "inventory.reserve_stock.v1"),
        ]
        # the outbox row is marked sent once the broker confirmed it
        unsent = await rows_when(
            settings,
            "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL",
            lambda rows: rows[0]["n"] == 0,
        )
        assert unsent[0]["n"] == 0
    finally:
        await service.stop()


async def test_duplicate_delivery_starts_one_saga_and_sends_one_command(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    commands = await bus.tap(bus.topology.commands)
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        for _ in range(3):
            await publish(channel, bus.topology.events, order("o-2"), message_id="same-id")
        # another event id, same order: the saga exists already, no new command
        await publish(channel, bus.topology.events, order("o-2"))
        await bus.drain(commands, 1)
        await wait_for_status(settings, ["o-2"], {SagaStatus.RUNNING})
        inbox = await rows_when(
            settings, "SELECT count(*) AS n FROM saga_inbox", lambda rows: rows[0]["n"] == 2
        )
        assert inbox[0]["n"] == 2  # the first id, and the second event (recorded, ignored)
        assert await commands.get(fail=False) is None
        assert len(await sql(settings, "SELECT 1 FROM saga")) == 1
    finally:
        await service.stop()


BAD_INPUT = [
    ("malformed", b"{not json", "application/cloudevents+json", {}, "malformed"),
    ("not a cloudevent", b'{"order_id": "x"}', "application/json", {}, "not-a-cloudevent"),
    (
        "missing id",
        b"{}",
        "application/json",
        {"ce-type": "orders.order_placed.v1", "ce-source": "x", "ce-specversion": "1.0"},
        "missing-attributes",
    ),
    (
        "unknown type",
        structured("orders.order_lost.v1", {}),
        "application/cloudevents+json",
        {},
        "unknown-type",
    ),
    (
        "schema",
        structured("orders.order_placed.v1", {"order_id": "x"}),
        "application/cloudevents+json",
        {},
        "schema-violation",
    ),
    ("oversized", b"x" * 5000, "application/cloudevents+json", {}, "oversized"),
]


async def test_bad_input_is_dead_lettered_and_good_messages_still_flow(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    settings = settings.model_copy(update={"max_message_bytes": 4096})
    commands = await bus.tap(bus.topology.commands)
    dead = await bus.tap(bus.topology.dead)
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        for _label, body, content_type, headers, _reason in BAD_INPUT:
            await publish_raw(
                channel, bus.topology.events, "orders.order_placed.v1", body, headers, content_type
            )
        await publish(channel, bus.topology.events, order("o-good"))
        dead_letters = await bus.drain(dead, len(BAD_INPUT))
        reasons = sorted(str((m.headers or {})["x-dead-reason"]) for m in dead_letters)
        assert reasons == sorted(b[4] for b in BAD_INPUT)
        for message in dead_letters:
            headers = message.headers or {}
            assert headers["x-dead-detail"]
            assert headers["x-original-exchange"] == bus.topology.events
            assert headers["x-original-routing-key"] == "orders.order_placed.v1"
        # the original bodies are kept, untouched
        assert sorted(m.body for m in dead_letters) == sorted(b[1] for b in BAD_INPUT)
        [command] = await bus.drain(commands, 1)
        assert command.routing_key == "inventory.reserve_stock.v1"
    finally:
        await service.stop()


async def test_replies_nobody_awaits_are_recorded_and_ignored(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    commands = await bus.tap(bus.topology.commands)
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        reply = StockReserved(order_id="nobody", reservation_id="r")
        await publish(
            channel, bus.topology.replies, reply, correlation_id="nobody", causation_id="c"
        )
        await publish(channel, bus.topology.events, order("o-3"))
        [command] = await bus.drain(commands, 1)
        # a stale reply for a saga that exists: recorded in its history
        stale = StockReserved(order_id="o-3", reservation_id="r")
        await publish(
            channel, bus.topology.replies, stale, correlation_id="o-3", causation_id="old"
        )
        cancel_unknown = OrderCancelled(order_id="no-such-order")
        await publish(channel, bus.topology.events, cancel_unknown)
        rows = await rows_when(
            settings,
            "SELECT saga_id, outcome, note, message_type FROM saga_history "
            "WHERE outcome IN ('ignored', 'parked') ORDER BY id",
            lambda rows: len(rows) == 3,
        )
        notes = {r["note"]: r["saga_id"] for r in rows}
        assert len(rows) == 3, notes
        assert any("no saga awaits" in n and s is None for n, s in notes.items())
        assert any(n.startswith("stale reply") and s is not None for n, s in notes.items())
        # a cancel of an order not placed (yet) waits for it, in that saga's history to be
        [parked] = [r for r in rows if r["outcome"] == "parked"]
        assert "no order_to_cash saga for 'no-such-order' yet" in parked["note"]
        assert str(parked["saga_id"]) == saga_id_for("order_to_cash", "no-such-order")
        saga = (await wait_for_status(settings, ["o-3"], {SagaStatus.RUNNING}))["o-3"]
        assert saga.pending_command_id == command.message_id
    finally:
        await service.stop()


async def test_outbox_rows_left_by_a_crash_are_published_on_restart(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    """A process died after its commit and before the publish: the row is still there."""
    commands = await bus.tap(bus.topology.commands)
    pool = await create_pool(settings)
    try:
        store = PostgresSagaStore(pool, timedelta(seconds=0.2))
        message = encode(
            message_id="left-behind",
            payload=OrderCancelled(order_id="x"),
            exchange=bus.topology.commands,
            source="urn:test",
            time=datetime.now(UTC),
        )
        entry = HistoryEntry(
            Direction.IN, "m", "t", None, None, "ignored", "", {}, datetime.now(UTC)
        )
        committed = await store.commit(Change("test", "m", None, None, None, (entry,), (message,)))
        assert len(committed.outbox) == 1
    finally:
        await pool.close()
    service = await start_coordinator(settings)
    try:
        [published] = await bus.drain(commands, 1, within=15)
        assert published.message_id == "left-behind"
        rows = await rows_when(
            settings, "SELECT sent_at FROM outbox", lambda rows: rows[0]["sent_at"] is not None
        )
        assert rows[0]["sent_at"] is not None
    finally:
        await service.stop()


async def test_step_timeout_compensates_and_resends_then_fails(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    """No adapter answers: the reservation is sent twice, then released (three tries)."""
    commands = await bus.tap(bus.topology.commands)
    service = await start_coordinator(settings, step_timeout=0.3)
    try:
        channel = await bus.channel()
        await publish(channel, bus.topology.events, order("o-4"))
        saga = (await wait_for_status(settings, ["o-4"], {SagaStatus.FAILED}, within=20))["o-4"]
        sent = await bus.drain(commands, 5)
        assert [m.routing_key for m in sent] == ["inventory.reserve_stock.v1"] * 2 + [
            "inventory.release_stock.v1"
        ] * 3
        assert len({m.message_id for m in sent[:2]}) == 1
        assert len({m.message_id for m in sent[2:]}) == 1
        assert saga.steps[0].status == "compensation_failed"
        assert saga.failure and "reserve_stock" in saga.failure
    finally:
        await service.stop()
