"""The engine's exchanges and queues on the real broker: alternates, and mismatched arguments."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pika
import pytest
import yaml

from bus_orchestrator.config import Settings
from bus_orchestrator.errors import TopologyMismatchError
from bus_orchestrator.transport.topology import Topology
from tests.conftest import STANDARD_QUEUES, TestBus
from tests.integration.harness import migrated, publish_raw, start_coordinator

pytestmark = pytest.mark.integration


async def test_events_nobody_is_bound_to_land_in_bus_unroutable(bus: TestBus) -> None:
    topology = bus.topology
    bound = await bus.tap(topology.events, "orders.order_placed.v1")
    channel = await bus.channel()
    unroutable = await channel.declare_queue(topology.unroutable, passive=True)
    for routing_key in ("orders.order_placed.v1", "orders.nonsense.v1", "orders.order_placed.v2"):
        await publish_raw(channel, topology.events, routing_key, routing_key.encode())

    [delivered] = await bus.drain(bound, 1)
    parked = await bus.drain(unroutable, 2)

    assert delivered.body == b"orders.order_placed.v1"
    assert sorted(m.routing_key for m in parked) == ["orders.nonsense.v1", "orders.order_placed.v2"]
    assert await unroutable.get(no_ack=True, fail=False) is None


@pytest.fixture
async def bare(amqp_url: str, settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel to declare things the engine's way or not; this prefix is removed after."""
    connection = await aio_pika.connect(amqp_url)
    try:
        yield await connection.channel()
    finally:
        cleanup = await connection.channel()
        topology = Topology(settings.exchange_prefix)
        await topology.delete(cleanup, [settings.exchange_prefix + q for q in STANDARD_QUEUES])
        await connection.close()


async def test_an_exchange_declared_without_the_alternate_stops_start_up_with_one_line(
    settings: Settings, db_schema: str, bare: aio_pika.abc.AbstractChannel
) -> None:
    await migrated(settings)
    name = f"{settings.exchange_prefix}bus.commands"
    # as a client reading an older contract would declare it
    await bare.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)

    with pytest.raises(TopologyMismatchError) as caught:
        await start_coordinator(settings)

    error = caught.value
    assert (error.kind, error.name, error.argument) == ("exchange", name, "alternate-exchange")
    assert "\n" not in str(error)
    assert f"exchange '{name}'" in str(error) and "'alternate-exchange'" in str(error)
    assert "the broker has none" in str(error)


async def test_a_work_queue_with_another_delivery_limit_is_named_with_the_argument(
    settings: Settings, db_schema: str, bare: aio_pika.abc.AbstractChannel
) -> None:
    await migrated(settings)
    await Topology(settings.exchange_prefix).declare_exchanges(bare)
    name = f"{settings.exchange_prefix}bus.order-to-cash.coordinator"
    other = Topology(settings.exchange_prefix, delivery_limit=settings.delivery_limit + 1)
    await other.declare_work_queue(bare, name, [])

    with pytest.raises(TopologyMismatchError) as caught:
        await start_coordinator(settings)

    error = caught.value
    assert (error.kind, error.name, error.argument) == ("queue", name, "x-delivery-limit")
    assert "\n" not in str(error)


CONTRACT = Path(__file__).resolve().parents[2] / "contracts" / "asyncapi.yaml"


def declare_as_the_contract_says(url: str, prefix: str) -> None:
    """A foreign client (pika) declaring everything as ``x-topology`` in the contract says."""
    topology = yaml.safe_load(CONTRACT.read_text())["x-topology"]

    def named(value: Any) -> Any:
        return prefix + value if isinstance(value, str) and value.startswith("bus.") else value

    def arguments(declared: dict[str, Any]) -> dict[str, Any]:
        return {key: named(value) for key, value in declared["arguments"].items()}

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for exchange in topology["exchanges"]:
            channel.exchange_declare(
                named(exchange["name"]),
                exchange["type"],
                durable=exchange["durable"],
                auto_delete=exchange["autoDelete"],
                arguments=arguments(exchange),
            )
        for queue in topology["queues"]:
            name = queue["name"].replace("<name>", "payments")
            channel.queue_declare(named(name), durable=queue["durable"], arguments=arguments(queue))
            for binding in queue.get("bindings", []):
                channel.queue_bind(named(name), named(binding["exchange"]), binding["routingKey"])
    finally:
        connection.close()


async def test_what_a_client_declares_from_the_contract_is_what_the_engine_declares(
    settings: Settings, db_schema: str, bare: aio_pika.abc.AbstractChannel
) -> None:
    await migrated(settings)
    await asyncio.to_thread(
        declare_as_the_contract_says, settings.amqp_url, settings.exchange_prefix
    )

    service = await start_coordinator(settings)  # no TopologyMismatchError
    try:
        assert service.connections is not None
        assert service.connections.losses == {"consume": 0, "publish": 0}
    finally:
        await service.stop()
