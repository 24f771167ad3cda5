"""Dead letters on the real broker: a header bomb, the delivery limit, nothing without a reason.

A message whose headers come close to RabbitMQ's ``frame_max`` is accepted from its
publisher; republished to ``bus.dead`` with the ``x-dead-*`` headers added, it used to make
the broker close the whole connection (FRAME_ERROR), and the reconnect brought the same
message back first, again and again, while good sagas stalled behind it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest

from adapters import example_adapters
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.errors import BrokerUnavailableError
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.transport.codec import RawMessage
from bus_orchestrator.transport.connections import BrokerConnections
from bus_orchestrator.transport.consumer import QueueConsumer, Verdict
from bus_orchestrator.transport.publisher import (
    AmqpPublisher,
    DeadLetterer,
    field_size,
    header_frame_size,
)
from bus_orchestrator.transport.topology import Topology
from tests.conftest import TestBus
from tests.e2e.processes import consumers
from tests.integration.harness import (
    EXAMPLE_APP,
    migrated,
    order,
    publish,
    publish_raw,
    start_coordinator,
    wait_for_status,
)

pytestmark = pytest.mark.integration

FRAME_MAX = 131_072


def header_bomb(routing_key: str) -> aio_pika.Message:
    """A message whose header frame is within 256 bytes of ``frame_max``: the broker takes it."""
    headers: dict[str, Any] = {
        "ce-id": str(uuid.uuid4()),
        "ce-type": routing_key,
        "ce-source": "urn:bomb",
        "ce-specversion": "1.0",
    }
    message = aio_pika.Message(b"{not json", headers=headers, content_type="application/json")
    size = header_frame_size(message)
    n = 0
    while size < FRAME_MAX - 256:
        key = f"h{n:05d}"
        headers[key] = "x" * 20
        size += field_size(key, headers[key]) or 0
        n += 1
    message.headers = headers
    assert FRAME_MAX - 256 <= header_frame_size(message) < FRAME_MAX
    assert len(headers) > 3900
    return message


@dataclass
class Engine:
    """Coordinator and adapters on this test's bus, with the adapters' connections in hand."""

    coordinator: CoordinatorService
    adapters: BrokerConnections
    stop: asyncio.Event
    task: asyncio.Task[None]

    def losses(self) -> dict[str, dict[str, int]]:
        assert self.coordinator.connections is not None
        return {
            "coordinator": self.coordinator.connections.losses,
            "adapters": self.adapters.losses,
        }


@pytest.fixture
async def engine(settings: Settings, db_schema: str, bus: TestBus) -> AsyncIterator[Engine]:
    await migrated(settings)
    connections = await BrokerConnections.open(settings.amqp_url, "test adapters")
    stop = asyncio.Event()
    coordinator = await start_coordinator(settings)
    task = asyncio.create_task(
        run_adapters(settings, example_adapters(), stop, connections=connections, app=EXAMPLE_APP)
    )
    try:
        await until_consumed(bus, coordinator.queue_name)
        for name in ("inventory", "payments", "shipping"):
            await until_consumed(bus, bus.topology.adapter_queue(EXAMPLE_APP, name))
        yield Engine(coordinator, connections, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await coordinator.stop()
        await connections.close()


async def until_consumed(bus: TestBus, queue: str) -> None:
    for _ in range(300):
        if await consumers(bus.connection, queue):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no consumer on {queue}")


async def dead_letters(bus: TestBus) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Everything in this test's ``bus.dead`` right now."""
    channel = await bus.channel()
    queue = await channel.declare_queue(bus.topology.dead, passive=True)
    found = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        found.append(message)
    await channel.close()
    return found


@pytest.mark.parametrize(
    ("exchange", "routing_key"),
    [
        ("events", "orders.order_placed.v1"),  # to the coordinator's queue
        ("commands", "payments.charge_payment.v1"),  # to the payments adapter's queue
    ],
)
async def test_a_header_bomb_is_dead_lettered_without_stalling_good_sagas(
    settings: Settings, bus: TestBus, engine: Engine, exchange: str, routing_key: str
) -> None:
    topology = bus.topology
    channel = await bus.channel()
    target = await channel.get_exchange(getattr(topology, exchange), ensure=False)
    bomb = header_bomb(routing_key)
    await target.publish(bomb, routing_key=routing_key)  # confirmed: the broker took it
    good = [f"good-{i}-{uuid.uuid4().hex[:6]}" for i in range(10)]
    for order_id in good:
        await publish(channel, topology.events, order(order_id), correlation_id=order_id)

    found = await wait_for_status(settings, good, {SagaStatus.COMPLETED}, within=60)

    assert {i.status for i in found.values()} == {SagaStatus.COMPLETED}
    assert engine.losses() == {
        "coordinator": {"consume": 0, "publish": 0},
        "adapters": {"consume": 0, "publish": 0},
    }
    dead = await dead_letters(bus)
    assert len(dead) == 1, [(m.headers or {}).get("x-dead-reason") for m in dead]
    headers = dead[0].headers or {}
    assert headers["x-dead-reason"] == "malformed"
    assert headers["x-original-routing-key"] == routing_key
    assert headers["ce-id"] == bomb.headers["ce-id"]
    assert int(headers["x-dead-headers-dropped"]) > 0  # type: ignore[call-overload]
    assert dead[0].body == bomb.body


async def test_a_refused_publish_does_not_take_the_consuming_connection(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    service = await start_coordinator(settings)
    try:
        assert service.publisher is not None and service.connections is not None
        too_big = header_bomb("orders.nonsense.v1")
        too_big.headers = {**too_big.headers, "x-padding": "p" * 4096}
        with pytest.raises(BrokerUnavailableError):
            await service.publisher.send(bus.topology.events, "orders.nonsense.v1", too_big)
        for _ in range(100):  # the close is reported just after the refusal
            if service.connections.losses["publish"]:
                break
            await asyncio.sleep(0.05)
        assert service.connections.losses == {"consume": 0, "publish": 1}

        # Consuming never stopped; the publishing side reconnects by itself.
        commands = await bus.tap(bus.topology.commands, "inventory.reserve_stock.v1")
        channel = await bus.channel()
        await publish(channel, bus.topology.events, order("after"), correlation_id="after")
        found = await wait_for_status(settings, ["after"], {SagaStatus.RUNNING}, within=30)
        assert found["after"].status is SagaStatus.RUNNING
        [command] = await bus.drain(commands, 1, within=30)
        assert command.correlation_id == "after"
        assert service.connections.losses == {"consume": 0, "publish": 1}
    finally:
        await service.stop()


async def consume_with(
    settings: Settings, topology: Topology, delivery_limit: int | None, calls: list[str]
) -> tuple[QueueConsumer, BrokerConnections]:
    """A work queue of ``topology`` whose handler requeues every delivery it is given."""

    async def keep_requeueing(raw: RawMessage) -> Verdict:
        calls.append(str(raw.headers.get("x-delivery-count")))
        return Verdict.REQUEUE

    connections = await BrokerConnections.open(settings.amqp_url, "test")
    consume = await connections.consume.channel()
    queue = await topology.declare_work_queue(
        consume, topology.queue("coordinator"), [(topology.events, "orders.#")]
    )
    publisher = AmqpPublisher(await connections.publish.channel(publisher_confirms=True))
    consumer = QueueConsumer(
        queue,
        keep_requeueing,
        DeadLetterer(publisher, topology, "test"),
        delivery_limit=delivery_limit,
    )
    await consumer.start()
    return consumer, connections


async def test_the_last_delivery_the_queue_allows_is_dead_lettered_with_a_reason(
    settings: Settings, bus: TestBus
) -> None:
    topology = Topology(bus.topology.prefix, delivery_limit=3)
    calls: list[str] = []
    consumer, connections = await consume_with(settings, topology, 3, calls)
    try:
        channel = await bus.channel()
        await publish_raw(channel, topology.events, "orders.order_placed.v1", b"{}")
        [dead] = await bus.drain(await bus_dead(bus), 1, within=30)
    finally:
        await consumer.stop()
        await connections.close()
    headers = dead.headers or {}
    assert headers["x-dead-reason"] == "delivery-limit"
    assert "the queue allows 3" in str(headers["x-dead-detail"])
    assert calls == ["None", "1", "2"]  # the fourth delivery never reached the handler
    assert "x-first-death-reason" not in headers


async def test_the_broker_dead_letters_on_the_delivery_limit_as_a_backstop(
    settings: Settings, bus: TestBus
) -> None:
    """Documented behaviour: should the consumer not dead-letter it, the broker does."""
    topology = Topology(bus.topology.prefix, delivery_limit=2)
    calls: list[str] = []
    consumer, connections = await consume_with(settings, topology, None, calls)
    try:
        channel = await bus.channel()
        await publish_raw(channel, topology.events, "orders.order_placed.v1", b"{}")
        [dead] = await bus.drain(await bus_dead(bus), 1, within=30)
    finally:
        await consumer.stop()
        await connections.close()
    headers = dead.headers or {}
    assert headers["x-first-death-reason"] == "delivery_limit"
    assert len(calls) == 3


async def bus_dead(bus: TestBus) -> aio_pika.abc.AbstractQueue:
    channel = await bus.channel()
    return await channel.declare_queue(bus.topology.dead, passive=True)
