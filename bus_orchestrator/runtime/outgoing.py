"""How the engine encodes a message it sends, for the outbox: one place, so the
coordinator's commands and events and those the HTTP API publishes look alike on the bus.

A message goes to the exchange of its kind (``bus.events``, ``bus.commands`` or
``bus.replies``, under the prefix), keyed by its type, as a binary-mode CloudEvent
(``transport.codec.encode``) whose ``source`` names the process that sent it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from bus_orchestrator.core.decision import Outgoing
from bus_orchestrator.core.messages import Message
from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.telemetry.tracing import inject, saga_attributes, saga_headers
from bus_orchestrator.transport.codec import encode
from bus_orchestrator.transport.topology import Topology


def encode_message(
    payload: Message,
    *,
    message_id: str,
    topology: Topology,
    source: str,
    now: datetime,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    compensates: str | None = None,
) -> OutboxMessage:
    """``payload`` ready for the outbox, on the exchange of its kind."""
    return encode(
        message_id=message_id,
        payload=payload,
        exchange=topology.exchange_for(payload.kind),
        source=source,
        time=now,
        correlation_id=correlation_id,
        causation_id=causation_id,
        compensates=compensates,
    )


def encode_outgoing(
    out: Outgoing, *, topology: Topology, source: str, now: datetime
) -> OutboxMessage:
    """A message a saga's decision sends (``Outgoing``), ready for the outbox."""
    return encode_message(
        out.payload,
        message_id=out.message_id,
        topology=topology,
        source=source,
        now=now,
        correlation_id=out.correlation_id,
        causation_id=out.causation_id,
        compensates=out.compensates,
    )


def for_saga(
    message: OutboxMessage,
    instance: SagaInstance | None,
    *,
    compensation: bool = False,
    traced: bool,
) -> OutboxMessage:
    """``message`` with the current trace context (when ``traced``: the relay's send span
    is a child of the work that wrote it) and the ``x-saga-*`` headers of ``instance`` (if
    any: the adapters see the saga). ``compensation`` marks a compensating command only:
    not the end event of a saga that finished compensating, nor a child's cancel."""
    headers = dict(message.headers)
    if traced:
        inject(headers)
    headers.update(saga_headers(saga_attributes(instance), compensation))
    return dataclasses.replace(message, headers=headers)
