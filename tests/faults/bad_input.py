"""Bad input for the fault suite: a header bomb, and what a careless publisher sends.

Each message carries its own ``message_id``, by which it is found again in ``bus.dead``
(or ``bus.unroutable``), and the reason it must be found there with (``None``: any reason).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import pamqp.commands
import pamqp.frame
import pamqp.header

from bus_orchestrator.transport.codec import encode
from contracts import PaymentCharged
from tests.integration.harness import order

FRAME_MAX = 131_072
"""RabbitMQ's frame_max: all the headers of a message must fit in one frame."""

BOMB_HEADERS = 4_000


@dataclass(frozen=True, slots=True)
class BadInput:
    """One bad message, where it goes, and the reason it must be dead-lettered with."""

    name: str
    exchange_kind: str
    """``events``, ``commands`` or ``replies``: the bus exchange it is published to."""
    routing_key: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    reason: str | None = None
    """The ``x-dead-reason`` required; ``None``: any reason (but one)."""
    unroutable: bool = False
    """It must reach ``bus.unroutable`` instead of ``bus.dead``."""
    by_engine: bool = False
    """The engine itself must dead-letter it (``x-dead-reason``), at its first delivery: not
    the broker, once the delivery limit is spent."""
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def message(self) -> aio_pika.Message:
        return aio_pika.Message(
            self.body,
            headers=self.headers,
            content_type=self.content_type,
            message_id=self.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )


def _frame_size(headers: dict[str, Any], message_id: str, body_size: int) -> int:
    properties = pamqp.commands.Basic.Properties(
        headers=headers,
        content_type="application/json",
        message_id=message_id,
        delivery_mode=2,
    )
    header = pamqp.header.ContentHeader(1, body_size, properties)
    return len(pamqp.frame.marshal(header, 1))


def header_bomb(name: str, exchange_kind: str, routing_key: str, body: bytes) -> BadInput:
    """A message with ``BOMB_HEADERS`` headers whose header frame is just under frame_max:
    the broker takes it, but not a copy with a few headers more."""
    message_id = str(uuid.uuid4())
    headers: dict[str, Any] = {f"h{n:04d}": "x" * 20 for n in range(BOMB_HEADERS)}
    # fill up to 64 bytes short of the limit with the last header's value
    room = FRAME_MAX - 64 - _frame_size(headers, message_id, len(body))
    headers[f"h{BOMB_HEADERS - 1:04d}"] += "x" * room
    assert FRAME_MAX - 128 < _frame_size(headers, message_id, len(body)) < FRAME_MAX
    return BadInput(
        name,
        exchange_kind,
        routing_key,
        body,
        headers,
        reason=None,
        by_engine=True,
        message_id=message_id,
    )


def _binary_headers(message_id: str, message_type: str, **extra: str) -> dict[str, Any]:
    return {
        "ce-id": message_id,
        "ce-type": message_type,
        "ce-source": "urn:test:careless",
        "ce-specversion": "1.0",
        **{f"ce-{k}": v for k, v in extra.items()},
    }


def _bad(
    name: str,
    exchange_kind: str,
    routing_key: str,
    body: bytes,
    *,
    reason: str | None,
    unroutable: bool = False,
    structured: bool = False,
    **ce: str,
) -> BadInput:
    message_id = str(uuid.uuid4())
    headers = {} if structured else _binary_headers(message_id, routing_key, **ce)
    return BadInput(
        name,
        exchange_kind,
        routing_key,
        body,
        headers,
        content_type="application/cloudevents+json" if structured else "application/json",
        reason=reason,
        unroutable=unroutable,
        message_id=message_id,
    )


def careless_inputs(max_message_bytes: int) -> list[BadInput]:
    """The bad inputs of issue 7 besides the header bomb."""
    placed = "orders.order_placed.v1"
    good = order("careless-1").model_dump(mode="json")
    nul = {**good, "customer_id": "c-\x00-1"}
    nul_id = str(uuid.uuid4())
    nonsense_id = str(uuid.uuid4())
    reply = encode(
        message_id=str(uuid.uuid4()),
        payload=PaymentCharged(
            order_id="careless-2", payment_id="pay-1", amount=Decimal("1.00"), currency="EUR"
        ),
        exchange="replies",
        source="urn:test:careless",
        time=datetime.now(UTC),
        correlation_id="careless-2",
    )  # no causation id
    return [
        _bad("malformed JSON", "events", placed, b'{"order_id": "x",', reason="malformed"),
        _bad(
            "JSON 10,000 deep",
            "events",
            placed,
            b'{"order_id": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
            reason="malformed",
        ),
        BadInput(
            "NUL in a string",
            "events",
            placed,
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": nul_id,
                    "type": placed,
                    "source": "urn:test:careless",
                    "datacontenttype": "application/json",
                    "data": nul,
                }
            ).encode(),
            content_type="application/cloudevents+json",
            reason="schema-violation",
            message_id=nul_id,
        ),
        BadInput(
            "unknown routing key on bus.events",
            "events",
            "orders.nonsense.v1",
            json.dumps(
                {
                    "specversion": "1.0",
                    "id": nonsense_id,
                    "type": "orders.nonsense.v1",
                    "source": "urn:test:careless",
                    "data": {"order_id": "careless-3"},
                }
            ).encode(),
            content_type="application/cloudevents+json",
            unroutable=True,
            message_id=nonsense_id,
        ),
        _bad(
            "oversized body",
            "events",
            placed,
            b'{"pad": "' + b"x" * max_message_bytes + b'"}',
            reason="oversized",
        ),
        BadInput(
            "reply without causationid",
            "replies",
            reply.routing_key,
            reply.body,
            dict(reply.headers),
            content_type=reply.content_type,
            reason=None,
            message_id=reply.message_id,
        ),
    ]
