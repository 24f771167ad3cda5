"""Publishing a business event from outside a saga (the CLI, the demo, scripts)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry.trace import NoOpTracer, Tracer

from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Message
from bus_orchestrator.runtime.outgoing import encode_message
from bus_orchestrator.telemetry.tracing import send_traced
from bus_orchestrator.transport.publisher import AmqpPublisher
from bus_orchestrator.transport.topology import Topology, connect


@dataclass(frozen=True, slots=True)
class Publication:
    message_id: str
    payload: Message
    correlation_id: str | None = None


class EventPublisher:
    """Encodes messages as CloudEvents and publishes them, confirmed, to their exchange.

    Each publish is a PRODUCER span ``send <exchange>``: with tracing on, the saga the
    event starts joins this trace.
    """

    def __init__(
        self,
        publisher: AmqpPublisher,
        topology: Topology,
        source: str,
        tracer: Tracer | None = None,
    ) -> None:
        self._publisher = publisher
        self._topology = topology
        self._source = source
        self._tracer = tracer or NoOpTracer()

    async def publish(self, publication: Publication) -> None:
        payload = publication.payload
        message = encode_message(
            payload,
            message_id=publication.message_id,
            topology=self._topology,
            source=self._source,
            now=datetime.now(UTC),
            correlation_id=publication.correlation_id,
        )
        await send_traced(self._tracer, self._publisher, message)


@asynccontextmanager
async def event_publisher(
    settings: Settings, source: str, tracer: Tracer | None = None
) -> AsyncIterator[EventPublisher]:
    """A publisher on its own connection, with the exchanges declared."""
    connection = await connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        topology = Topology(settings.exchange_prefix, settings.delivery_limit)
        await topology.declare_exchanges(channel)
        yield EventPublisher(AmqpPublisher(channel), topology, source, tracer)
    finally:
        await connection.close()


async def publish_once(
    settings: Settings,
    payload: Message,
    message_id: str,
    source: str,
    correlation_id: str | None = None,
    tracer: Tracer | None = None,
) -> None:
    publication = Publication(message_id, payload, correlation_id)
    await publish_all(settings, [publication], source, tracer)


async def publish_all(
    settings: Settings,
    publications: Sequence[Publication],
    source: str,
    tracer: Tracer | None = None,
) -> None:
    async with event_publisher(settings, source, tracer) as publisher:
        for publication in publications:
            await publisher.publish(publication)
