"""A fake adapter for the benchmark: answers every forward command with its success reply.

Kept as cheap as the yardstick's fake adapter, so the benchmark measures the coordinator:
raw aio-pika, one classic durable queue bound to the three forward command types, no inbox,
no store. Per command it builds the success reply from the command's data, encodes it as a
CloudEvent with the engine's codec (correlation = the command's ``ce-correlationid``,
causation = its ``ce-id``, which is what the coordinator matches the reply by), publishes
it persistent and confirmed to the replies exchange, then acks the command.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractExchange, AbstractIncomingMessage

from bus_orchestrator.core.messages import Message
from bus_orchestrator.transport.codec import encode
from bus_orchestrator.transport.topology import Topology
from contracts import (
    ChargePayment,
    CreateShipment,
    PaymentCharged,
    ReserveStock,
    ShipmentCreated,
    StockReserved,
)

SOURCE = "urn:bus-orchestrator:bench:fake-adapter"


def _stock_reserved(data: dict[str, Any]) -> Message:
    return StockReserved(order_id=data["order_id"], reservation_id=f"res-{data['order_id']}")


def _payment_charged(data: dict[str, Any]) -> Message:
    return PaymentCharged(
        order_id=data["order_id"],
        payment_id=f"pay-{data['order_id']}",
        amount=data["amount"],
        currency=data["currency"],
    )


def _shipment_created(data: dict[str, Any]) -> Message:
    return ShipmentCreated(order_id=data["order_id"], shipment_id=f"shp-{data['order_id']}")


REPLIES: dict[str, Callable[[dict[str, Any]], Message]] = {
    ReserveStock.message_type: _stock_reserved,
    ChargePayment.message_type: _payment_charged,
    CreateShipment.message_type: _shipment_created,
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FakeAdapter:
    """Consumes ``<prefix>bus.commands`` and replies success to each command, confirmed."""

    def __init__(
        self,
        amqp_url: str,
        topology: Topology,
        prefetch: int,
        on_reply: Callable[[str, float, float], None] | None = None,
    ) -> None:
        """``on_reply(command id, received, replying)`` gets two ``perf_counter`` moments."""
        self._url = amqp_url
        self._on_reply = on_reply
        self._topology = topology
        self._prefetch = prefetch
        self._connection: AbstractConnection | None = None
        self._replies: AbstractExchange | None = None
        self.queue_name = topology.queue("fake_adapter")
        self.handled = 0

    async def start(self) -> None:
        """Declare the queue and its bindings (the exchanges must exist) and start consuming."""
        self._connection = await aio_pika.connect(self._url)
        publish = await self._connection.channel(publisher_confirms=True)
        consume = await self._connection.channel()
        await consume.set_qos(prefetch_count=self._prefetch)
        self._replies = await publish.get_exchange(self._topology.replies, ensure=False)
        queue = await consume.declare_queue(self.queue_name, durable=True)
        for command_type in REPLIES:
            await queue.bind(self._topology.commands, routing_key=command_type)
        await queue.consume(self._on_command)

    async def stop(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _on_command(self, message: AbstractIncomingMessage) -> None:
        assert self._replies is not None
        received = time.perf_counter()
        headers = message.headers or {}
        command_id = _text(headers["ce-id"])
        command_type = _text(headers["ce-type"])
        reply = REPLIES[command_type](json.loads(message.body))
        out = encode(
            message_id=str(uuid.uuid4()),
            payload=reply,
            exchange=self._topology.replies,
            source=SOURCE,
            time=datetime.now(UTC),
            correlation_id=_text(headers["ce-correlationid"]),
            causation_id=command_id,
        )
        if self._on_reply is not None:
            self._on_reply(command_id, received, time.perf_counter())
        await self._replies.publish(
            aio_pika.Message(
                out.body,
                headers=dict(out.headers),
                content_type=out.content_type,
                message_id=out.message_id,
                correlation_id=out.correlation_id,
                type=out.message_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=out.routing_key,
        )
        await message.ack()
        self.handled += 1
