"""The test fixtures give each test its own exchanges, and clean them up."""

from tests.conftest import TestBus


async def test_declared_exchanges_route_to_a_tap(bus: TestBus) -> None:
    import aio_pika

    tap = await bus.tap(bus.topology.events, "orders.#")
    channel = await bus.channel()
    exchange = await channel.get_exchange(bus.topology.events)
    await exchange.publish(aio_pika.Message(b"{}"), routing_key="orders.x.v1")
    [message] = await bus.drain(tap, 1)
    assert message.body == b"{}"
