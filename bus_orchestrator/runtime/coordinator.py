"""The coordinator: for each message, load the saga, decide, and commit it all at once.

Per message and saga type the store is asked twice: one query loads the saga and tells
whether the message was seen before; one statement writes the new state, the inbox row,
the audit history and the outbox. The AMQP message is acknowledged after that commit; the
relay then publishes the committed outbox rows. Nothing about a saga stays in memory.

After a commit that queued a saga for its entity locks or released them, the keys are
granted at once (``runtime.locks``), and each saga granted is told through the same decide
and commit.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import Span
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from bus_orchestrator.core.decide import (
    CommandRefused,
    Decision,
    Inbound,
    LocksGranted,
    Outcome,
    Outgoing,
    TimerFired,
    decide,
    end_of,
    error_text,
    fail,
)
from bus_orchestrator.core.definition import SagaDefinition
from bus_orchestrator.core.lifecycle import CancelRequested, SagaEnded
from bus_orchestrator.core.messages import (
    REDACT_SECRETS,
    ContractRegistry,
    Event,
    Reply,
)
from bus_orchestrator.core.repair import (
    OperatorAction,
    Repair,
    Repaired,
    RepairRefusedError,
    RepairRequest,
    skip_reply,
)
from bus_orchestrator.core.state import Phase, SagaInstance, SagaStatus, StepStatus, saga_id_for
from bus_orchestrator.errors import (
    BusOrchestratorError,
    ConcurrencyConflictError,
    DeadLetterReason,
    DefinitionError,
    DefinitionVersionError,
    InvalidMessageError,
    SagaNotFoundError,
    StoreUnavailableError,
    TimerError,
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
    LockGrant,
    OutboxMessage,
    Parked,
    SagaKey,
    SagaStore,
)
from bus_orchestrator.runtime.history import EngineMessage, entry_in, source_of
from bus_orchestrator.runtime.locks import LockGrants
from bus_orchestrator.runtime.ordering import KeyedLocks
from bus_orchestrator.runtime.outgoing import encode_outgoing, for_saga
from bus_orchestrator.runtime.parking import ParkedEvents, Relay
from bus_orchestrator.runtime.spans import Delivery, SagaSpans, Timed
from bus_orchestrator.telemetry.logs import bind_saga
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.telemetry.tracing import (
    carrier_of,
    current_step,
    current_trace_id,
    saga_attributes,
)
from bus_orchestrator.transport.codec import RawMessage, decode
from bus_orchestrator.transport.consumer import DeadLetter, Verdict
from bus_orchestrator.transport.topology import Topology

log = logging.getLogger(__name__)

REPLY_CONSUMER = "replies"
"""Inbox name for replies (``replies.<app>`` in an app): a reply belongs to whichever saga
awaits its command, so the inbox knows replies per app, not per saga type. Two apps whose
sagas consume one reply type each get a copy, and each must see it as new."""
OPERATOR_CONSUMER = "operator"
"""Inbox name for operators' repairs (``operator.<app>`` in an app): an action's id is
applied once."""
MAX_CONFLICTS = 20
FINISHED_STEP = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.TIMED_OUT)


class StoppingError(BusOrchestratorError):
    """The coordinator is shutting down while the store is unreachable: requeue."""

    retryable = True


class Coordinator:
    """Routes messages to saga definitions and applies ``decide`` through the store.

    ``definitions`` may hold several versions of one saga name: an event that starts a saga
    goes to the newest version, and every loaded saga to the version it started on.
    """

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
        park_ttl: timedelta = timedelta(hours=1),
        telemetry: Telemetry | None = None,
        app: str | None = None,
    ) -> None:
        self._versions = {(d.name, d.version): d for d in definitions}
        if len(self._versions) != len(definitions):
            raise DefinitionError("each saga name and version must be given once")
        newest_first = sorted(definitions, key=lambda d: -d.version)
        self._definitions: dict[str, SagaDefinition[Any, Any]] = {}
        for definition in newest_first:
            self._definitions.setdefault(definition.name, definition)
        registry = _with_lifecycle(registry, definitions)
        self._reply_consumer = REPLY_CONSUMER if app is None else f"{REPLY_CONSUMER}.{app}"
        self._operator_consumer = OPERATOR_CONSUMER if app is None else f"{OPERATOR_CONSUMER}.{app}"
        self._registry = registry
        self._store = store
        self._relay = relay
        self._topology = topology
        self._clock = clock
        self._source = source
        self._max_bytes = max_message_bytes
        self._order = KeyedLocks()
        self._telemetry = telemetry or Telemetry.disabled()
        self._spans = SagaSpans(self._telemetry.tracer)  # no-ops when tracing is off
        self._metrics = self._telemetry.metrics
        self._stopping = False
        self._locks = LockGrants(store, self._tell)
        self._park = ParkedEvents(
            store,
            relay,
            self._apply_parked,
            definitions=self._definitions,
            registry=registry,
            max_bytes=max_message_bytes,
            dead_exchange=topology.dead,
            clock=clock,
            ttl=park_ttl,
            order=self._order,
            metrics=self._metrics,
        )
        self._events: dict[str, list[SagaDefinition[Any, Any]]] = {}
        self._replies: dict[str, list[SagaDefinition[Any, Any]]] = {}
        for definition in definitions:
            for model in definition.message_models():
                contract = registry.get(model.message_type)
                if contract is None or contract.model is not model:
                    raise DefinitionError(
                        f"saga {definition.name!r} uses {model.message_type!r}, which the "
                        "contract registry does not hold: register it with the contracts"
                    )
        # Per message type, one definition per saga name: the newest that handles the type
        # (it starts sagas and correlates); ``_apply`` then takes the saga's own version.
        for definition in newest_first:
            for event_type in definition.event_types():
                _add_newest(self._events.setdefault(event_type, []), definition)
            for reply_type in definition.reply_types():
                _add_newest(self._replies.setdefault(reply_type, []), definition)

    def _definition_of(self, instance: SagaInstance) -> SagaDefinition[Any, Any]:
        """The definition a saga started on; ``DefinitionVersionError`` when not here."""
        key = (instance.saga_type, instance.definition_version)
        definition = self._versions.get(key)
        if definition is None:
            have = sorted(v for name, v in self._versions if name == instance.saga_type)
            if not have:
                raise DefinitionVersionError(
                    f"saga type {instance.saga_type!r} has no definition here"
                )
            raise DefinitionVersionError(
                f"saga {instance.saga_id} runs on {instance.saga_type} version "
                f"{instance.definition_version}; this coordinator has versions {have}"
            )
        return definition

    def bindings(self) -> list[tuple[str, str]]:
        """The ``(exchange, routing key)`` pairs the coordinator's queue needs."""
        return [(self._topology.events, t) for t in sorted(self._events)] + [
            (self._topology.replies, t) for t in sorted(self._replies)
        ]

    def stop(self) -> None:
        """Stop retrying an unreachable store; messages in hand go back to the queue."""
        self._stopping = True

    async def handle(self, raw: RawMessage) -> Verdict | DeadLetter:
        """Handle one delivery; the consumer settles it by the verdict.

        Everything up to taking the saga's lock is synchronous, so deliveries of one saga
        are handled in the order they arrived (see ``runtime.ordering``).
        """
        context = self._spans.context_of(raw.headers)
        delivery = Delivery(raw.exchange, raw.routing_key, context, time.time_ns())
        try:
            inbound = decode(raw, self._registry, self._max_bytes)
        except InvalidMessageError as exc:
            self._spans.refusal(delivery, raw.message_id, str(exc.reason), exc.detail)
            return DeadLetter(exc.reason, exc.detail)
        payload = inbound.payload
        targets: list[tuple[SagaDefinition[Any, Any], str]] = []
        if isinstance(payload, Reply):
            keys = [] if inbound.correlation_id is None else [inbound.correlation_id]
        elif isinstance(payload, Event) and inbound.message_type in self._events:
            try:
                correlated = [
                    (d, d.correlation_of(payload)) for d in self._events[payload.message_type]
                ]
                targets = [(d, c) for d, c in correlated if c is not None]
            except Exception as exc:  # the saga's own correlate: no saga to stop
                log.exception("correlating %s %s failed", inbound.message_type, inbound.message_id)
                detail = f"correlating {inbound.message_type} raised {error_text(exc)}"
                self._spans.refusal(
                    delivery, raw.message_id, DeadLetterReason.HANDLER_ERROR, detail
                )
                return DeadLetter(DeadLetterReason.HANDLER_ERROR, detail)
            keys = [correlation for _, correlation in targets]
            if not targets:  # the end event of a saga no saga here started
                note = f"no saga here started the saga {inbound.message_type} is about"
                consumer = correlated[0][0].name
                await self._retrying(self._record, consumer, inbound, delivery, note)
                return Verdict.ACK
        else:
            detail = f"no saga here handles {inbound.message_type} ({payload.kind})"
            self._spans.refusal(delivery, raw.message_id, DeadLetterReason.UNKNOWN_TYPE, detail)
            return DeadLetter(DeadLetterReason.UNKNOWN_TYPE, detail)
        async with self._order.hold(keys):
            try:
                if not targets:
                    await self._retrying(self._on_reply, inbound, delivery)
                for definition, correlation in targets:
                    await self._retrying(
                        self._on_event, inbound, raw, definition, correlation, delivery
                    )
            except StoppingError:
                return Verdict.REQUEUE
            except DefinitionVersionError as exc:  # a newer coordinator started that saga
                log.warning("requeueing %s: %s", inbound.message_id, exc)
                return Verdict.REQUEUE
            except ConcurrencyConflictError:
                log.warning("message %s kept conflicting; requeueing it", inbound.message_id)
                return Verdict.REQUEUE
        await self.grant_locks()
        return Verdict.ACK

    async def fire(self, instance: SagaInstance) -> None:
        """Deliver a saga's due timer, exactly as a message would be.

        Raises ``TimerError`` when this process cannot fire it (a saga type it has no
        definition of), and lets what saga code raises through: the timer loop backs off.
        """
        timer = _timer_of(instance)
        if instance.pending_command_id is None:
            raise TimerError(f"saga {instance.saga_id} has a timer but awaits no command")
        try:
            definition = self._definition_of(instance)
        except DefinitionVersionError as exc:
            raise TimerError(str(exc)) from exc
        key = BySagaId(instance.saga_id)
        async with self._order.hold([instance.correlation_id]):  # after messages in hand
            await self._retrying(self._apply, definition, definition.name, timer, key, None)
        await self.grant_locks()

    async def give_up(self, instance: SagaInstance, reason: str) -> CommitResult:
        """Stop a saga whose timer kept failing: ``failed`` with ``reason``, in its history,
        and its end event sent, as for any saga that ends.

        The timer's own inbox id and the saga's version guard the write, so the timer cannot
        be both fired and given up on; CONFLICT or DUPLICATE means the saga moved on.
        """
        timer = _timer_of(instance)
        now = self._clock()
        failed = fail(instance, reason, now)
        ended = end_of(instance, failed, timer.message_id)
        send = () if ended is None else (ended,)
        decision = Decision(Outcome.FAILED, reason, failed, send)
        encoded = [self._encode(out, now) for out in send]
        # the inbox name fire() would use (see _apply), so only one of the two can commit
        change = self._change(instance.saga_type, timer, instance, decision, encoded, now, None)
        with bind_saga(instance.saga_id):
            committed = await self._store.commit(change)
            if committed.result is CommitResult.COMMITTED:
                self._relay.submit(committed.outbox)
                self._observe(decision, instance)
                self._locks.note(instance, decision.instance)
        if committed.result is CommitResult.COMMITTED:
            await self.grant_locks()
        return committed.result

    async def repair(self, request: RepairRequest) -> Repaired:
        """Apply an operator's repair to a saga, atomically and once per ``message_id``.

        Raises ``SagaNotFoundError``, ``RepairRefusedError`` (its state does not allow it,
        or this process has not its definition) or ``RepairInvalidError`` (say, a reply
        for ``skip`` its step's contract refuses); then nothing changed.
        """
        key = BySagaId(request.saga_id)
        consumer = self._operator_consumer
        started = time.time_ns()
        loaded = await self._store.load(consumer, request.message_id, key)
        first = Timed(loaded, started, time.time_ns())
        instance = loaded.instance
        if instance is None:
            raise SagaNotFoundError(f"no saga {request.saga_id}")
        if first.loaded.seen:
            return Repaired(instance, repeated=True, note="this action was applied before")
        try:
            definition = self._definition_of(instance)
        except DefinitionVersionError as exc:
            raise RepairRefusedError(str(exc)) from exc
        reply = None
        if request.repair is Repair.SKIP:
            reply = skip_reply(definition, instance, request.step, request.data, request.reply_type)
        action = OperatorAction(
            request.repair,
            request.saga_id,
            request.message_id,
            request.by,
            request.reason,
            request.step,
            reply,
        )
        async with self._order.hold([instance.correlation_id]):
            # the store down: the caller is told (503), not kept waiting while it heals
            decision = await self._apply(definition, consumer, action, key, None, first)
        await self.grant_locks()
        if decision is not None and decision.instance is not None:
            self._metrics.repaired(decision.instance.saga_type, str(request.repair))
        if decision is None or decision.instance is None:
            again = await self._store.load(consumer, request.message_id, key)
            assert again.instance is not None  # noqa: S101 - sagas are not deleted so soon
            return Repaired(again.instance, repeated=True, note="this action was applied before")
        return Repaired(decision.instance, repeated=False, note=decision.note)

    async def grant_locks(self) -> int:
        """Grant the lock keys this process's commits touched (``LockGrants.grant``)."""
        return await self._locks.grant()

    async def sweep_locks(self, limit: int = 200) -> int:
        """Grant what a crash left waiting, and tell who was granted (``LockGrants.sweep``)."""
        return await self._locks.sweep(limit)

    async def _tell(self, grant: LockGrant) -> int:
        """Deliver ``LocksGranted`` to a saga (1), unless it is no saga of this app's (0:
        its own coordinators' sweep tells it). The inbox knows it by its id: told once."""
        definition = self._definitions.get(grant.saga_type)
        if definition is None:
            return 0
        message = LocksGranted(grant.saga_id)
        key = BySagaId(grant.saga_id)
        try:
            async with self._order.hold([grant.correlation_id]):
                await self._retrying(self._apply, definition, definition.name, message, key, None)
        except DefinitionVersionError as exc:  # a newer coordinator started it: its sweep
            log.warning("saga %s not told of its locks here: %s", grant.saga_id, exc)
            return 0
        return 1

    async def _retrying(self, func: Any, *args: Any) -> None:
        # The store being down is not the message's fault: keep it in hand and retry,
        # rather than dead-lettering or burning through the queue's delivery limit. The
        # first try runs outside tenacity, which costs nothing when all is well.
        try:
            await func(*args)
            return
        except StoreUnavailableError as exc:
            log.warning("store unavailable, retrying: %s", exc)
        try:
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
        except StoreUnavailableError as exc:
            # Only the stop condition ends the retries on this error: stop() came while an
            # attempt was under way. The message goes back to the queue, not to bus.dead.
            raise StoppingError from exc

    async def _on_event(
        self,
        inbound: Inbound,
        raw: RawMessage,
        definition: SagaDefinition[Any, Any],
        correlation: str,
        delivery: Delivery,
    ) -> None:
        key = ByCorrelation(definition.name, correlation)
        first: Timed | None = await self._load(definition.name, inbound, key)
        assert first is not None  # noqa: S101 - for mypy: just loaded
        loaded = first.loaded
        starts = isinstance(inbound.payload, definition.start_types)
        newest = self._definitions[definition.name]
        if loaded.instance is None and starts and definition is not newest:
            # Only the newest version starts sagas; older ones finish what they started.
            note = (
                f"{inbound.message_type} starts {definition.name} only in version "
                f"{definition.version}; version {newest.version}, which starts new sagas, "
                "does not take it"
            )
            saga_id = saga_id_for(definition.name, correlation)  # its history tells why
            await self._record(definition.name, inbound, delivery, note, saga_id)
            return
        # A parent saga exists before its child's start event is even sent: an end event
        # that finds no saga is about another saga's child, and is not kept for later.
        ended = isinstance(inbound.payload, SagaEnded)
        if loaded.instance is None and not starts and not loaded.seen and not ended:
            await self._park.park(definition, correlation, inbound, raw)
            return
        if loaded.parked and not starts:
            # Events that arrived before the saga started come before this one.
            await self._park.unpark(definition, correlation)
            first = None
        await self._apply(definition, definition.name, inbound, key, delivery, first)
        if loaded.parked and starts:
            await self._park.unpark(definition, correlation)

    async def _apply_parked(
        self, definition: SagaDefinition[Any, Any], inbound: Inbound, parked: Parked
    ) -> None:
        key = ByCorrelation(parked.message.saga_type, parked.message.correlation_id)
        unparked = parked.parked_id
        await self._apply(definition, definition.name, inbound, key, None, unparked=unparked)

    async def sweep_parked(self, limit: int = 200) -> int:
        """Apply parked events whose saga exists by now, dead-letter expired ones; how many
        were handled (``ParkedEvents.sweep``)."""
        handled = await self._park.sweep(limit)
        await self.grant_locks()
        return handled

    async def _on_reply(self, inbound: Inbound, delivery: Delivery) -> None:
        if inbound.causation_id is not None:
            timed = await self._load(
                self._reply_consumer, inbound, ByPendingCommand(inbound.causation_id)
            )
            if timed.loaded.seen:
                self._metrics.duplicate("coordinator")
                return
            instance = timed.loaded.instance
            definition = self._definitions.get(instance.saga_type) if instance else None
            if instance is not None and definition is not None:  # _apply takes its version
                key = BySagaId(instance.saga_id)
                await self._apply(definition, self._reply_consumer, inbound, key, delivery, timed)
                return
        # No saga names it as pending: a parallel step's reply (a group awaits several), or
        # one nobody awaits, recorded in its saga's history. Sagas of several types may share
        # the correlation id (a parent and its child): the one whose step sent it comes first.
        if inbound.correlation_id is not None:
            found: tuple[SagaDefinition[Any, Any], ByCorrelation, Timed] | None = None
            for definition in self._replies.get(inbound.message_type, []):
                by_correlation = ByCorrelation(definition.name, inbound.correlation_id)
                timed = await self._load(self._reply_consumer, inbound, by_correlation)
                instance = timed.loaded.instance
                if instance is not None and _awaits(instance, inbound.causation_id):
                    found = (definition, by_correlation, timed)
                    break
                if instance is not None and found is None:
                    found = (definition, by_correlation, timed)
            if found is not None:
                definition, by_correlation, timed = found
                await self._apply(
                    definition, self._reply_consumer, inbound, by_correlation, delivery, timed
                )
                return
        await self._record(self._reply_consumer, inbound, delivery, "no saga awaits this reply")

    async def _load(self, consumer: str, message: EngineMessage, key: SagaKey) -> Timed:
        started = time.time_ns()
        loaded = await self._store.load(consumer, message.message_id, key, source_of(message))
        return Timed(loaded, started, time.time_ns())

    async def _apply(
        self,
        definition: SagaDefinition[Any, Any],
        consumer: str,
        message: EngineMessage,
        key: SagaKey,
        delivery: Delivery | None,
        first: Timed | None = None,
        *,
        unparked: int | None = None,
    ) -> Decision | None:
        """Decide and commit; on a version conflict, reload and decide again. The decision
        committed, or ``None`` when the message was applied before."""
        if first is None:
            first = await self._load(consumer, message, key)
        with self._spans.message(message, delivery, first) as span:
            loaded: Loaded | None = first.loaded
            before = first.loaded.instance
            for _ in range(MAX_CONFLICTS):
                if loaded is None:
                    with self._spans.db("load saga", "SELECT", before):
                        loaded = await self._store.load(
                            consumer, message.message_id, key, source_of(message)
                        )
                before = loaded.instance
                if before is not None:
                    definition = self._definition_of(before)
                if loaded.seen:
                    await self._duplicate(span, message, unparked)
                    return None
                now = self._clock()
                decision, encoded = self._decide(definition, before, message, now)
                after = decision.instance
                saga = after or before
                if span.is_recording():
                    if after is not None and before is None:
                        after = after.model_copy(update={"trace_context": carrier_of(span)})
                        decision = dataclasses.replace(decision, instance=after)
                    # The step this message was about: the one awaited before it, if any.
                    span.set_attributes(saga_attributes(saga, current_step(before)))
                    if loaded is first.loaded:  # it ran before its span opened: record it now
                        self._spans.past_load(span, first, saga)
                    if after is not None and after.phase is Phase.COMPENSATION:
                        span.set_attribute("saga.compensation", True)
                with bind_saga(saga.saga_id) if saga else nullcontext():
                    change = self._change(
                        consumer, message, before, decision, encoded, now, unparked
                    )
                    with self._spans.db("commit saga", "WITH", saga):
                        committed = await self._store.commit(change)
                    if committed.result is CommitResult.COMMITTED:
                        self._relay.submit(committed.outbox)
                        self._observe(decision, before)
                        self._locks.note(before, decision.instance)
                        if span.is_recording():
                            span.set_attribute("saga.outcome", str(decision.outcome))
                        return decision
                if committed.result is CommitResult.DUPLICATE:
                    await self._duplicate(span, message, unparked)
                    return None
                loaded = None
            raise ConcurrencyConflictError(f"saga for {message.message_id} kept changing")

    def _decide(
        self,
        definition: SagaDefinition[Any, Any],
        before: SagaInstance | None,
        message: EngineMessage,
        now: datetime,
    ) -> tuple[Decision, list[OutboxMessage]]:
        """``decide``, with the commands it sends encoded; a command over the size limit
        fails its step at once (``CommandRefused``), and the saga decides again."""
        decision = decide(definition, before, message, now)
        notes = [decision.note]
        for _ in range(2 * len(definition.all_steps()) + 1):  # each refusal moves the saga on
            encoded = [self._encode(out, now) for out in decision.send]
            oversized = [
                (out, len(m.body))
                for out, m in zip(decision.send, encoded, strict=True)
                if len(m.body) > self._max_bytes
            ]
            if not oversized or decision.instance is None:
                break
            out, size = oversized[0]
            reason = (
                f"{out.payload.message_type} would be {size} bytes, "
                f"over the limit of {self._max_bytes}"
            )
            refused = CommandRefused(
                decision.instance.saga_id, out.message_id, reason, message.message_id
            )
            log.warning("saga %s: %s", decision.instance.saga_id, reason)
            following = decide(definition, decision.instance, refused, now)
            notes.append(following.note)
            # What else the decision sends still goes (the other steps of a parallel group);
            # a refusal that concerns no step in flight leaves the saga as it was.
            kept = tuple(o for o in decision.send if o.message_id != out.message_id)
            decision = dataclasses.replace(
                following,
                outcome=decision.outcome,
                note="; ".join(notes),
                instance=following.instance or decision.instance,
                send=(*kept, *following.send),
                error=decision.error or following.error,
            )
        return decision, encoded

    def _encode(self, out: Outgoing, now: datetime) -> OutboxMessage:
        return encode_outgoing(out, topology=self._topology, source=self._source, now=now)

    async def _duplicate(self, span: Span, message: EngineMessage, unparked: int | None) -> None:
        log.debug("duplicate %s %s ignored", message.message_type, message.message_id)
        span.set_attribute("saga.outcome", "duplicate")
        self._metrics.duplicate("coordinator")
        if unparked is not None:  # applied before, its park entry left behind: drop it
            await self._store.unpark(unparked)

    async def _record(
        self,
        consumer: str,
        inbound: Inbound,
        delivery: Delivery,
        note: str,
        saga_id: str | None = None,
    ) -> None:
        now = self._clock()
        entry = entry_in(inbound, "ignored", note, now)
        with self._spans.ignored(delivery, inbound), self._spans.db("commit saga", "WITH"):
            traced = current_trace_id() if self._spans.enabled else None
            change = Change(
                consumer,
                inbound.message_id,
                saga_id,
                None,
                None,
                (entry,),
                source=inbound.source,
                trace_id=traced,
            )
            committed = await self._store.commit(change)
        if committed.result is CommitResult.DUPLICATE:
            self._metrics.duplicate("coordinator")
        log.info("%s %s ignored: %s", inbound.message_type, inbound.message_id, note)

    def _change(
        self,
        consumer: str,
        message: EngineMessage,
        before: SagaInstance | None,
        decision: Decision,
        encoded: Sequence[OutboxMessage],
        now: datetime,
        unparked: int | None,
    ) -> Change:
        after = decision.instance
        history = [entry_in(message, decision.outcome, decision.note, now)]
        outbox = []
        for out, message_out in zip(decision.send, encoded, strict=True):
            outbox.append(
                for_saga(
                    message_out,
                    after,
                    compensation=out.compensates is not None,
                    traced=self._spans.enabled,
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
                    payload=out.payload.model_dump(mode="json", context=REDACT_SECRETS),
                    at=now,
                )
            )
        saga_id = after.saga_id if after else before.saga_id if before else None
        return Change(
            consumer=consumer,
            message_id=message.message_id,
            saga_id=saga_id,
            instance=after,
            expected_version=before.version if before is not None and after is not None else None,
            history=tuple(history),
            outbox=tuple(outbox),
            source=source_of(message),
            unparked=unparked,
            trace_id=current_trace_id() if self._spans.enabled else None,
        )

    def _observe(self, decision: Decision, before: SagaInstance | None) -> None:
        """Metrics and logs for what a committed decision changed."""
        after = decision.instance
        if decision.error is not None:
            log.error("saga code raised: %s", decision.note, exc_info=decision.error)
        if after is None:
            log.info("ignored: %s", decision.note)
            return
        metrics = self._metrics
        if before is None:
            metrics.saga_started(after.saga_type)
        if before is None or before.status is not after.status:
            if after.status.terminal:
                metrics.saga_finished(after.saga_type, str(after.status))
            log.info(
                "saga %s %s is %s: %s",
                after.saga_type,
                after.correlation_id,
                after.status,
                decision.note,
            )
        else:
            log.debug("saga %s: %s", after.saga_id, decision.note)
        old_steps = before.steps if before is not None else ()
        for index, step in enumerate(after.steps):
            was = old_steps[index].status if index < len(old_steps) else None
            if step.status in FINISHED_STEP and was is not step.status and step.finished_at:
                seconds = (step.finished_at - step.started_at).total_seconds()
                metrics.step_finished(after.saga_type, step.name, str(step.status), seconds)
        if after.status is SagaStatus.SUSPENDED and (
            before is None or before.status is not after.status
        ):
            metrics.saga_suspended(after.saga_type)
        if after.status in (SagaStatus.FAILED, SagaStatus.SUSPENDED) and (
            before is None or before.status is not after.status
        ):
            log.error(
                "saga %s is %s, an operator must look: %s",
                after.saga_id,
                after.status,
                after.failure,
            )


def _with_lifecycle(
    registry: ContractRegistry, definitions: Sequence[SagaDefinition[Any, Any]]
) -> ContractRegistry:
    """``registry`` and the engine's own events of ``definitions`` (their end events and
    cancel requests), which are always known. A copy: the caller's registry, often a
    module's constant, stays as it was given."""
    models = [contract.model for contract in registry]
    for definition in definitions:
        models.extend(
            model
            for model in definition.message_models()
            if issubclass(model, SagaEnded | CancelRequested) and model.message_type not in registry
        )
    return ContractRegistry(models)


def _add_newest(
    definitions: list[SagaDefinition[Any, Any]], definition: SagaDefinition[Any, Any]
) -> None:
    """Append ``definition`` unless a version of its saga is there (given newest first)."""
    if all(d.name != definition.name for d in definitions):
        definitions.append(definition)


def _awaits(instance: SagaInstance, command_id: str | None) -> bool:
    """Whether one of the saga's steps in flight awaits an answer to ``command_id``."""
    return any(
        r.command_id == command_id and r.status is StepStatus.RUNNING for r in instance.steps
    )


def _timer_of(instance: SagaInstance) -> TimerFired:
    if instance.deadline is None:
        raise TimerError(f"saga {instance.saga_id} has no timer armed")
    return TimerFired(instance.saga_id, instance.pending_command_id or "", instance.deadline)
