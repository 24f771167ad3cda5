"""An in-memory broker with the engine's exchanges, for tests and the embedded demo.

It routes as the real topology does (``transport.topology``): ``bus.events``,
``bus.commands`` and ``bus.replies`` are topic exchanges keyed by message type whose
alternate exchange is ``bus.unroutable``; ``bus.dead`` keeps what a consumer refused, with
the reason; ``bus.lifecycle`` keeps the sagas' end events, bound as on the broker. Queues
are bound by ``(exchange, routing key)`` like AMQP bindings, and every consumer returns the
same explicit verdict a ``transport.consumer.QueueConsumer`` settles: ack, requeue (up to
the delivery limit, then dead-lettered with reason ``delivery-limit``), or dead-letter with
a reason. An exception escaping a consumer is dead-lettered with reason ``handler-error``,
as on the broker.

Nothing runs by itself: ``deliver_next`` hands the oldest message to its queue's consumer,
so a test decides when work happens and the order is always the order of publishing.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bus_orchestrator.errors import DeadLetterReason
from bus_orchestrator.ports import Clock, OutboxMessage
from bus_orchestrator.transport.codec import RawMessage
from bus_orchestrator.transport.consumer import DeadLetter, Handler, Verdict
from bus_orchestrator.transport.topology import Topology

log = logging.getLogger(__name__)


def raw_message(message: OutboxMessage, delivery_count: int = 0) -> RawMessage:
    """An encoded message as a consumer receives it from ``message.exchange``."""
    headers: dict[str, object] = dict(message.headers)
    if delivery_count:
        headers["x-delivery-count"] = delivery_count
    return RawMessage(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.message_type,
        exchange=message.exchange,
        routing_key=message.routing_key,
    )


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one dot-separated word, ``#`` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and p[0] in ("*", k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """A message a consumer refused (or ``bus.dead`` received), with the reason."""

    message: OutboxMessage
    reason: str
    detail: str
    by: str
    """The queue whose consumer refused it (``coordinator``, ``adapter.payments``, ...)."""

    @property
    def message_type(self) -> str:
        return self.message.message_type


@dataclass(slots=True)
class _Queue:
    name: str
    handler: Handler
    bindings: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Delivery:
    queue: str
    message: OutboxMessage
    delivery_count: int = 0


class InMemoryBus:
    """A ``ports.Publisher`` that routes to in-process consumers, one delivery at a time.

    ``published`` holds every message published, in order; ``dead_letters`` what reached
    ``bus.dead``; ``unroutable`` what no queue was bound to receive; ``lifecycle`` what
    reached ``bus.lifecycle`` (every saga's end event; nothing consumes it).
    """

    def __init__(
        self,
        topology: Topology | None = None,
        *,
        delivery_limit: int = 20,
        clock: Clock | None = None,
    ) -> None:
        self.topology = topology or Topology()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.delivery_limit = delivery_limit
        self.published: list[OutboxMessage] = []
        self.dead_letters: list[DeadLettered] = []
        self.unroutable: list[OutboxMessage] = []
        self.lifecycle: list[OutboxMessage] = []
        self._lifecycle_bindings = self.topology.lifecycle_queue().bindings
        self._queues: dict[str, _Queue] = {}
        self._ready: deque[_Delivery] = deque()

    def consume(self, queue: str, handler: Handler) -> None:
        """Declare ``queue`` (if new) with ``handler`` as its consumer."""
        if queue in self._queues:
            self._queues[queue].handler = handler
        else:
            self._queues[queue] = _Queue(queue, handler)

    def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        self._queues[queue].bindings.add((exchange, routing_key))

    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        self._queues[queue].bindings.discard((exchange, routing_key))

    def bound(self, exchange: str, routing_key: str) -> list[str]:
        """The queues a message published with this routing key would reach."""
        return [
            q.name
            for q in self._queues.values()
            if any(e == exchange and topic_matches(p, routing_key) for e, p in q.bindings)
        ]

    async def publish(self, message: OutboxMessage) -> None:
        """Route a message; it is confirmed at once (there is no broker to lose it)."""
        self.published.append(message)
        topology = self.topology
        if message.exchange == topology.dead:
            headers = message.headers
            self.dead_letters.append(
                DeadLettered(
                    message,
                    headers.get("x-dead-reason", ""),
                    headers.get("x-dead-detail", ""),
                    headers.get("x-dead-by", ""),
                )
            )
            return
        if message.exchange == topology.unroutable:
            self.unroutable.append(message)
            return
        queues = self.bound(message.exchange, message.routing_key)
        kept = any(
            exchange == message.exchange and topic_matches(pattern, message.routing_key)
            for exchange, pattern in self._lifecycle_bindings
        )
        if kept:
            self.lifecycle.append(message)
        if not queues and not kept:
            log.info("unroutable: %s on %s", message.message_type, message.exchange)
            self.unroutable.append(message)
            return
        self._ready.extend(_Delivery(q, message) for q in queues)

    @property
    def pending(self) -> int:
        """Deliveries waiting for their consumer."""
        return len(self._ready)

    async def deliver_next(self) -> bool:
        """Hand the oldest waiting delivery to its consumer and settle it by the verdict.

        Returns ``False`` when nothing was waiting.
        """
        if not self._ready:
            return False
        delivery = self._ready.popleft()
        queue = self._queues[delivery.queue]
        raw = raw_message(delivery.message, delivery.delivery_count)
        verdict: Verdict | DeadLetter
        if delivery.delivery_count >= self.delivery_limit:
            verdict = DeadLetter(
                DeadLetterReason.DELIVERY_LIMIT,
                f"delivered {delivery.delivery_count} times before without being settled; "
                f"the queue allows {self.delivery_limit}",
            )
        else:
            try:
                verdict = await queue.handler(raw)
            except Exception as exc:
                log.exception("handler of %s failed on %s", queue.name, raw.message_id)
                verdict = DeadLetter(DeadLetterReason.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")
        if isinstance(verdict, DeadLetter):
            self.dead_letters.append(
                DeadLettered(delivery.message, str(verdict.reason), verdict.detail, queue.name)
            )
            self.published.append(self._dead_letter(delivery.message, verdict, queue.name))
        elif verdict is Verdict.REQUEUE:
            self._ready.append(
                _Delivery(delivery.queue, delivery.message, delivery.delivery_count + 1)
            )
        return True

    def _dead_letter(self, message: OutboxMessage, verdict: DeadLetter, by: str) -> OutboxMessage:
        return OutboxMessage(
            message_id=message.message_id,
            message_type=message.message_type,
            exchange=self.topology.dead,
            routing_key=message.routing_key,
            body=message.body,
            content_type=message.content_type,
            headers={
                **message.headers,
                "x-dead-reason": str(verdict.reason),
                "x-dead-detail": verdict.detail,
                "x-dead-by": by,
                "x-dead-at": self._clock().isoformat(),
                "x-original-exchange": message.exchange,
                "x-original-routing-key": message.routing_key,
            },
            correlation_id=message.correlation_id,
        )
