"""The park: events that arrived before the saga they correlate to.

An ``OrderCancelled`` can overtake its ``OrderPlaced`` (another publisher, another
coordinator, a redelivery). Rather than being ignored, such an event is kept in the store,
as it was delivered, and applied when its saga starts; one whose saga does not start
within the time to live is recorded in that saga's history and dead-lettered with reason
``expired``. ``Coordinator.sweep_parked``, run periodically, catches what the message path
left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bus_orchestrator.core.decide import Inbound
from bus_orchestrator.errors import DeadLetterReason
from bus_orchestrator.ports import OutboxMessage, ParkedMessage
from bus_orchestrator.transport.codec import RawMessage

log = logging.getLogger(__name__)

KEPT_HEADERS = ("ce-", "traceparent", "tracestate")
"""What of a parked event's headers is kept: its binary-mode attributes and trace context."""


def _kept(headers: Mapping[str, Any]) -> dict[str, str]:
    kept = {}
    for name, value in headers.items():
        if name.lower().startswith(KEPT_HEADERS):
            kept[name] = (
                value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            )
    return kept


def parked_message(
    saga_type: str, correlation_id: str, inbound: Inbound, raw: RawMessage, expires_at: datetime
) -> ParkedMessage:
    """An event as delivered, to keep for the saga ``(saga_type, correlation_id)``."""
    return ParkedMessage(
        saga_type=saga_type,
        correlation_id=correlation_id,
        message_id=inbound.message_id,
        source=inbound.source,
        message_type=inbound.message_type,
        exchange=raw.exchange,
        routing_key=raw.routing_key,
        content_type=raw.content_type,
        headers=_kept(raw.headers),
        body=raw.body,
        expires_at=expires_at,
    )


def raw_of(message: ParkedMessage) -> RawMessage:
    """The parked event as a delivery again, to decode it as it was first decoded."""
    return RawMessage(
        body=message.body,
        headers=dict(message.headers),
        content_type=message.content_type,
        message_id=message.message_id,
        type=message.message_type,
        exchange=message.exchange,
        routing_key=message.routing_key,
    )


def parked_dead_letter(
    message: ParkedMessage,
    dead_exchange: str,
    reason: DeadLetterReason,
    detail: str,
    now: datetime,
) -> OutboxMessage:
    """The dead letter of a parked event whose saga never started, for the outbox."""
    return OutboxMessage(
        message_id=message.message_id,
        message_type=message.message_type,
        exchange=dead_exchange,
        routing_key=message.routing_key,
        body=message.body,
        content_type=message.content_type or "application/octet-stream",
        headers={
            **message.headers,
            "x-dead-reason": str(reason),
            "x-dead-detail": detail,
            "x-dead-by": "coordinator",
            "x-dead-at": now.astimezone(UTC).isoformat(),
            "x-original-exchange": message.exchange,
            "x-original-routing-key": message.routing_key,
        },
    )
