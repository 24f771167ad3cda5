"""Publishing a business event from outside a saga (the CLI, the demo, scripts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Message
from bus_orchestrator.runtime.service import connect_broker
from bus_orchestrator.transport.codec import encode
from bus_orchestrator.transport.publisher import AmqpPublisher
from bus_orchestrator.transport.topology import Topology


@dataclass(frozen=True, slots=True)
class Publication:
    message_id: str
    payload: Message
    correlation_id: str | None = None


class EventPublisher:
    """Encodes messages as CloudEvents and publishes them, confirmed, to their exchange."""

    def __init__(self, publisher: AmqpPublisher, topology: Topology, source: str) -> None:
        self._publisher = publisher
        self._topology = topology
        self._source = source

    async def publish(self, publication: Publication) -> None:
        payload = publication.payload
        await self._publisher.publish(
            encode(
                message_id=publication.message_id,
                payload=payload,
                exchange=self._topology.exchange_for(payload.kind),
                source=self._source,
                time=datetime.now(UTC),
                correlation_id=publication.correlation_id,
            )
        )


@asynccontextmanager
async def event_publisher(settings: Settings, source: str) -> AsyncIterator[EventPublisher]:
    """A publisher on its own connection, with the exchanges declared."""
    connection = await connect_broker(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        topology = Topology(settings.exchange_prefix, settings.delivery_limit)
        await topology.declare_exchanges(channel)
        yield EventPublisher(AmqpPublisher(channel), topology, source)
    finally:
        await connection.close()


async def publish_once(
    settings: Settings,
    payload: Message,
    message_id: str,
    source: str,
    correlation_id: str | None = None,
) -> None:
    await publish_all(settings, [Publication(message_id, payload, correlation_id)], source)


async def publish_all(settings: Settings, publications: Sequence[Publication], source: str) -> None:
    async with event_publisher(settings, source) as publisher:
        for publication in publications:
            await publisher.publish(publication)
