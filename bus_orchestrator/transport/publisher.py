"""Publishing with publisher confirms, and dead-lettering bad input."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import AMQPError

from bus_orchestrator.errors import BrokerUnavailableError, DeadLetterReason
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.transport.codec import RawMessage
from bus_orchestrator.transport.topology import Topology

MAX_DETAIL_CHARS = 2000


class AmqpPublisher:
    """``ports.Publisher`` on a confirming aio-pika channel.

    ``publish`` returns once the broker has confirmed the message, so an outbox row is
    marked sent only when the broker owns the message.
    """

    def __init__(self, channel: AbstractChannel, timeout: float = 30.0) -> None:
        self._channel = channel
        self._timeout = timeout
        self._exchanges: dict[str, AbstractExchange] = {}

    async def _exchange(self, name: str) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish(self, message: OutboxMessage) -> None:
        amqp_message = aio_pika.Message(
            message.body,
            headers=dict(message.headers),
            content_type=message.content_type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.message_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self.send(message.exchange, message.routing_key, amqp_message)

    async def send(self, exchange: str, routing_key: str, message: aio_pika.Message) -> None:
        """Publish a ready AMQP message and wait for the broker's confirm."""
        try:
            target = await self._exchange(exchange)
            # Unroutable commands and replies go to the alternate exchange, so no
            # 'mandatory' returns to handle here.
            await target.publish(message, routing_key, mandatory=False, timeout=self._timeout)
        except (TimeoutError, AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailableError(f"publish to {exchange!r} not confirmed: {exc}") from exc


class DeadLetterer:
    """Moves a message the engine cannot accept to ``bus.dead``, reason in its headers."""

    def __init__(self, publisher: AmqpPublisher, topology: Topology, consumer: str) -> None:
        self._publisher = publisher
        self._topology = topology
        self._consumer = consumer

    async def dead_letter(self, raw: RawMessage, reason: DeadLetterReason, detail: str) -> None:
        headers: dict[str, Any] = {k: _header(v) for k, v in raw.headers.items()}
        headers.update(
            {
                "x-dead-reason": str(reason),
                "x-dead-detail": detail[:MAX_DETAIL_CHARS],
                "x-dead-by": self._consumer,
                "x-dead-at": datetime.now(UTC).isoformat(),
                "x-original-exchange": raw.exchange,
                "x-original-routing-key": raw.routing_key,
            }
        )
        message = aio_pika.Message(
            raw.body,
            headers=headers,
            content_type=raw.content_type,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            type=raw.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._publisher.send(self._topology.dead, raw.routing_key, message)


def _header(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _header(v) for k, v in value.items()}
    return value
