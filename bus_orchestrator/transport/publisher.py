"""Publishing with publisher confirms, and dead-lettering bad input.

A dead letter keeps the original body and as many of the original headers as fit: all
headers of a message travel in one frame of at most ``frame_max`` bytes, and a message whose
headers come close to that (accepted from its publisher) would, with the ``x-dead-*``
headers added, be refused by the broker with a FRAME_ERROR that closes the connection. The
reason headers are always kept; original headers past the budget are dropped and counted
in ``x-dead-headers-dropped``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import AMQPError
from pamqp import encode
from pamqp import frame as amqp_frame
from pamqp.header import ContentHeader

from bus_orchestrator.errors import BrokerUnavailableError, DeadLetterReason
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.transport.codec import RawMessage
from bus_orchestrator.transport.topology import Topology

MAX_DETAIL_CHARS = 2000
FRAME_MAX = 131_072
"""RabbitMQ's default ``frame_max``; pass the negotiated one to ``DeadLetterer``."""
HEADROOM = 1024
"""Bytes left free in a dead letter's header frame for what the broker adds on the way
(``x-delivery-count`` on a redelivery, ``x-death`` if it is dead-lettered again)."""
KEEP_FIRST = ("ce-", "traceparent", "tracestate", "x-saga-")
"""Original headers that say what the message was, kept before any other."""
DROPPED = "x-dead-headers-dropped"


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
    """Moves a message the engine cannot accept to ``bus.dead``, reason in its headers.

    The dead letter always fits in one header frame of ``frame_max`` bytes, whatever the
    original carried (see the module docstring).
    """

    def __init__(
        self,
        publisher: AmqpPublisher,
        topology: Topology,
        consumer: str,
        *,
        frame_max: int = FRAME_MAX,
    ) -> None:
        self._publisher = publisher
        self._topology = topology
        self._consumer = consumer
        self._frame_max = frame_max

    def message(self, raw: RawMessage, reason: DeadLetterReason, detail: str) -> aio_pika.Message:
        """The dead letter of ``raw``: its body, the reason, and what fits of its headers."""
        reasons: dict[str, Any] = dead_letter_reasons(
            reason, detail, self._consumer, datetime.now(UTC), raw.exchange, raw.routing_key
        )
        originals = {
            k: _header(v) for k, v in raw.headers.items() if k not in reasons and k != DROPPED
        }
        # Measured with the count header at its largest, so what is kept fits with it too.
        message = aio_pika.Message(
            raw.body,
            headers={**reasons, DROPPED: len(originals)},
            content_type=raw.content_type,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            type=raw.type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        budget = self._frame_max - HEADROOM - header_frame_size(message)
        kept: dict[str, Any] = {}
        for key in sorted(originals, key=lambda k: not k.startswith(KEEP_FIRST)):
            size = field_size(key, originals[key])
            if size is not None and size <= budget:
                kept[key] = originals[key]
                budget -= size
        dropped = len(originals) - len(kept)
        message.headers = {**kept, **reasons, **({DROPPED: dropped} if dropped else {})}
        return message

    async def dead_letter(self, raw: RawMessage, reason: DeadLetterReason, detail: str) -> None:
        message = self.message(raw, reason, detail)
        await self._publisher.send(self._topology.dead, raw.routing_key, message)


def dead_letter_reasons(
    reason: DeadLetterReason,
    detail: str,
    by: str,
    at: datetime,
    exchange: str,
    routing_key: str,
) -> dict[str, str]:
    """The headers that say why a message is in ``bus.dead`` (the wire contract's names)."""
    return {
        "x-dead-reason": str(reason),
        "x-dead-detail": detail[:MAX_DETAIL_CHARS],
        "x-dead-by": by,
        "x-dead-at": at.astimezone(UTC).isoformat(),
        "x-original-exchange": exchange,
        "x-original-routing-key": routing_key,
    }


def header_frame_size(message: aio_pika.Message) -> int:
    """Bytes of the content header frame that carries ``message``'s properties and headers."""
    header = ContentHeader(body_size=len(message.body), properties=message.properties)
    return len(amqp_frame.marshal(header, 1))


def field_size(key: str, value: Any) -> int | None:
    """Bytes one entry adds to an AMQP field table; ``None`` if it cannot be encoded."""
    try:
        return len(encode.field_table({key: value})) - 4  # less the table's length prefix
    except (TypeError, ValueError, OverflowError):
        return None


def _header(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _header(v) for k, v in value.items()}
    return value
