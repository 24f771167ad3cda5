"""The coordinator: for each message, load the saga, decide, and commit it all at once.

Per message and saga type the store is asked twice: one query loads the saga and tells
whether the message was seen before; one statement writes the new state, the inbox row,
the audit history and the outbox. The AMQP message is acknowledged after that commit; the
relay then publishes the committed outbox rows. Nothing about a saga stays in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from bus_orchestrator.core.decide import Decision, Inbound, TimerFired, decide
from bus_orchestrator.core.definition import SagaDefinition
from bus_orchestrator.core.messages import ContractRegistry, Event, Reply
from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.errors import (
    ConcurrencyConflictError,
    DeadLetterReason,
    InvalidMessageError,
    StoreUnavailableError,
)
from bus_orchestrator.ports import (
    ByCorrelation,
    ByPendingCommand,
    BySagaId,
    Change,
    Clock,
    CommitResult,
    Direction,
    HistoryEntry,
    Loaded,
    PendingPublish,
    SagaKey,
    SagaStore,
)
from bus_orchestrator.transport.codec import RawMessage, decode, encode
from bus_orchestrator.transport.consumer import DeadLetter, Verdict
from bus_orchestrator.transport.topology import Topology

log = logging.getLogger(__name__)

REPLY_CONSUMER = "replies"
"""Inbox name for replies: a reply belongs to whichever saga awaits its command."""
MAX_CONFLICTS = 20


class Relay(Protocol):
    """What the coordinator hands committed outbox rows to (``runtime.relay.OutboxRelay``)."""

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        """Publish these rows soon; they are committed already."""
        ...


class StoppingError(Exception):
    """The coordinator is shutting down while the store is unreachable: requeue."""


class Coordinator:
    """Routes messages to saga definitions and applies ``decide`` through the store."""

    def __init__(
        self,
        definitions: Sequence[SagaDefinition[Any, Any]],
        registry: ContractRegistry,
        store: SagaStore,
        relay: Relay,
        topology: Topology,
        clock: Clock,
        *,
        source: str,
        max_message_bytes: int,
    ) -> None:
        self._definitions = {d.name: d for d in definitions}
        self._registry = registry
        self._store = store
        self._relay = relay
        self._topology = topology
        self._clock = clock
        self._source = source
        self._max_bytes = max_message_bytes
        self._stopping = False
        self._events: dict[str, list[SagaDefinition[Any, Any]]] = {}
        self._replies: dict[str, list[SagaDefinition[Any, Any]]] = {}
        for definition in definitions:
            for model in definition.message_models():
                if model.message_type not in registry:
                    registry.register(model)
            for event_type in definition.event_types():
                self._events.setdefault(event_type, []).append(definition)
            for reply_type in definition.reply_types():
                self._replies.setdefault(reply_type, []).append(definition)

    def bindings(self) -> list[tuple[str, str]]:
        """The ``(exchange, routing key)`` pairs the coordinator's queue needs."""
        return [(self._topology.events, t) for t in sorted(self._events)] + [
            (self._topology.replies, t) for t in sorted(self._replies)
        ]

    def stop(self) -> None:
        """Stop retrying an unreachable store; messages in hand go back to the queue."""
        self._stopping = True

    async def handle(self, raw: RawMessage) -> Verdict | DeadLetter:
        """Handle one delivery; the consumer settles it by the verdict."""
        try:
            inbound = decode(raw, self._registry, self._max_bytes)
        except InvalidMessageError as exc:
            return DeadLetter(exc.reason, exc.detail)
        payload = inbound.payload
        try:
            if isinstance(payload, Reply):
                await self._retrying(self._on_reply, inbound)
            elif isinstance(payload, Event) and inbound.message_type in self._events:
                for definition in self._events[inbound.message_type]:
                    await self._retrying(self._on_event, inbound, definition)
            else:
                return DeadLetter(
                    DeadLetterReason.UNKNOWN_TYPE,
                    f"no saga here handles {inbound.message_type} ({payload.kind})",
                )
        except StoppingError:
            return Verdict.REQUEUE
        except ConcurrencyConflictError:
            log.warning("message %s kept conflicting; requeueing it", inbound.message_id)
            return Verdict.REQUEUE
        return Verdict.ACK

    async def fire(self, instance: SagaInstance) -> None:
        """Deliver a saga's due timer, exactly as a message would be."""
        if instance.deadline is None or instance.pending_command_id is None:
            return
        definition = self._definitions.get(instance.saga_type)
        if definition is None:
            log.error("saga %s has unknown type %s", instance.saga_id, instance.saga_type)
            return
        timer = TimerFired(instance.saga_id, instance.pending_command_id, instance.deadline)
        await self._retrying(
            self._apply, definition, definition.name, timer, BySagaId(instance.saga_id)
        )

    async def _retrying(self, func: Any, *args: Any) -> None:
        # The store being down is not the message's fault: keep it in hand and retry,
        # rather than dead-lettering or burning through the queue's delivery limit. The
        # first try runs outside tenacity, which costs nothing when all is well.
        try:
            await func(*args)
            return
        except StoreUnavailableError as exc:
            log.warning("store unavailable, retrying: %s", exc)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailableError),
            wait=wait_exponential(multiplier=0.1, max=5.0) + wait_random(0, 0.1),
            stop=lambda _: self._stopping,
            reraise=True,
        ):
            with attempt:
                if self._stopping:
                    raise StoppingError
                await func(*args)

    async def _on_event(self, inbound: Inbound, definition: SagaDefinition[Any, Any]) -> None:
        assert isinstance(inbound.payload, Event)  # noqa: S101 - routed by handle()
        key = ByCorrelation(definition.name, definition.correlation_of(inbound.payload))
        await self._apply(definition, definition.name, inbound, key)

    async def _on_reply(self, inbound: Inbound) -> None:
        if inbound.causation_id is not None:
            loaded = await self._store.load(
                REPLY_CONSUMER, inbound.message_id, ByPendingCommand(inbound.causation_id)
            )
            if loaded.seen:
                return
            instance = loaded.instance
            definition = self._definitions.get(instance.saga_type) if instance else None
            if instance is not None and definition is not None:
                key = BySagaId(instance.saga_id)
                await self._apply(definition, REPLY_CONSUMER, inbound, key, loaded)
                return
        # Nobody awaits this reply: find its saga, if any, so the record lands in its history.
        if inbound.correlation_id is not None:
            for definition in self._replies.get(inbound.message_type, []):
                by_correlation = ByCorrelation(definition.name, inbound.correlation_id)
                loaded = await self._store.load(REPLY_CONSUMER, inbound.message_id, by_correlation)
                if loaded.instance is not None:
                    await self._apply(definition, REPLY_CONSUMER, inbound, by_correlation, loaded)
                    return
        await self._record(None, REPLY_CONSUMER, inbound, "no saga awaits this reply")

    async def _apply(
        self,
        definition: SagaDefinition[Any, Any],
        consumer: str,
        message: Inbound | TimerFired,
        key: SagaKey,
        loaded: Loaded | None = None,
    ) -> None:
        """Decide and commit; on a version conflict, reload and decide again."""
        for _ in range(MAX_CONFLICTS):
            if loaded is None:
                loaded = await self._store.load(consumer, message.message_id, key)
            if loaded.seen:
                log.debug("duplicate %s %s ignored", message.message_type, message.message_id)
                return
            now = self._clock()
            decision = decide(definition, loaded.instance, message, now)
            change = self._change(consumer, message, loaded.instance, decision, now)
            committed = await self._store.commit(change)
            if committed.result is CommitResult.COMMITTED:
                self._relay.submit(committed.outbox)
                self._log(decision, loaded.instance)
                return
            if committed.result is CommitResult.DUPLICATE:
                return
            loaded = None
        raise ConcurrencyConflictError(f"saga for {message.message_id} kept changing")

    async def _record(
        self, saga_id: str | None, consumer: str, inbound: Inbound, note: str
    ) -> None:
        now = self._clock()
        entry = _entry_in(inbound, "ignored", note, now)
        change = Change(consumer, inbound.message_id, saga_id, None, None, (entry,))
        await self._store.commit(change)
        log.info("%s %s ignored: %s", inbound.message_type, inbound.message_id, note)

    def _change(
        self,
        consumer: str,
        message: Inbound | TimerFired,
        before: SagaInstance | None,
        decision: Decision,
        now: datetime,
    ) -> Change:
        history = [_entry_in(message, decision.outcome, decision.note, now)]
        outbox = []
        for out in decision.send:
            outbox.append(
                encode(
                    message_id=out.message_id,
                    payload=out.payload,
                    exchange=self._topology.exchange_for(out.payload.kind),
                    source=self._source,
                    time=now,
                    correlation_id=out.correlation_id,
                    causation_id=out.causation_id,
                )
            )
            history.append(
                HistoryEntry(
                    direction=Direction.OUT,
                    message_id=out.message_id,
                    message_type=out.payload.message_type,
                    correlation_id=out.correlation_id,
                    causation_id=out.causation_id,
                    outcome="queued",
                    note="",
                    payload=out.payload.model_dump(mode="json"),
                    at=now,
                )
            )
        after = decision.instance
        saga_id = after.saga_id if after else before.saga_id if before else None
        return Change(
            consumer=consumer,
            message_id=message.message_id,
            saga_id=saga_id,
            instance=after,
            expected_version=before.version if before is not None and after is not None else None,
            history=tuple(history),
            outbox=tuple(outbox),
        )

    def _log(self, decision: Decision, before: SagaInstance | None) -> None:
        after = decision.instance
        if after is None:
            log.info("ignored: %s", decision.note)
        elif before is None or before.status is not after.status:
            log.info(
                "saga %s %s (%s) is %s: %s",
                after.saga_type,
                after.correlation_id,
                after.saga_id,
                after.status,
                decision.note,
            )
        else:
            log.debug("saga %s: %s", after.saga_id, decision.note)


def _entry_in(
    message: Inbound | TimerFired, outcome: str, note: str, now: datetime
) -> HistoryEntry:
    if isinstance(message, TimerFired):
        return HistoryEntry(
            direction=Direction.IN,
            message_id=message.message_id,
            message_type=message.message_type,
            correlation_id=None,
            causation_id=message.command_id,
            outcome=outcome,
            note=note,
            payload={"command_id": message.command_id, "due": message.due.isoformat()},
            at=now,
        )
    return HistoryEntry(
        direction=Direction.IN,
        message_id=message.message_id,
        message_type=message.message_type,
        correlation_id=message.correlation_id,
        causation_id=message.causation_id,
        outcome=outcome,
        note=note,
        payload=message.payload.model_dump(mode="json"),
        at=now,
    )
