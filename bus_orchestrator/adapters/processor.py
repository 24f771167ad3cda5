"""Running an adapter: one command delivery in, one confirmed reply out, exactly one effect.

For each delivery ``CommandProcessor.handle``:

1. decodes the CloudEvent (bad input is dead-lettered with the codec's reason);
2. in one statement, claims the command id in the command log (a compensating command,
   which names the command it undoes in CloudEvents ``compensates``, lays a tombstone on
   that command's id instead) and looks up the reply stored for the command. If there is
   one, it re-publishes it (same id, same bytes) and acknowledges, without calling the
   handler. If a tombstone stands on the command's id, the command is refused: its
   declared failure reply (``refuse=``) goes through steps 4-5, the handler never runs.
   If the command a compensation undoes is under way, the compensation waits (held, with
   backoff, not requeued) until that command's outcome is recorded;
3. otherwise calls the handler, retrying ``TransientAdapterError`` under the adapter's
   ``RetryPolicy``;
4. records the encoded reply, first writer wins (a concurrent delivery of the same command
   that recorded first has its reply published instead), settling the claim;
5. publishes the reply with a broker confirm, and only then acknowledges.

A crash between any two steps is safe: the broker redelivers, and either the log answers
(after 4) or the handler runs again with the same idempotency key (before 4), taking over
the claim, which outlives the crash so that a compensation keeps waiting for it. Two copies
of one command handled at once may both reach the handler (hence the idempotency key), but
only one reply is recorded, and both copies publish that one. A command and its
compensation handled at once are ordered by the claim: either the compensation finds the
claim and waits for the outcome, or the command finds the tombstone and is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from bus_orchestrator.adapters.adapter import Adapter, CommandContext
from bus_orchestrator.adapters.command_log import (
    Admission,
    CommandLog,
    CommandRecord,
    Standing,
)
from bus_orchestrator.core.decide import Inbound
from bus_orchestrator.core.messages import Command, Reply
from bus_orchestrator.core.state import ID_NAMESPACE
from bus_orchestrator.errors import (
    BusOrchestratorError,
    DeadLetterReason,
    InvalidMessageError,
    PermanentAdapterError,
    TransientAdapterError,
)
from bus_orchestrator.ports import Clock, OutboxMessage, Publisher
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.telemetry.tracing import (
    SAGA_HEADERS,
    extract,
    messaging_attributes,
    record_error,
    saga_attributes_from_headers,
    send_traced,
)
from bus_orchestrator.transport.codec import RawMessage, decode, encode
from bus_orchestrator.transport.consumer import DeadLetter, Verdict

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


MAX_STORE_BACKOFF = 5.0


def reply_id_for(command_id: str) -> str:
    """The id of the reply to a command: derived, so every answer to it has the same id."""
    return str(uuid.uuid5(ID_NAMESPACE, f"reply:{command_id}"))


def saga_headers_of(headers: Mapping[str, Any]) -> dict[str, Any]:
    """The ``x-saga-*`` headers of a command, which its reply carries back."""
    return {k: v for k, v in headers.items() if k in SAGA_HEADERS}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CommandProcessor:
    """An ``Adapter`` bound to its command log and publisher; ``handle`` is the consumer's.

    When the log or the broker is unavailable, a delivery is held and processed again after
    ``store_backoff`` seconds, doubling up to ``MAX_STORE_BACKOFF``, until it goes through or
    ``stop()`` is called (then it is requeued). ``sleep`` serves those waits and the retry
    waits (tests pass a recorder).
    """

    def __init__(
        self,
        adapter: Adapter,
        command_log: CommandLog,
        publisher: Publisher,
        *,
        replies_exchange: str,
        max_message_bytes: int,
        clock: Clock = _utc_now,
        store_backoff: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.adapter = adapter
        self._log = command_log
        self._publisher = publisher
        self._replies = replies_exchange
        self._max_bytes = max_message_bytes
        self._clock = clock
        self._store_backoff = store_backoff
        self._sleep = sleep
        self._stopping = False
        self._telemetry = telemetry or Telemetry.disabled()
        self._tracer = self._telemetry.tracer
        self._consumer_name = f"adapter.{adapter.name}"

    async def handle(self, raw: RawMessage) -> Verdict | DeadLetter:
        """Process one delivery; the verdict says how the consumer settles it."""
        headers = raw.headers
        attributes: dict[str, str | bool] = {
            **messaging_attributes(
                "process", raw.exchange, raw.routing_key, raw.message_id, raw.correlation_id
            ),
            **saga_attributes_from_headers(headers),
            "adapter.name": self.adapter.name,
        }
        with self._tracer.start_as_current_span(
            f"process {raw.exchange}", extract(headers), SpanKind.CONSUMER, attributes
        ) as span:
            verdict = await self._handle(raw)
            if isinstance(verdict, DeadLetter):
                record_error(span, str(verdict.reason), verdict.detail)
            elif verdict is Verdict.REQUEUE:
                span.set_attribute("adapter.requeued", True)
            return verdict

    async def _handle(self, raw: RawMessage) -> Verdict | DeadLetter:
        try:
            inbound = decode(raw, self.adapter.registry, self._max_bytes)
        except InvalidMessageError as exc:
            return DeadLetter(exc.reason, exc.detail)
        command = inbound.payload
        if not isinstance(command, Command) or not self.adapter.handles_type(command.message_type):
            return DeadLetter(
                DeadLetterReason.UNKNOWN_TYPE,
                f"adapter {self.adapter.name!r} has no handler for {inbound.message_type!r}",
            )
        # An outage of the command log or the broker is not the command's fault: hold it
        # and try again (every step is idempotent), rather than requeue it and spend the
        # queue's delivery limit, which would dead-letter it after a long enough outage.
        backoff = self._store_backoff
        while True:
            try:
                return await self._process(inbound, command, raw.headers)
            except BusOrchestratorError as exc:
                if not exc.retryable:
                    raise
                if self._stopping:
                    return Verdict.REQUEUE
                log.warning(
                    "adapter %s: holding command %s through an outage: %s",
                    self.adapter.name,
                    inbound.message_id,
                    exc,
                )
            await self._sleep(backoff)
            backoff = min(backoff * 2, MAX_STORE_BACKOFF)
            if self._stopping:
                return Verdict.REQUEUE

    def stop(self) -> None:
        """Stop holding commands through an outage: they go back to the queue."""
        self._stopping = True

    async def _process(
        self, inbound: Inbound, command: Command, headers: Mapping[str, Any]
    ) -> Verdict | DeadLetter:
        name = self.adapter.name
        ctx = CommandContext(
            adapter=name,
            command_id=inbound.message_id,
            command_type=command.message_type,
            correlation_id=inbound.correlation_id,
            causation_id=inbound.causation_id,
            received_at=self._clock(),
            compensates=inbound.compensates,
        )
        admission = await self._admit(ctx)
        if admission is None:
            return Verdict.REQUEUE  # stopped while waiting for the command it compensates
        trace.get_current_span().set_attribute("adapter.standing", str(admission.standing))
        if admission.reply is not None:
            log.info("adapter %s: command %s seen before; replying again", name, ctx.command_id)
            self._telemetry.metrics.duplicate(self._consumer_name)
            await self._send(admission.reply, headers)
            return Verdict.ACK
        if admission.standing is Standing.COMPENSATED:
            return await self._refuse(command, ctx, admission.compensated_by, headers)
        with self._tracer.start_as_current_span(
            f"{name} {command.message_type}",
            kind=SpanKind.CLIENT,
            attributes={
                "adapter.name": name,
                "adapter.command_type": command.message_type,
                **saga_attributes_from_headers(headers),
            },
        ) as call_span:
            outcome = await self._call_claimed(command, ctx)
            if isinstance(outcome, DeadLetter):
                record_error(call_span, str(outcome.reason), outcome.detail)
            elif isinstance(outcome, Reply):
                call_span.set_attribute("adapter.reply_type", outcome.message_type)
        if isinstance(outcome, DeadLetter) and ctx.compensates is None:
            # Its compensation, if one comes, need not wait for an outcome that never will.
            await self._log.release(ctx.command_id)
        if not isinstance(outcome, Reply):
            return outcome
        return await self._reply(outcome, ctx, headers, refusal=False)

    async def _call_claimed(
        self, command: Command, ctx: CommandContext
    ) -> Reply | Verdict | DeadLetter:
        """``_call``, renewing the command's claim while the call lasts (a compensation of
        it keeps waiting for a live call, however long it takes)."""
        if ctx.compensates is not None:
            return await self._call(command, ctx)
        renewal = asyncio.create_task(self._renew_claim(ctx.command_id))
        try:
            return await self._call(command, ctx)
        finally:
            renewal.cancel()
            await asyncio.gather(renewal, return_exceptions=True)

    async def _renew_claim(self, command_id: str) -> None:
        lease = self.adapter.claim_lease
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                if not await self._log.renew(command_id, lease):
                    log.error(
                        "adapter %s: the claim of command %s lapsed during its call and was "
                        "compensated meanwhile; what it does may not be undone",
                        self.adapter.name,
                        command_id,
                    )
                    return
            except BusOrchestratorError as exc:
                log.warning(
                    "adapter %s: could not renew the claim of %s: %s",
                    self.adapter.name,
                    command_id,
                    exc,
                )

    async def _admit(self, ctx: CommandContext) -> Admission | None:
        """Claim a command's id, or tombstone the one a compensation undoes.

        A compensation whose command is under way is held here, asking again with backoff,
        until that command's outcome is recorded (or its claim lapses): it then undoes what
        was done. ``None`` when ``stop()`` came meanwhile.
        """
        name = self.adapter.name
        if ctx.compensates is None:
            return await self._log.claim(name, ctx.command_id, self.adapter.claim_lease)
        backoff, waited = self._store_backoff, False
        while True:
            admission = await self._log.tombstone(name, ctx.command_id, ctx.compensates)
            if admission.reply is not None:
                return admission
            standing = admission.standing
            if standing is not Standing.FORWARD_UNDER_WAY:
                break
            if not waited:
                log.info(
                    "adapter %s: compensation %s waits for command %s, which is under way",
                    name,
                    ctx.command_id,
                    ctx.compensates,
                )
                waited = True
            if self._stopping:
                return None
            await self._sleep(backoff)
            backoff = min(backoff * 2, MAX_STORE_BACKOFF)
            if self._stopping:
                return None
        if standing is Standing.FORWARD_UNSEEN:
            log.info(
                "adapter %s: compensation %s came before command %s, which will be refused",
                name,
                ctx.command_id,
                ctx.compensates,
            )
        elif standing is Standing.FORWARD_LAPSED:
            log.warning(
                "adapter %s: command %s was claimed but no outcome came within its lease; "
                "compensation %s goes ahead, and the command will be refused",
                name,
                ctx.compensates,
                ctx.command_id,
            )
        elif waited:
            log.info(
                "adapter %s: command %s settled; compensation %s goes ahead",
                name,
                ctx.compensates,
                ctx.command_id,
            )
        return admission

    async def _refuse(
        self,
        command: Command,
        ctx: CommandContext,
        compensated_by: str | None,
        headers: Mapping[str, Any],
    ) -> Verdict | DeadLetter:
        """Answer a command whose compensation came first, without calling the handler."""
        name = self.adapter.name
        reason = f"compensated before it arrived (by command {compensated_by})"
        trace.get_current_span().set_attribute("adapter.refused", True)
        if not self.adapter.refuses_with_reply(command.message_type):
            log.warning(
                "adapter %s: refusing command %s (%s): %s; no refusal reply is declared "
                "(refuse=), so none is sent",
                name,
                ctx.command_id,
                command.message_type,
                reason,
            )
            return Verdict.ACK
        try:
            refusal = self.adapter.refusal(command, reason)
        except Exception as exc:  # a bug in the adapter's refuse function
            log.warning("adapter %s: refuse failed on %s: %r", name, ctx.command_id, exc)
            return DeadLetter(DeadLetterReason.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
        log.warning(
            "adapter %s: refusing command %s (%s) with %s: %s",
            name,
            ctx.command_id,
            command.message_type,
            refusal.message_type,
            reason,
        )
        return await self._reply(refusal, ctx, headers, refusal=True)

    async def _reply(
        self, outcome: Reply, ctx: CommandContext, headers: Mapping[str, Any], *, refusal: bool
    ) -> Verdict:
        """Record the reply to a command (first writer wins), publish it, then acknowledge."""
        name = self.adapter.name
        reply = encode(
            message_id=reply_id_for(ctx.command_id),
            payload=outcome,
            exchange=self._replies,
            source=self.adapter.source,
            time=self._clock(),
            correlation_id=ctx.correlation_id,
            causation_id=ctx.command_id,
        )
        recorded = await self._log.record(
            CommandRecord(name, ctx.command_id, ctx.command_type, ctx.correlation_id, reply)
        )
        if not recorded.inserted:
            log.info("adapter %s: command %s was recorded concurrently", name, ctx.command_id)
        elif recorded.tombstoned and not refusal:
            log.error(
                "adapter %s: command %s lost its claim during its call (no renewal within "
                "%s) and was compensated meanwhile; what it did may not be undone",
                name,
                ctx.command_id,
                self.adapter.claim_lease,
            )
        await self._send(recorded.reply, headers)
        return Verdict.ACK

    async def _send(self, reply: OutboxMessage, command_headers: Mapping[str, Any]) -> None:
        """Publish a reply under a PRODUCER span; it carries the command's saga headers."""
        headers = {**reply.headers, **saga_headers_of(command_headers)}
        await send_traced(
            self._tracer, self._publisher, dataclasses.replace(reply, headers=headers)
        )

    async def _call(self, command: Command, ctx: CommandContext) -> Reply | Verdict | DeadLetter:
        policy = self.adapter.retry
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientAdapterError),
            stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.max_total),
            wait=wait_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff)
            + wait_random(0, policy.jitter),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            return await retrying(self.adapter.call, command, ctx)
        except TransientAdapterError as exc:
            log.warning(
                "adapter %s: %s still failing after retries; requeueing: %s",
                ctx.adapter,
                ctx.command_id,
                exc,
            )
            return Verdict.REQUEUE
        except Exception as exc:  # PermanentAdapterError, or a bug in the handler
            log.warning(
                "adapter %s: handler failed on %s: %r",
                ctx.adapter,
                ctx.command_id,
                exc,
                exc_info=not isinstance(exc, PermanentAdapterError),
            )
            return DeadLetter(DeadLetterReason.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        trace.get_current_span().add_event(
            "retry", {"attempt": state.attempt_number, "error.type": type(error).__qualname__}
        )
        log.info(
            "adapter %s: attempt %d failed (%s); retrying",
            self.adapter.name,
            state.attempt_number,
            error,
        )
