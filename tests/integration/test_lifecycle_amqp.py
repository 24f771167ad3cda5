"""A saga's end on the real broker: one end event, which a bound queue and ``bus.lifecycle``
receive; a cancel request for no saga waits, then is dead-lettered as any early event."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import aio_pika
import pytest

from adapters import example_adapters
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.core.lifecycle import SagaEnded
from bus_orchestrator.core.state import SagaStatus, saga_id_for
from bus_orchestrator.errors import TopologyMismatchError
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.transport.codec import RawMessage, decode
from bus_orchestrator.transport.topology import Topology
from contracts import REGISTRY, OrderToCashCancelRequested
from tests.conftest import TestBus
from tests.integration.harness import (
    migrated,
    order,
    publish,
    rows_when,
    start_coordinator,
    wait_for_status,
)

pytestmark = pytest.mark.integration

COMPLETED = "saga.order_to_cash.completed.v1"
CANCEL = "saga.order_to_cash.cancel_requested.v1"


def decoded(message: aio_pika.abc.AbstractIncomingMessage) -> SagaEnded:
    raw = RawMessage(
        body=message.body,
        headers=dict(message.headers or {}),
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        exchange=message.exchange,
        routing_key=message.routing_key,
    )
    payload = decode(raw, REGISTRY, 1_000_000).payload
    assert isinstance(payload, SagaEnded)
    return payload


async def test_a_completed_saga_publishes_one_end_event_kept_by_bus_lifecycle(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    # a system that reacts to completed orders binds a queue of its own
    listener = await bus.tap(bus.topology.events, COMPLETED)
    stop_adapters = asyncio.Event()
    adapters = asyncio.create_task(run_adapters(settings, example_adapters(), stop_adapters))
    service = await start_coordinator(settings)
    try:
        started = await publish(
            await bus.channel(), bus.topology.events, order("o-1"), correlation_id="o-1"
        )
        [saga] = (await wait_for_status(settings, ["o-1"], {SagaStatus.COMPLETED})).values()
        # once the broker confirmed the end event, both queues hold what it routed there
        sent = await rows_when(
            settings,
            "SELECT sent_at FROM outbox WHERE message_type LIKE 'saga.%'",
            lambda rows: len(rows) == 1 and rows[0]["sent_at"] is not None,
        )
        assert len(sent) == 1 and sent[0]["sent_at"] is not None
    finally:
        await service.stop()
        stop_adapters.set()
        await adapters

    [received] = await bus.drain(listener, 1)
    assert await listener.get(no_ack=True, fail=False) is None  # exactly one
    assert (received.routing_key, received.type, received.correlation_id) == (
        COMPLETED,
        COMPLETED,
        "o-1",
    )
    headers = received.headers or {}
    assert (headers["ce-type"], headers["ce-correlationid"]) == (COMPLETED, "o-1")
    ended = decoded(received)
    assert ended.model_dump() == {
        "saga_id": saga.saga_id,
        "saga_type": "order_to_cash",
        "correlation_id": "o-1",
        "status": "completed",
        "reason": None,
        "started_by": {"message_id": started, "correlation_id": "o-1"},
    }
    channel = await bus.channel()
    lifecycle = await channel.declare_queue(bus.topology.lifecycle, passive=True)
    [kept] = await bus.drain(lifecycle, 1)
    assert kept.message_id == received.message_id
    assert decoded(kept) == ended
    assert await lifecycle.get(no_ack=True, fail=False) is None
    unroutable = await channel.declare_queue(bus.topology.unroutable, passive=True)
    assert await unroutable.get(no_ack=True, fail=False) is None  # no end went unroutable


async def test_a_cancel_request_for_no_saga_is_parked_then_dead_lettered_as_expired(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    settings = settings.model_copy(update={"park_ttl_seconds": 0.5, "park_sweep_seconds": 0.1})
    await migrated(settings)
    channel = await bus.channel()
    dead = await channel.declare_queue(bus.topology.dead, passive=True)
    service = await start_coordinator(settings)
    try:
        request = OrderToCashCancelRequested(correlation_id="nobody-1", reason="who is it?")
        sent = await publish(channel, bus.topology.events, request, correlation_id="nobody-1")
        [letter] = await bus.drain(dead, 1)
    finally:
        await service.stop()

    headers = letter.headers or {}
    assert (letter.routing_key, headers["ce-id"]) == (CANCEL, sent)
    assert headers["x-dead-reason"] == "expired"
    assert headers["x-original-exchange"] == bus.topology.events
    # its history says it waited for a saga that never started
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    try:
        history = await PostgresSagaStore(pool, timedelta(seconds=1)).history(
            saga_id_for("order_to_cash", "nobody-1")
        )
    finally:
        await pool.close()
    assert [(h.message_type, h.outcome) for h in history] == [
        (CANCEL, "parked"),
        (CANCEL, "dead-lettered"),
    ]
    # a cancel request is not kept by bus.lifecycle, and was routed: nothing unroutable
    for name in (bus.topology.lifecycle, bus.topology.unroutable):
        queue = await channel.declare_queue(name, passive=True)
        assert await queue.get(no_ack=True, fail=False) is None, name


async def test_bus_lifecycle_declared_with_other_bounds_stops_start_up_with_one_line(
    settings: Settings, db_schema: str, amqp_url: str
) -> None:
    await migrated(settings)
    topology = Topology(settings.exchange_prefix)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        # as a client reading an older contract would: a plain quorum queue, no bounds
        await channel.declare_queue(
            topology.lifecycle, durable=True, arguments={"x-queue-type": "quorum"}
        )
        with pytest.raises(TopologyMismatchError) as caught:
            await start_coordinator(settings)
        error = caught.value
        assert (error.kind, error.name) == ("queue", topology.lifecycle)
        assert error.argument in {"x-max-length", "x-overflow", "x-message-ttl"}
        assert "\n" not in str(error) and "the broker has none" in str(error)
    finally:
        cleanup = await connection.channel()
        await topology.delete(cleanup)
        await connection.close()
