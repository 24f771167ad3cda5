"""Running adapters against the broker and Postgres until told to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from bus_orchestrator.adapters.adapter import Adapter
from bus_orchestrator.adapters.postgres import PostgresCommandLog
from bus_orchestrator.adapters.processor import CommandProcessor
from bus_orchestrator.adapters.retention import CommandLogRetention
from bus_orchestrator.config import Settings
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.store.migrate import require_migrated
from bus_orchestrator.store.postgres import create_pool
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.transport.consumer import QueueConsumer
from bus_orchestrator.transport.publisher import AmqpPublisher, DeadLetterer
from bus_orchestrator.transport.topology import Topology, connect

log = logging.getLogger(__name__)


def work_queue_name(adapter: Adapter) -> str:
    """The queue an adapter consumes, before the prefix: ``adapter.<name>``."""
    return f"adapter.{adapter.name}"


async def run_adapters(
    settings: Settings,
    adapters: Sequence[Adapter],
    stop: asyncio.Event,
    pool: asyncpg.Pool | None = None,
    *,
    grace: float = 30.0,
    telemetry: Telemetry | None = None,
) -> None:
    """Consume each adapter's work queue until ``stop`` is set, then shut down gracefully.

    Declares the shared exchanges and one quorum work queue per adapter, bound to the
    command types it handles. On stop, consumers are cancelled and deliveries in hand get
    up to ``grace`` seconds to finish; any left unsettled go back to the queue when the
    connection closes. ``pool`` (with ``search_path`` set to the schema) is created, and
    closed, here when not given. Meanwhile the command log is purged of rows older than
    ``settings.command_log_retention_seconds``, every ``settings.housekeeping_seconds``.
    """
    names = [adapter.name for adapter in adapters]
    if len(set(names)) != len(names):
        raise DefinitionError(f"adapter names must be unique: {names}")
    own_pool = pool is None
    db = await create_pool(settings) if pool is None else pool
    retention = CommandLogRetention(
        PostgresCommandLog(db),
        retention=timedelta(seconds=settings.command_log_retention_seconds),
        interval=settings.housekeeping_seconds,
    )
    try:
        await require_migrated(db, settings.database_schema)
        retention.start()
        connection = await connect(settings.amqp_url)
        consumers: list[QueueConsumer] = []
        processors: list[CommandProcessor] = []
        try:
            topology = Topology(settings.exchange_prefix, settings.delivery_limit)
            # Publishing waits for confirms; consuming runs on a channel of its own, so a
            # publish that closes its channel does not take the deliveries in hand with it.
            publish_channel = await connection.channel(publisher_confirms=True)
            consume_channel = await connection.channel()
            await consume_channel.set_qos(prefetch_count=settings.prefetch)
            await topology.declare_exchanges(publish_channel)
            publisher = AmqpPublisher(publish_channel)
            command_log = PostgresCommandLog(db)
            for adapter in adapters:
                queue_name = work_queue_name(adapter)
                queue = await topology.declare_work_queue(
                    consume_channel,
                    topology.queue(queue_name),
                    [(topology.commands, command_type) for command_type in adapter.command_types],
                )
                processor = CommandProcessor(
                    adapter,
                    command_log,
                    publisher,
                    replies_exchange=topology.replies,
                    max_message_bytes=settings.max_message_bytes,
                    telemetry=telemetry,
                )
                processors.append(processor)
                consumer = QueueConsumer(
                    queue,
                    processor.handle,
                    DeadLetterer(publisher, topology, queue_name),
                    name=queue_name,
                    metrics=(telemetry or Telemetry.disabled()).metrics,
                )
                await consumer.start()
                consumers.append(consumer)
                log.info("adapter %s consuming %s", adapter.name, queue.name)
            await stop.wait()
        finally:
            for processor in processors:
                processor.stop()  # commands held through an outage go back to the queue
            await asyncio.gather(*(consumer.stop(grace) for consumer in consumers))
            await connection.close()
    finally:
        await retention.stop()
        if own_pool:
            await db.close()
