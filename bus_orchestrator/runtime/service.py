"""The coordinator process: wires store, broker, coordinator, relay and timers together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aio_pika.abc import AbstractRobustConnection

from bus_orchestrator.config import Settings
from bus_orchestrator.core.definition import SagaDefinition
from bus_orchestrator.core.messages import ContractRegistry
from bus_orchestrator.ports import Clock
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.runtime.housekeeping import Housekeeping
from bus_orchestrator.runtime.parking import ParkSweeper
from bus_orchestrator.runtime.relay import OutboxRelay
from bus_orchestrator.runtime.timers import TimerLoop, TimerPolicy
from bus_orchestrator.store.migrate import require_migrated
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.transport.consumer import QueueConsumer
from bus_orchestrator.transport.publisher import AmqpPublisher, DeadLetterer
from bus_orchestrator.transport.topology import Topology, connect

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class CoordinatorService:
    """One coordinator process. Several may run against the same queue and database."""

    def __init__(
        self,
        settings: Settings,
        definitions: Sequence[SagaDefinition[Any, Any]],
        registry: ContractRegistry,
        *,
        clock: Clock = utc_now,
        pool: asyncpg.Pool | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.topology = Topology(settings.exchange_prefix, settings.delivery_limit)
        self._definitions = definitions
        self._registry = registry
        self._clock = clock
        self._telemetry = telemetry or Telemetry.disabled()
        self._pool = pool
        self._owns_pool = pool is None
        self._connection: AbstractRobustConnection | None = None
        self._consumer: QueueConsumer | None = None
        self.store: PostgresSagaStore | None = None
        self.relay: OutboxRelay | None = None
        self.coordinator: Coordinator | None = None
        self.timers: TimerLoop | None = None
        self._housekeeping: Housekeeping | None = None
        self.park: ParkSweeper | None = None

    async def start(self) -> None:
        settings = self.settings
        if self._pool is None:
            self._pool = await create_pool(settings)
        await require_migrated(self._pool, settings.database_schema)
        lease = timedelta(seconds=settings.outbox_lease_seconds)
        self.store = PostgresSagaStore(self._pool, lease)
        self._connection = await connect(settings.amqp_url)
        publish_channel = await self._connection.channel(publisher_confirms=True)
        consume_channel = await self._connection.channel()
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        await self.topology.declare_exchanges(publish_channel)
        publisher = AmqpPublisher(publish_channel)
        self.relay = OutboxRelay(
            self.store,
            publisher,
            lease=lease,
            sweep_interval=settings.outbox_sweep_seconds,
            telemetry=self._telemetry,
        )
        self.coordinator = Coordinator(
            self._definitions,
            self._registry,
            self.store,
            self.relay,
            self.topology,
            self._clock,
            source=settings.source,
            max_message_bytes=settings.max_message_bytes,
            park_ttl=timedelta(seconds=settings.park_ttl_seconds),
            telemetry=self._telemetry,
        )
        queue = await self.topology.declare_work_queue(
            consume_channel, self.topology.queue("coordinator"), self.coordinator.bindings()
        )
        self.relay.start()
        self.timers = TimerLoop(
            self.store, self.coordinator, self._clock, TimerPolicy.from_settings(settings)
        )
        self.timers.start()
        self._housekeeping = Housekeeping(
            self.store,
            self.store,
            inbox_retention=timedelta(seconds=settings.inbox_retention_seconds),
            outbox_retention=timedelta(seconds=settings.outbox_retention_seconds),
            saga_retention=timedelta(seconds=settings.saga_retention_seconds),
            interval=settings.housekeeping_seconds,
        )
        self._housekeeping.start()
        self.park = ParkSweeper(self.coordinator.sweep_parked, settings.park_sweep_seconds)
        self.park.start()
        self._consumer = QueueConsumer(
            queue,
            self.coordinator.handle,
            DeadLetterer(publisher, self.topology, "coordinator"),
            name="coordinator",
            metrics=self._telemetry.metrics,
        )
        await self._consumer.start()
        log.info(
            "coordinator running: %s on %s",
            ", ".join(d.name for d in self._definitions),
            self.topology.queue("coordinator"),
        )

    async def stop(self, grace: float = 30.0) -> None:
        """Finish the messages in hand and publish what they committed, then close."""
        if self.coordinator is not None:
            self.coordinator.stop()
        if self._consumer is not None:
            await self._consumer.stop(grace)
        if self.timers is not None:
            await self.timers.stop()
        if self.park is not None:
            await self.park.stop()
        if self._housekeeping is not None:
            await self._housekeeping.stop()
        if self.relay is not None:
            await self.relay.stop(grace)
        if self._connection is not None:
            await self._connection.close()
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
        log.info("coordinator stopped")


async def run_coordinator(
    settings: Settings,
    definitions: Sequence[SagaDefinition[Any, Any]],
    registry: ContractRegistry,
    stop: asyncio.Event,
    telemetry: Telemetry | None = None,
) -> None:
    """Run until ``stop`` is set, then shut down cleanly."""
    service = CoordinatorService(settings, definitions, registry, telemetry=telemetry)
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()
