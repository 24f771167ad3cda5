"""Exchange and queue names, and their idempotent declaration.

Every name takes the configured prefix, so tests and tenants never see each other's
messages. Exchanges:

- ``bus.events``   (topic) business events, routing key = event type
- ``bus.commands`` (topic) commands to adapters, routing key = command type
- ``bus.replies``  (topic) adapter replies, routing key = reply type
- ``bus.dead``     (fanout) bad input and poison messages, with the reason in headers
- ``bus.unroutable`` (fanout) alternate exchange of commands and replies nobody is bound to
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue, ExchangeType
from pamqp.common import FieldTable

from bus_orchestrator.core.messages import EXCHANGES, MessageKind
from bus_orchestrator.errors import BrokerUnavailableError


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str = ""
    delivery_limit: int = 20

    @property
    def events(self) -> str:
        return self.prefix + EXCHANGES[MessageKind.EVENT]

    @property
    def commands(self) -> str:
        return self.prefix + EXCHANGES[MessageKind.COMMAND]

    @property
    def replies(self) -> str:
        return self.prefix + EXCHANGES[MessageKind.REPLY]

    @property
    def dead(self) -> str:
        return f"{self.prefix}bus.dead"

    @property
    def unroutable(self) -> str:
        return f"{self.prefix}bus.unroutable"

    def exchange_for(self, kind: MessageKind) -> str:
        return {
            MessageKind.EVENT: self.events,
            MessageKind.COMMAND: self.commands,
            MessageKind.REPLY: self.replies,
        }[kind]

    def queue(self, name: str) -> str:
        return f"{self.prefix}bus.{name}"

    async def declare_exchanges(self, channel: AbstractChannel) -> None:
        """Declare the shared exchanges and the dead-letter queues (idempotent)."""
        await channel.declare_exchange(self.dead, ExchangeType.FANOUT, durable=True)
        await channel.declare_exchange(self.unroutable, ExchangeType.FANOUT, durable=True)
        await channel.declare_exchange(self.events, ExchangeType.TOPIC, durable=True)
        alternate: FieldTable = {"alternate-exchange": self.unroutable}
        await channel.declare_exchange(
            self.commands, ExchangeType.TOPIC, arguments=alternate, durable=True
        )
        await channel.declare_exchange(
            self.replies, ExchangeType.TOPIC, arguments=alternate, durable=True
        )
        for name, exchange in ((self.dead, self.dead), (self.unroutable, self.unroutable)):
            queue = await channel.declare_queue(
                name, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind(exchange, routing_key="")

    async def declare_work_queue(
        self,
        channel: AbstractChannel,
        name: str,
        bindings: Iterable[tuple[str, str]],
    ) -> AbstractQueue:
        """A durable quorum queue bound to ``(exchange, routing_key)`` pairs.

        A message redelivered ``delivery_limit`` times (a poison message that kills its
        consumer) is dead-lettered to ``bus.dead`` at least once, never dropped.
        """
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": self.dead,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        for exchange, routing_key in bindings:
            await queue.bind(exchange, routing_key=routing_key)
        return queue

    async def delete(self, channel: AbstractChannel, queues: Iterable[str] = ()) -> None:
        """Remove this prefix's exchanges and the given queues (used by tests and teardown)."""
        for name in (*queues, self.dead, self.unroutable):
            await channel.queue_delete(name)
        for name in (self.events, self.commands, self.replies, self.dead, self.unroutable):
            await channel.exchange_delete(name)


async def connect(url: str) -> aio_pika.abc.AbstractRobustConnection:
    """A connection that reconnects, and re-declares its queues and consumers, by itself.

    Raises ``BrokerUnavailableError`` when the first connection cannot be made.
    """
    try:
        return await aio_pika.connect_robust(url)
    except (OSError, ConnectionError, TimeoutError) as exc:
        raise BrokerUnavailableError(f"RabbitMQ is not reachable: {exc}") from exc
