"""Consuming a queue with explicit outcomes: ack, requeue, or dead-letter with a reason.

Handlers return a verdict rather than raising special exceptions. An exception that escapes
a handler is a bug in a saga or adapter: the message is dead-lettered with the error as its
reason, and the consumer keeps going.

A quorum queue counts the deliveries of a message that were not settled (requeued, or in
hand when their consumer died) in ``x-delivery-count``, and past its delivery limit moves
the message to ``bus.dead`` itself, without a reason of ours. So on the last delivery the
queue allows, the consumer dead-letters the message with the reason ``delivery-limit``
instead of handing it to the handler once more; the broker's own dead-lettering stays as
the backstop should that fail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, ConsumerTag

from bus_orchestrator.errors import BrokerUnavailableError, DeadLetterReason
from bus_orchestrator.telemetry.metrics import Metrics
from bus_orchestrator.transport.codec import RawMessage
from bus_orchestrator.transport.publisher import DeadLetterer

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    ACK = "ack"
    REQUEUE = "requeue"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Dead-letter the message with this reason, then acknowledge it."""

    reason: DeadLetterReason
    detail: str


Handler = Callable[[RawMessage], Awaitable[Verdict | DeadLetter]]


def raw_message(message: AbstractIncomingMessage) -> RawMessage:
    return RawMessage(
        body=message.body,
        headers=dict(message.headers or {}),
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        exchange=message.exchange or "",
        routing_key=message.routing_key or "",
    )


def delivery_count(headers: Mapping[str, Any]) -> int:
    """How many earlier deliveries of this message were not settled (quorum queues)."""
    count = headers.get("x-delivery-count")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


class QueueConsumer:
    """Runs ``handler`` for each delivery of ``queue`` and settles the delivery after it."""

    def __init__(
        self,
        queue: AbstractQueue,
        handler: Handler,
        dead_letterer: DeadLetterer,
        *,
        name: str = "",
        metrics: Metrics | None = None,
        delivery_limit: int | None = None,
    ) -> None:
        self._queue = queue
        self._delivery_limit = delivery_limit
        self._name = name or queue.name
        self._metrics = metrics or Metrics.disabled()
        self._handler = handler
        self._dead_letterer = dead_letterer
        self._tag: ConsumerTag | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking deliveries and let the ones in hand finish (up to ``grace`` seconds).

        Deliveries not settled by then are returned to the queue by the broker when the
        channel closes, so none is lost.
        """
        if self._tag is not None:
            tag, self._tag = self._tag, None
            try:
                await self._queue.cancel(tag)
            except Exception:  # the channel may already be gone; the broker requeues
                log.warning("could not cancel consumer %s", tag, exc_info=True)
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning("%d deliveries still in hand after %.0fs", len(self._inflight), grace)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - aio-pika runs each callback in its own task
        self._inflight.add(task)
        self._idle.clear()
        try:
            await self._settle(message)
        finally:
            self._inflight.discard(task)
            if not self._inflight:
                self._idle.set()

    def _past_limit(self, raw: RawMessage) -> DeadLetter | None:
        """A dead letter if this is the last delivery the queue allows, else ``None``."""
        if self._delivery_limit is None:
            return None
        count = delivery_count(raw.headers)
        if count < self._delivery_limit:
            return None
        return DeadLetter(
            DeadLetterReason.DELIVERY_LIMIT,
            f"delivered {count} times before without being settled (requeued, or its "
            f"consumer stopped or died); the queue allows {self._delivery_limit}",
        )

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        raw = raw_message(message)
        verdict: Verdict | DeadLetter | None = self._past_limit(raw)
        if verdict is None:
            try:
                verdict = await self._handler(raw)
            except Exception as exc:
                log.exception("handler failed on message %s (%s)", raw.message_id, raw.routing_key)
                verdict = DeadLetter(DeadLetterReason.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
        try:
            if isinstance(verdict, DeadLetter):
                log.warning(
                    "dead-lettering message %s from %s/%s: %s: %s",
                    raw.message_id,
                    raw.exchange,
                    raw.routing_key,
                    verdict.reason,
                    verdict.detail,
                )
                try:
                    await self._dead_letterer.dead_letter(raw, verdict.reason, verdict.detail)
                except BrokerUnavailableError:
                    log.exception("could not dead-letter %s; requeueing it", raw.message_id)
                    await message.nack(requeue=True)
                    return
                await message.ack()
                self._metrics.dead_lettered(self._name, str(verdict.reason))
            elif verdict is Verdict.ACK:
                await message.ack()
            else:
                await message.nack(requeue=True)
        except Exception:
            # The channel broke under us: the broker redelivers, the inbox deduplicates.
            log.warning("could not settle message %s", raw.message_id, exc_info=True)
