"""``SagaHarness``: an app's sagas on the in-memory bus and store, driven by the test.

What runs is what runs in production: the ``Coordinator`` over the ``InMemorySagaStore``,
the app's adapters through the adapter kit's ``CommandProcessor`` (with an
``InMemoryCommandLog``), the ``TimerLoop``'s ``tick``, the park and lock sweeps, every
message encoded and decoded by the real codec. Only the broker, the database and the wall
clock are replaced, by ``InMemoryBus``, the in-memory store and a ``ManualClock``; nothing
runs in the background, so a test says when work happens::

    harness = SagaHarness(app)
    harness.reply(ChargePayment, lambda cmd: PaymentDeclined(order_id=cmd.order_id, reason="no"))
    await harness.publish(order_placed)
    await harness.run_until_idle()          # deliver, hand over the outbox, fire due timers
    assert (await harness.saga("o-1")).status is SagaStatus.COMPENSATED
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bus_orchestrator.adapters.adapter import Adapter
from bus_orchestrator.adapters.command_log import InMemoryCommandLog
from bus_orchestrator.adapters.processor import CommandProcessor, reply_id_for, saga_headers_of
from bus_orchestrator.adapters.runner import work_queue_name
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.lifecycle import SagaEnded
from bus_orchestrator.core.messages import Command, Message, Reply
from bus_orchestrator.core.repair import Repair, Repaired, RepairRequest
from bus_orchestrator.core.state import ID_NAMESPACE, SagaInstance, StepStatus, saga_id_for
from bus_orchestrator.errors import DeadLetterReason, DefinitionError, InvalidMessageError
from bus_orchestrator.ports import HistoryEntry, OutboxMessage, PendingPublish
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.runtime.timers import TimerLoop, TimerPolicy
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.testing.bus import DeadLettered, InMemoryBus, raw_message
from bus_orchestrator.testing.clock import DEFAULT_START, ManualClock
from bus_orchestrator.transport.codec import RawMessage, decode, encode
from bus_orchestrator.transport.consumer import DeadLetter, Verdict
from bus_orchestrator.transport.topology import Topology

C = TypeVar("C", bound=Command)

Script = Callable[[C], Reply | None]
"""Answers a command: the reply to send back, or ``None`` to leave it unanswered."""

TEST_SOURCE = "urn:bus-orchestrator:test"
SCRIPT_SOURCE = "urn:bus-orchestrator:test:scripted"
MAX_STEPS = 10_000


class HarnessError(AssertionError):
    """What a test asked of the harness does not hold (no such saga, never idle, ...).

    An ``AssertionError``: it is a failed expectation of the test, not an engine error.
    """


@dataclass(frozen=True, slots=True)
class SentCommand:
    """A command as it went out on ``bus.commands``, decoded again."""

    payload: Command
    message_id: str
    correlation_id: str | None
    causation_id: str | None
    compensates: str | None
    """For a compensating command, the id of the command it undoes."""
    compensation: bool
    """Whether its saga was compensating when it was sent (``x-saga-compensation``)."""

    @property
    def message_type(self) -> str:
        return self.payload.message_type


class _HandOff:
    """The relay's fast path, without its tasks: committed rows wait for the next drain."""

    def __init__(self) -> None:
        self.rows: list[PendingPublish] = []

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        self.rows.extend(rows)


async def _no_wait(_seconds: float) -> None:
    """Adapter retries and backoffs need no real wait here; yield, nothing more."""
    await asyncio.sleep(0)


class SagaHarness:
    """Runs ``app``'s sagas (and, with ``adapters=True``, its adapters) in memory.

    Pass a ``store`` to inject faults (a subclass of ``InMemorySagaStore``), ``settings``
    for the limits and timer policy (``Settings()`` by default), ``start`` for the clock.
    """

    def __init__(
        self,
        app: App,
        *,
        adapters: bool = True,
        settings: Settings | None = None,
        start: datetime = DEFAULT_START,
        store: InMemorySagaStore | None = None,
    ) -> None:
        self.app = app
        self.settings = settings or Settings()
        self.clock = ManualClock(start)
        self.topology = Topology(self.settings.exchange_prefix, self.settings.delivery_limit)
        self.bus = InMemoryBus(
            self.topology, delivery_limit=self.settings.delivery_limit, clock=self.clock
        )
        self.store = store or InMemorySagaStore(
            outbox_lease=timedelta(seconds=self.settings.outbox_lease_seconds), clock=self.clock
        )
        self.command_log = InMemoryCommandLog(clock=self.clock)
        self._relay = _HandOff()
        self.coordinator = Coordinator(
            app.sagas,
            app.registry,
            self.store,
            self._relay,
            self.topology,
            self.clock,
            source=self.settings.source,
            max_message_bytes=self.settings.max_message_bytes,
            park_ttl=timedelta(seconds=self.settings.park_ttl_seconds),
            app=app.name,
        )
        self._timers = TimerLoop(
            self.store,
            self.coordinator,
            self.clock,
            TimerPolicy.from_settings(self.settings),
            sleep=_no_wait,
        )
        coordinator_queue = self.topology.queue("coordinator")
        self.bus.consume(coordinator_queue, self.coordinator.handle)
        for exchange, routing_key in self.coordinator.bindings():
            self.bus.bind(coordinator_queue, exchange, routing_key)
        self._adapter_queues: dict[str, str] = {}
        for adapter in app.adapters if adapters else ():
            self._add_adapter(adapter)
        self._scripts: dict[str, Script[Any]] = {}
        self._scripted_queue = self.topology.queue("scripted")
        self.bus.consume(self._scripted_queue, self._scripted)
        self._published = 0

    def _add_adapter(self, adapter: Adapter) -> None:
        processor = CommandProcessor(
            adapter,
            self.command_log,
            self.bus,
            replies_exchange=self.topology.replies,
            max_message_bytes=self.settings.max_message_bytes,
            clock=self.clock,
            sleep=_no_wait,
        )
        queue = self.topology.queue(work_queue_name(adapter))
        self.bus.consume(queue, processor.handle)
        for command_type in adapter.command_types:
            self.bus.bind(queue, self.topology.commands, command_type)
            self._adapter_queues[command_type] = queue

    # -- steering -----------------------------------------------------------------------

    def reply(self, command: type[C], script: Script[C] | None = None) -> None:
        """Answer commands of type ``command`` with ``script`` instead of the app's adapter.

        ``script(command)`` returns the reply to send back, or ``None`` to leave that command
        unanswered (as does leaving out ``script``): its step then times out.
        """
        message_type = command.message_type
        contract = self.app.registry.get(message_type)
        if contract is None or contract.model is not command:
            raise DefinitionError(f"app {self.app.name!r} does not know {message_type!r}")
        self._scripts[message_type] = script or (lambda _: None)
        queue = self._adapter_queues.pop(message_type, None)
        if queue is not None:
            self.bus.unbind(queue, self.topology.commands, message_type)
        self.bus.bind(self._scripted_queue, self.topology.commands, message_type)

    def message(
        self,
        payload: Message,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        message_id: str | None = None,
        source: str = TEST_SOURCE,
    ) -> OutboxMessage:
        """``payload`` encoded by the codec for its exchange, as a client would send it.

        The message id is ``message_id``, or derived from a counter (runs are repeatable).
        ``bus.raw_message`` turns it into the delivery a consumer's ``handle`` takes.
        """
        self._published += 1
        return encode(
            message_id=message_id or str(uuid.uuid5(ID_NAMESPACE, f"test:{self._published}")),
            payload=payload,
            exchange=self.topology.exchange_for(payload.kind),
            source=source,
            time=self.clock(),
            correlation_id=correlation_id,
            causation_id=causation_id,
        )

    async def publish(
        self,
        payload: Message,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        message_id: str | None = None,
        source: str = TEST_SOURCE,
    ) -> str:
        """Publish an event (or a reply, or a command) to its exchange; the next
        ``run_until_idle`` delivers it. Returns its message id."""
        encoded = self.message(
            payload,
            correlation_id=correlation_id,
            causation_id=causation_id,
            message_id=message_id,
            source=source,
        )
        await self.bus.publish(encoded)
        return encoded.message_id

    async def answer(self, command: SentCommand, reply: Reply) -> str:
        """Publish ``reply`` to a command sent earlier, as its adapter would (same reply id
        for every answer to one command). For a command left unanswered by ``reply()``."""
        return await self.publish(
            reply,
            correlation_id=command.correlation_id,
            causation_id=command.message_id,
            message_id=reply_id_for(command.message_id),
            source=SCRIPT_SOURCE,
        )

    async def repair(
        self,
        repair: Repair,
        correlation_id: str,
        *,
        reason: str = "repaired in a test",
        saga_type: str | None = None,
        step: str | None = None,
        data: Mapping[str, Any] | None = None,
        reply_type: str | None = None,
        by: str = "tester",
    ) -> Repaired:
        """An operator's repair of the saga, as ``POST /sagas/{id}/<repair>`` applies it
        (``RepairRefusedError`` or ``RepairInvalidError`` when it cannot); what it sends
        goes out with the next ``run_until_idle``."""
        saga = await self.saga(correlation_id, saga_type)
        self._published += 1
        request = RepairRequest(
            repair,
            saga.saga_id,
            f"repair-{self._published}",
            by,
            reason,
            step,
            data,
            reply_type,
        )
        return await self.coordinator.repair(request)

    async def run_until_idle(self) -> None:
        """Do all the work there is at the current time: publish the committed outbox,
        deliver every message, fire due timers, apply or expire parked events, grant
        entity lock keys a failure left ungranted (the coordinator grants as it commits).

        Raises ``HarnessError`` if that never ends (a message requeued forever, say).
        """
        for _ in range(MAX_STEPS):
            if self._relay.rows:
                rows, self._relay.rows = self._relay.rows, []
                for row in rows:
                    await self.bus.publish(row.message)
                await self.store.mark_sent([row.outbox_id for row in rows])
            elif not (
                await self.bus.deliver_next()
                or await self._timers.tick()
                or await self.coordinator.sweep_parked()
                or await self.coordinator.sweep_locks()
            ):
                return
        raise HarnessError(f"still busy after {MAX_STEPS} steps: is something looping?")

    async def advance(self, delta: timedelta) -> None:
        """Let ``delta`` of time pass: each saga deadline within it fires at its time, in
        order, with all the work it causes; parked events past their time expire."""
        await self.run_until_idle()
        target = self.clock.now + delta
        while (due := await self._next_deadline(target)) is not None:
            self.clock.advance(due - self.clock.now)
            await self.run_until_idle()
        self.clock.advance(target - self.clock.now)
        await self.run_until_idle()

    async def _next_deadline(self, until: datetime) -> datetime | None:
        deadlines = [
            s.deadline
            for s in await self.store.list_sagas(limit=1_000_000)
            if s.deadline is not None and self.clock.now < s.deadline <= until
        ]
        return min(deadlines, default=None)

    # -- what happened --------------------------------------------------------------------

    @property
    def commands(self) -> list[SentCommand]:
        """Every command sent on ``bus.commands``, in order (a resend appears again)."""
        sent = []
        for message in self.bus.published:
            if message.exchange != self.topology.commands:
                continue
            try:
                inbound = decode(
                    raw_message(message), self.app.registry, self.settings.max_message_bytes
                )
            except InvalidMessageError as exc:
                raise HarnessError(
                    f"a command sent is not readable with the app's contracts ({exc}): "
                    "declare it with Step(sends=...) or App(contracts=...)"
                ) from exc
            assert isinstance(inbound.payload, Command)  # noqa: S101 - on bus.commands
            sent.append(
                SentCommand(
                    inbound.payload,
                    inbound.message_id,
                    inbound.correlation_id,
                    inbound.causation_id,
                    inbound.compensates,
                    message.headers.get("x-saga-compensation") == "true",
                )
            )
        return sent

    def command_types(self) -> list[str]:
        """The types of ``commands``, in order."""
        return [c.message_type for c in self.commands]

    @property
    def dead_letters(self) -> list[DeadLettered]:
        """What reached ``bus.dead``, with the reason and the consumer that refused it."""
        return list(self.bus.dead_letters)

    @property
    def unroutable(self) -> list[Message | bytes]:
        """What no queue was bound to receive, decoded when the app knows its type."""
        found: list[Message | bytes] = []
        for message in self.bus.unroutable:
            try:
                raw = raw_message(message)
                found.append(
                    decode(raw, self.app.registry, self.settings.max_message_bytes).payload
                )
            except InvalidMessageError:
                found.append(message.body)
        return found

    def ended(self, correlation_id: str | None = None) -> list[SagaEnded]:
        """The end events sagas published (``saga.<type>.<status>.v1``, as ``bus.lifecycle``
        received them), in order; only those of ``correlation_id`` when given."""
        found: list[SagaEnded] = []
        for message in self.bus.lifecycle:
            payload = decode(
                raw_message(message), self.app.registry, self.settings.max_message_bytes
            ).payload
            assert isinstance(payload, SagaEnded)  # noqa: S101 - bus.lifecycle's bindings
            if correlation_id is None or payload.correlation_id == correlation_id:
                found.append(payload)
        return found

    async def saga(self, correlation_id: str, saga_type: str | None = None) -> SagaInstance:
        """The one saga with this correlation (or saga) id; ``HarnessError`` otherwise."""
        found = [
            s
            for s in await self.store.find(correlation_id)
            if saga_type is None or s.saga_type == saga_type
        ]
        if len(found) != 1:
            raise HarnessError(f"{len(found)} sagas for {correlation_id!r}, not one")
        return found[0]

    async def steps(
        self, correlation_id: str, saga_type: str | None = None
    ) -> dict[str, StepStatus]:
        """The saga's steps begun so far and their states, in order."""
        saga = await self.saga(correlation_id, saga_type)
        return {step.name: step.status for step in saga.steps}

    async def history(
        self, correlation_id: str, saga_type: str | None = None
    ) -> list[HistoryEntry]:
        """The saga's audit log, oldest first, even if the saga never started (its events
        parked and expired); ``saga_type`` is needed then when the app has several sagas."""
        found = [
            s
            for s in await self.store.find(correlation_id)
            if saga_type is None or s.saga_type == saga_type
        ]
        if len(found) == 1:
            return await self.store.history(found[0].saga_id)
        types = [saga_type] if saga_type else sorted({s.name for s in self.app.sagas})
        if len(found) > 1 or len(types) != 1:
            raise HarnessError(f"name the saga type of {correlation_id!r}")
        return await self.store.history(saga_id_for(types[0], correlation_id))

    # -- the scripted consumer --------------------------------------------------------------

    async def _scripted(self, raw: RawMessage) -> Verdict | DeadLetter:
        try:
            inbound = decode(raw, self.app.registry, self.settings.max_message_bytes)
        except InvalidMessageError as exc:
            return DeadLetter(exc.reason, exc.detail)
        script = self._scripts.get(inbound.message_type)
        if script is None:
            detail = f"no script answers {inbound.message_type!r}"
            return DeadLetter(DeadLetterReason.UNKNOWN_TYPE, detail)
        answer = script(inbound.payload)
        if answer is None:
            return Verdict.ACK
        reply = encode(
            message_id=reply_id_for(inbound.message_id),
            payload=answer,
            exchange=self.topology.replies,
            source=SCRIPT_SOURCE,
            time=self.clock(),
            correlation_id=inbound.correlation_id,
            causation_id=inbound.message_id,
        )
        headers = {**reply.headers, **saga_headers_of(raw.headers)}
        await self.bus.publish(dataclasses.replace(reply, headers=headers))
        return Verdict.ACK
