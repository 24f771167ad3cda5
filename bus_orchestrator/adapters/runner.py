"""Running adapters against the broker and Postgres until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg
from aio_pika.abc import AbstractQueue

from bus_orchestrator.adapters.adapter import Adapter
from bus_orchestrator.adapters.postgres import PostgresCommandLog
from bus_orchestrator.adapters.processor import CommandProcessor
from bus_orchestrator.adapters.retention import CommandLogRetention
from bus_orchestrator.config import Settings
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.startup import until_started
from bus_orchestrator.store.migrate import ADAPTER_MIGRATIONS, require_migrated
from bus_orchestrator.store.postgres import create_pool
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.transport.connections import BrokerConnections
from bus_orchestrator.transport.consumer import QueueConsumer
from bus_orchestrator.transport.publisher import AmqpPublisher, DeadLetterer
from bus_orchestrator.transport.topology import Topology

log = logging.getLogger(__name__)


def work_queue_name(adapter: Adapter, app: str | None = None) -> str:
    """The queue an adapter of ``app`` consumes, before the prefix: ``<app>.adapter.<name>``
    (``adapter.<name>`` without an app)."""
    return f"adapter.{adapter.name}" if app is None else f"{app}.adapter.{adapter.name}"


@dataclass
class _Opened:
    """What start-up opened: the pool, the broker connections, the declared work queues."""

    db: asyncpg.Pool | None = None
    connections: BrokerConnections | None = None
    publisher: AmqpPublisher | None = None
    queues: list[AbstractQueue] = field(default_factory=list)


async def run_adapters(
    settings: Settings,
    adapters: Sequence[Adapter],
    stop: asyncio.Event,
    pool: asyncpg.Pool | None = None,
    *,
    grace: float = 30.0,
    telemetry: Telemetry | None = None,
    connections: BrokerConnections | None = None,
    app: str | None = None,
) -> None:
    """Consume each adapter's work queue until ``stop`` is set, then shut down gracefully.

    Declares the shared exchanges and one quorum work queue per adapter of ``app``
    (``bus.<app>.adapter.<name>``), bound to the command types it handles. While Postgres
    or RabbitMQ cannot be reached at start-up, it waits for them (one log line per
    attempt) until ``stop`` is set. On stop, consumers are cancelled and deliveries in hand
    get up to ``grace`` seconds to finish; any left unsettled go back to the queue when the
    connection closes. ``pool`` (with ``search_path`` set to the schema) and
    ``connections`` are opened, and closed, here when not given: the pool on the adapters'
    own database (``settings.adapters_database_url`` and ``_schema``, by default the
    orchestrator's), which needs only the command log's tables. Meanwhile the command log
    is purged of rows older than ``settings.command_log_retention_seconds``, every
    ``settings.housekeeping_seconds``.
    """
    names = [adapter.name for adapter in adapters]
    if len(set(names)) != len(names):
        raise DefinitionError(f"adapter names must be unique: {names}")
    topology = Topology(settings.exchange_prefix, settings.delivery_limit)
    opened = _Opened()

    async def open_all() -> None:
        log_settings = settings.for_adapters()
        opened.db = pool if pool is not None else await create_pool(log_settings)
        await require_migrated(opened.db, log_settings.database_schema, only=ADAPTER_MIGRATIONS)
        opened.connections = connections or await BrokerConnections.open(
            settings.amqp_url, "adapters"
        )
        # Publishing and consuming are on connections of their own: a publish the broker
        # refuses (it closes the whole connection) does not take the deliveries in hand.
        publish_channel = await opened.connections.publish.channel(publisher_confirms=True)
        consume_channel = await opened.connections.consume.channel()
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        await topology.declare_exchanges(publish_channel)
        opened.publisher = AmqpPublisher(publish_channel)
        for adapter in adapters:
            opened.queues.append(
                await topology.declare_work_queue(
                    consume_channel,
                    topology.queue(work_queue_name(adapter, app)),
                    [(topology.commands, command_type) for command_type in adapter.command_types],
                )
            )

    async def close_all() -> None:
        if opened.connections is not None and connections is None:
            with contextlib.suppress(Exception):
                await opened.connections.close()
        if opened.db is not None and pool is None:
            with contextlib.suppress(Exception):
                await opened.db.close()
        opened.db, opened.connections, opened.publisher, opened.queues = None, None, None, []

    if not await until_started(open_all, close_all, settings=settings.for_adapters(), stop=stop):
        return
    assert opened.db is not None and opened.connections is not None  # noqa: S101
    assert opened.publisher is not None  # noqa: S101
    consumers: list[QueueConsumer] = []
    processors: list[CommandProcessor] = []
    command_log = PostgresCommandLog(opened.db)
    retention = CommandLogRetention(
        command_log,
        retention=timedelta(seconds=settings.command_log_retention_seconds),
        interval=settings.housekeeping_seconds,
    )
    retention.start()
    try:
        for adapter, queue in zip(adapters, opened.queues, strict=True):
            queue_name = work_queue_name(adapter, app)
            processor = CommandProcessor(
                adapter,
                command_log,
                opened.publisher,
                replies_exchange=topology.replies,
                max_message_bytes=settings.max_message_bytes,
                telemetry=telemetry,
            )
            processors.append(processor)
            consumer = QueueConsumer(
                queue,
                processor.handle,
                DeadLetterer(
                    opened.publisher,
                    topology,
                    queue_name,
                    frame_max=opened.connections.frame_max(),
                ),
                name=queue_name,
                metrics=(telemetry or Telemetry.disabled()).metrics,
                delivery_limit=topology.delivery_limit,
            )
            await consumer.start()
            consumers.append(consumer)
            log.info("adapter %s consuming %s", adapter.name, queue.name)
        await stop.wait()
    finally:
        for processor in processors:
            processor.stop()  # commands held through an outage go back to the queue
        await asyncio.gather(*(consumer.stop(grace) for consumer in consumers))
        await retention.stop()
        await close_all()
