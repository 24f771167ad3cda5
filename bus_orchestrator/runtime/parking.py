"""The park: events that arrived before the saga they correlate to.

An ``OrderCancelled`` can overtake its ``OrderPlaced`` (another publisher, another
coordinator, a redelivery). Rather than being ignored, such an event is kept in the store,
as it was delivered, and applied when its saga starts; one whose saga does not start
within the time to live is recorded in that saga's history and dead-lettered with reason
``expired``. ``ParkedEvents`` does all three for the coordinator; its ``sweep``, run
periodically, catches what the message path left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from bus_orchestrator.core.decide import Inbound
from bus_orchestrator.core.definition import SagaDefinition
from bus_orchestrator.core.messages import ContractRegistry
from bus_orchestrator.core.state import saga_id_for
from bus_orchestrator.errors import DeadLetterReason, InvalidMessageError
from bus_orchestrator.ports import (
    ByCorrelation,
    Change,
    Clock,
    CommitResult,
    Direction,
    HistoryEntry,
    OutboxMessage,
    Parked,
    ParkedMessage,
    PendingPublish,
    SagaStore,
)
from bus_orchestrator.runtime.history import entry_in
from bus_orchestrator.runtime.ordering import KeyedLocks
from bus_orchestrator.telemetry.metrics import Metrics
from bus_orchestrator.transport.codec import RawMessage, decode
from bus_orchestrator.transport.publisher import dead_letter_reasons

log = logging.getLogger(__name__)


class Relay(Protocol):
    """What committed outbox rows are handed to (``runtime.relay.OutboxRelay``)."""

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        """Publish these rows soon; they are committed already."""
        ...


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
            **dead_letter_reasons(
                reason, detail, "coordinator", now, message.exchange, message.routing_key
            ),
        },
    )


ApplyParked = Callable[[SagaDefinition[Any, Any], Inbound, Parked], Awaitable[None]]
"""Applies a parked event to its saga, removing it from the park with the same commit."""


class ParkedEvents:
    """The coordinator's park: keeps early events, applies them, dead-letters expired ones.

    It decides nothing: a parked event is applied through ``apply`` (the coordinator's own
    message path), under the saga's ordering lock when the sweep does it.
    """

    def __init__(
        self,
        store: SagaStore,
        relay: Relay,
        apply: ApplyParked,
        *,
        definitions: Mapping[str, SagaDefinition[Any, Any]],
        registry: ContractRegistry,
        max_bytes: int,
        dead_exchange: str,
        clock: Clock,
        ttl: timedelta,
        order: KeyedLocks,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._relay = relay
        self._apply = apply
        self._definitions = definitions
        self._registry = registry
        self._max_bytes = max_bytes
        self._dead_exchange = dead_exchange
        self._clock = clock
        self._ttl = ttl
        self._order = order
        self._metrics = metrics

    async def park(
        self,
        definition: SagaDefinition[Any, Any],
        correlation: str,
        inbound: Inbound,
        raw: RawMessage,
    ) -> None:
        """Keep an event whose saga does not exist yet, to apply when it starts."""
        now = self._clock()
        message = parked_message(definition.name, correlation, inbound, raw, now + self._ttl)
        note = (
            f"no {definition.name} saga for {correlation!r} yet: kept until it starts "
            f"or {message.expires_at.isoformat()}"
        )
        entry = entry_in(inbound, "parked", note, now)
        parked = await self._store.park(f"park.{definition.name}", message, entry)
        if not parked:
            self._metrics.duplicate("coordinator")
            return
        log.info("%s %s parked: %s", inbound.message_type, inbound.message_id, note)
        # The saga may have started while this was being parked, by another coordinator
        # that looked for parked events before this one was there: look again, after.
        again = await self._store.load(
            definition.name,
            inbound.message_id,
            ByCorrelation(definition.name, correlation),
            inbound.source,
        )
        if again.instance is not None:
            await self.unpark(definition, correlation)

    async def unpark(self, definition: SagaDefinition[Any, Any], correlation: str) -> None:
        """Apply the events parked for this saga, in the order they arrived."""
        for parked in await self._store.parked(definition.name, correlation):
            await self._apply_parked(definition, parked)

    async def _apply_parked(self, definition: SagaDefinition[Any, Any], parked: Parked) -> None:
        message = parked.message
        try:
            inbound = decode(raw_of(message), self._registry, self._max_bytes)
        except InvalidMessageError as exc:  # its contract changed while it waited
            await self._expire(parked, exc.reason, exc.detail)
            return
        await self._apply(definition, inbound, parked)

    async def sweep(self, limit: int = 200) -> int:
        """Act on parked events that were left waiting: apply those whose saga exists by
        now (a coordinator stopped before it applied them), dead-letter those that expired.
        Returns how many it handled."""
        ready = await self._store.parked_ready(self._clock(), limit)
        for parked in ready:
            message = parked.message
            definition = self._definitions.get(message.saga_type)
            async with self._order.hold([message.correlation_id]):
                loaded = await self._store.load(
                    message.saga_type,
                    message.message_id,
                    ByCorrelation(message.saga_type, message.correlation_id),
                    message.source,
                )
                if definition is not None and loaded.instance is not None:
                    await self._apply_parked(definition, parked)
                elif message.expires_at <= self._clock():
                    await self._expire(parked)
        return len(ready)

    async def _expire(
        self,
        parked: Parked,
        reason: DeadLetterReason = DeadLetterReason.EXPIRED,
        detail: str | None = None,
    ) -> None:
        """Record a parked event whose saga never started (or that can no longer be read),
        and dead-letter it."""
        message = parked.message
        now = self._clock()
        detail = detail or (
            f"no {message.saga_type} saga for {message.correlation_id!r} started before "
            f"{message.expires_at.isoformat()}"
        )
        entry = HistoryEntry(
            direction=Direction.IN,
            message_id=message.message_id,
            message_type=message.message_type,
            correlation_id=message.correlation_id,
            causation_id=None,
            outcome="dead-lettered",
            note=f"{reason}: {detail}",
            payload={},
            at=now,
        )
        dead = parked_dead_letter(message, self._dead_exchange, reason, detail, now)
        change = Change(
            consumer=f"expire.{message.saga_type}",
            message_id=message.message_id,
            saga_id=saga_id_for(message.saga_type, message.correlation_id),
            instance=None,
            expected_version=None,
            history=(entry,),
            outbox=(dead,),
            source=message.source,
            unparked=parked.parked_id,
        )
        committed = await self._store.commit(change)
        if committed.result is CommitResult.COMMITTED:
            self._relay.submit(committed.outbox)
            self._metrics.dead_lettered("coordinator", str(reason))
            log.warning(
                "parked %s %s dead-lettered: %s: %s",
                message.message_type,
                message.message_id,
                reason,
                detail,
            )
        else:
            await self._store.unpark(parked.parked_id)
