"""The coordinator process: wires store, broker, coordinator, relay and timers together.

It consumes and publishes on two connections (``transport.connections``), so a publish the
broker refuses cannot take the deliveries in hand with it. Given a ``stop`` event,
``start`` waits for Postgres and RabbitMQ while they are unreachable (``startup``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aio_pika.abc import AbstractQueue

from bus_orchestrator.config import Settings
from bus_orchestrator.core.definition import SagaDefinition
from bus_orchestrator.core.messages import ContractRegistry, MessageKind
from bus_orchestrator.core.schedule import Schedule
from bus_orchestrator.errors import DefinitionVersionError
from bus_orchestrator.periodic import Periodic
from bus_orchestrator.ports import Clock
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.runtime.housekeeping import Housekeeping
from bus_orchestrator.runtime.relay import OutboxRelay
from bus_orchestrator.runtime.schedules import ScheduleRunner
from bus_orchestrator.runtime.timers import TimerLoop, TimerPolicy
from bus_orchestrator.startup import until_started
from bus_orchestrator.store.migrate import require_migrated
from bus_orchestrator.store.postgres import (
    PostgresSagaStore,
    RunningVersion,
    create_pool,
    register_app,
    running_versions,
)
from bus_orchestrator.store.schedules import PostgresScheduleStore
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.transport.connections import BrokerConnections
from bus_orchestrator.transport.consumer import QueueConsumer
from bus_orchestrator.transport.publisher import AmqpPublisher, DeadLetterer
from bus_orchestrator.transport.topology import Topology

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class CoordinatorService:
    """One coordinator process. Several may run against the same queue and database.

    ``app`` is the name of the application whose sagas these are: its coordinators consume
    the queue ``bus.<app>.coordinator``, bound only to the types its sagas consume, and its
    timers, park sweep, relay and housekeeping take only its own rows, so several apps
    share one broker and one database. Without it, the queue is ``bus.coordinator`` and
    every row is taken (one app alone).

    ``schedules`` are fired from here (``runtime.schedules``): each slot by one of the
    app's coordinators.
    """

    def __init__(
        self,
        settings: Settings,
        definitions: Sequence[SagaDefinition[Any, Any]],
        registry: ContractRegistry,
        *,
        app: str | None = None,
        clock: Clock = utc_now,
        pool: asyncpg.Pool | None = None,
        telemetry: Telemetry | None = None,
        schedules: Sequence[Schedule[Any]] = (),
    ) -> None:
        self.settings = settings
        self._schedules = schedules
        self.schedule_runner: ScheduleRunner | None = None
        self.app = app
        self.topology = Topology(settings.exchange_prefix, settings.delivery_limit)
        self.queue_name = self.topology.coordinator_queue(app)
        self._definitions = definitions
        self._registry = registry
        self._clock = clock
        self._telemetry = telemetry or Telemetry.disabled()
        self._pool = pool
        self._owns_pool = pool is None
        self.connections: BrokerConnections | None = None
        self.publisher: AmqpPublisher | None = None
        self._queue: AbstractQueue | None = None
        self._consumer: QueueConsumer | None = None
        self._started = False
        self.store: PostgresSagaStore | None = None
        self.relay: OutboxRelay | None = None
        self.coordinator: Coordinator | None = None
        self.timers: TimerLoop | None = None
        self._housekeeping: Housekeeping | None = None
        self.park: Periodic | None = None
        self.lock_sweep: Periodic | None = None

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Connect, declare and start consuming.

        Without ``stop``, an unreachable service raises at once. With it, start-up waits for
        Postgres and RabbitMQ (one log line per attempt) and returns ``False`` if ``stop``
        is set first; ``stop()`` then releases what was opened.
        """
        if stop is None:
            try:
                await self._connect()
            except BaseException:
                await self._disconnect()
                raise
        elif not await until_started(
            self._connect, self._disconnect, settings=self.settings, stop=stop
        ):
            return False
        self._run()
        await self._start_consuming()
        self._started = True
        log.info(
            "coordinator running: %s on %s",
            ", ".join(f"{d.name} v{d.version}" for d in self._definitions),
            self.queue_name,
        )
        return True

    async def _connect(self) -> None:
        """Everything that needs the services: pool, schema check, broker, declarations."""
        settings = self.settings
        if self._pool is None:
            self._pool = await create_pool(settings)
        await require_migrated(self._pool, settings.database_schema)
        lease = timedelta(seconds=settings.outbox_lease_seconds)
        scope = (
            None
            if self.app is None
            else await register_app(
                self._pool, self.app, sorted({d.name for d in self._definitions})
            )
        )
        await require_versions(self._pool, self._definitions)
        self.store = PostgresSagaStore(self._pool, lease, scope)
        self.connections = await BrokerConnections.open(settings.amqp_url, "coordinator")
        publish_channel = await self.connections.publish.channel(publisher_confirms=True)
        consume_channel = await self.connections.consume.channel()
        await consume_channel.set_qos(prefetch_count=settings.prefetch)
        await self.topology.declare_exchanges(publish_channel)
        self.publisher = AmqpPublisher(publish_channel)
        self.relay = OutboxRelay(
            self.store,
            self.publisher,
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
            app=self.app,
        )
        self._queue = await self.topology.declare_work_queue(
            consume_channel, self.queue_name, self.coordinator.bindings()
        )

    async def _disconnect(self) -> None:
        """Release what a failed ``_connect`` opened, so the next attempt starts afresh."""
        if self.connections is not None:
            with contextlib.suppress(Exception):
                await self.connections.close()
            self.connections = None
        if self._pool is not None and self._owns_pool:
            with contextlib.suppress(Exception):
                await self._pool.close()
            self._pool = None
        self.store = self.relay = self.coordinator = self.publisher = self._queue = None

    def _run(self) -> None:
        """Start the relay, the timers, the housekeeping and the park and lock sweeps."""
        assert self.store is not None and self.relay is not None  # noqa: S101 - after _connect
        assert self.coordinator is not None  # noqa: S101
        settings = self.settings
        self.relay.start()
        if self._schedules:
            assert self._pool is not None  # noqa: S101 - after _connect
            self.schedule_runner = ScheduleRunner(
                self.app or "",
                self._schedules,
                PostgresScheduleStore(self._pool, timedelta(seconds=settings.outbox_lease_seconds)),
                self.relay,
                self._clock,
                exchange=self.topology.exchange_for(MessageKind.EVENT),
                source=settings.source,
                retention=timedelta(seconds=settings.inbox_retention_seconds),
                purge_seconds=settings.housekeeping_seconds,
            )
            self.schedule_runner.start()
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
        self.park = Periodic(
            "park sweep", self.coordinator.sweep_parked, settings.park_sweep_seconds
        )
        self.park.start()
        self.lock_sweep = Periodic(
            "lock sweep", self.coordinator.sweep_locks, settings.lock_sweep_seconds
        )
        self.lock_sweep.start()

    async def _start_consuming(self) -> None:
        assert self._queue is not None and self.coordinator is not None  # noqa: S101
        assert self.publisher is not None and self.connections is not None  # noqa: S101
        self._consumer = QueueConsumer(
            self._queue,
            self.coordinator.handle,
            DeadLetterer(
                self.publisher,
                self.topology,
                "coordinator",
                frame_max=self.connections.frame_max(),
            ),
            name="coordinator",
            metrics=self._telemetry.metrics,
            delivery_limit=self.topology.delivery_limit,
        )
        await self._consumer.start()

    async def stop(self, grace: float = 30.0) -> None:
        """Finish the messages in hand and publish what they committed, then close."""
        if self.coordinator is not None:
            self.coordinator.stop()
        if self._consumer is not None:
            await self._consumer.stop(grace)
        if self.schedule_runner is not None:
            await self.schedule_runner.stop()
        if self.timers is not None:
            await self.timers.stop()
        if self.park is not None:
            await self.park.stop()
        if self.lock_sweep is not None:
            await self.lock_sweep.stop()
        if self._housekeeping is not None:
            await self._housekeeping.stop()
        if self.relay is not None:
            await self.relay.stop(grace)
        if self.connections is not None:
            await self.connections.close()
        if self._pool is not None and self._owns_pool:
            await self._pool.close()
        if self._started:
            log.info("coordinator stopped")


async def run_coordinator(
    settings: Settings,
    definitions: Sequence[SagaDefinition[Any, Any]],
    registry: ContractRegistry,
    stop: asyncio.Event,
    telemetry: Telemetry | None = None,
    *,
    app: str | None = None,
    schedules: Sequence[Schedule[Any]] = (),
) -> None:
    """Run until ``stop`` is set, then shut down cleanly."""
    service = CoordinatorService(
        settings, definitions, registry, app=app, telemetry=telemetry, schedules=schedules
    )
    try:
        if await service.start(stop):
            await stop.wait()
    finally:
        await service.stop()


async def require_versions(
    pool: asyncpg.Pool, definitions: Sequence[SagaDefinition[Any, Any]]
) -> None:
    """Refuse to run when running sagas need a version of a definition not given here.

    Raises ``DefinitionVersionError`` naming the saga type, the version and the sagas.
    """
    names = sorted({d.name for d in definitions})
    problem = missing_versions(await running_versions(pool, names), definitions)
    if problem is not None:
        raise DefinitionVersionError(problem)


def missing_versions(
    running: Sequence[RunningVersion], definitions: Sequence[SagaDefinition[Any, Any]]
) -> str | None:
    """One line naming each (saga type, version) running sagas need and ``definitions``
    lack, or ``None`` when every one is there."""
    have: dict[str, list[int]] = {}
    for definition in sorted(definitions, key=lambda d: d.version):
        have.setdefault(definition.name, []).append(definition.version)
    problems = []
    for need in running:
        versions = have.get(need.saga_type, [])
        if need.definition_version in versions:
            continue
        ids = ", ".join(need.saga_ids) + (" ..." if need.running > len(need.saga_ids) else "")
        noun = "saga" if need.running == 1 else "sagas"
        only = ", ".join(str(v) for v in versions)
        problems.append(
            f"saga {need.saga_type} version {need.definition_version} is needed by "
            f"{need.running} running {noun} (ids {ids}) and this app has only "
            f"version{'s' if len(versions) > 1 else ''} {only}"
        )
    if not problems:
        return None
    return "; ".join(problems) + (
        ": register the old version beside the new until its sagas finish"
    )
