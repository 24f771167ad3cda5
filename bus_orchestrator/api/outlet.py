"""The HTTP API's outlet: where its writes go, and how what they publish reaches the bus.

A route that changes something (publishes an event, repairs a saga) builds a
``ports.Change`` and hands it to ``Outlet.commit``: it commits through the app's scoped
store, in one transaction with its inbox row (so a repeated request is a ``DUPLICATE``),
and the outbox rows it committed go to the outlet's own ``OutboxRelay`` to be published.

Committed is not published: a route answers (202) once the rows are committed. While
RabbitMQ is down they stay in the outbox, and the sweep of any relay of the app (this
one's, or a coordinator's) publishes them once it is back. The outlet's publisher connects
on first use and again after a failure, so the API starts, and serves its reads, with
RabbitMQ down (``/readyz`` says so).

The Postgres outlet registers the app's scope (``store.postgres.register_app``) when first
needed: on start-up in the background (retried while Postgres is down), or by the first
write, whichever comes first; its relay starts then, and takes only the app's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.trace import NoOpTracer, Tracer

from bus_orchestrator.api.errors import ApiError
from bus_orchestrator.api.models import ErrorBody
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.decision import Outgoing
from bus_orchestrator.core.messages import Message, MessageKind
from bus_orchestrator.core.state import SagaInstance
from bus_orchestrator.errors import (
    AppConflictError,
    BusOrchestratorError,
    SchemaNotMigratedError,
)
from bus_orchestrator.ports import (
    Change,
    CommitResult,
    Committed,
    OutboxMessage,
    PendingPublish,
    RequestKeys,
    SagaStore,
)
from bus_orchestrator.runtime.outgoing import encode_message, encode_outgoing, for_saga
from bus_orchestrator.runtime.parking import Relay
from bus_orchestrator.runtime.relay import OutboxRelay
from bus_orchestrator.startup import until_started
from bus_orchestrator.store.request_keys import InMemoryRequestKeys, PostgresRequestKeys
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.transport.lazy import LazyAmqpPublisher
from bus_orchestrator.transport.topology import Topology

log = logging.getLogger(__name__)

API_SOURCE = "urn:bus-orchestrator:api"
"""The CloudEvents ``source`` of what the API publishes (``:<app>`` appended)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Outlet:
    """Commits the API's changes and hands what they publish to a relay.

    Given a ``store`` (and, if anything is to be published, a ``relay``), it is ready as
    it is: tests over the in-memory store use it so, and without a relay the committed
    rows wait in the store's outbox. ``PostgresOutlet`` opens its scoped store and its
    relay itself.
    """

    def __init__(
        self,
        topology: Topology,
        source: str,
        *,
        store: SagaStore | None = None,
        relay: Relay | None = None,
        telemetry: Telemetry | None = None,
        consumer: str = "api",
        request_keys: RequestKeys | None = None,
    ) -> None:
        self.topology = topology
        self.source = source
        self.consumer = consumer
        """The inbox name of the API's writes: a request seen before is a ``DUPLICATE``."""
        self.telemetry = telemetry or Telemetry.disabled()
        self._store = store
        self._relay = relay
        self.request_keys: RequestKeys = request_keys or InMemoryRequestKeys()
        """The idempotency keys of the API's requests (``Idempotency-Key``)."""

    @property
    def tracer(self) -> Tracer:
        return self.telemetry.tracer

    @property
    def tracing(self) -> bool:
        return not isinstance(self.tracer, NoOpTracer)

    async def store(self) -> SagaStore:
        """The app's scoped store (opened first if need be: ``StoreUnavailableError`` while
        Postgres is down, ``SchemaNotMigratedError``, ``AppConflictError``)."""
        if self._store is None:
            await self._open()
        assert self._store is not None  # noqa: S101 - _open sets it or raises
        return self._store

    async def _open(self) -> None:
        raise RuntimeError("an Outlet without a store must be a PostgresOutlet")

    async def commit(self, change: Change) -> Committed:
        """Commit ``change`` through the scoped store; hand its outbox rows to the relay.

        A ``COMMITTED`` change's rows are in the outbox whatever becomes of their publish
        (the sweep of any relay of the app retries it)."""
        committed = await (await self.store()).commit(change)
        if committed.result is CommitResult.COMMITTED and self._relay is not None:
            self._relay.submit(committed.outbox)
        return committed

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        """Hand rows committed through this outlet's store by another writer (a
        coordinator's repair) to its relay; without one they wait for a sweep."""
        if self._relay is not None:
            self._relay.submit(rows)

    def exchange_for(self, kind: MessageKind) -> str:
        return self.topology.exchange_for(kind)

    def encode(
        self,
        payload: Message,
        *,
        message_id: str,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        now: datetime | None = None,
    ) -> OutboxMessage:
        """``payload`` as the coordinator writes a message to the outbox, from this
        source; it carries the current trace context (with tracing on), so the relay's
        send span, and the saga the message starts, join the caller's trace."""
        message = encode_message(
            payload,
            message_id=message_id,
            topology=self.topology,
            source=self.source,
            now=now or utc_now(),
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        return self._traced(message)

    def encode_outgoing(
        self, out: Outgoing, instance: SagaInstance | None = None, now: datetime | None = None
    ) -> OutboxMessage:
        """A message a saga's decision sends, encoded as the coordinator does it: with the
        ``x-saga-*`` headers of ``instance`` (the saga after the decision) and the current
        trace context."""
        message = encode_outgoing(
            out, topology=self.topology, source=self.source, now=now or utc_now()
        )
        return for_saga(
            message, instance, compensation=out.compensates is not None, traced=self.tracing
        )

    def _traced(self, message: OutboxMessage) -> OutboxMessage:
        return for_saga(message, None, traced=self.tracing)


class PostgresOutlet(Outlet):
    """The outlet of a served API: the app's scoped Postgres store, and a relay whose
    publisher has a RabbitMQ connection of its own (opened when first needed)."""

    def __init__(
        self,
        settings: Settings,
        app: App,
        pool: asyncpg.Pool,
        *,
        telemetry: Telemetry | None = None,
    ) -> None:
        topology = Topology(settings.exchange_prefix, settings.delivery_limit)
        super().__init__(
            topology,
            f"{API_SOURCE}:{app.name}",
            telemetry=telemetry,
            consumer=f"api.{app.name}",
            request_keys=PostgresRequestKeys(pool),
        )
        self.settings = settings
        self.app = app
        self.pool = pool
        self.publisher = LazyAmqpPublisher(settings.amqp_url, topology, f"api {app.name}")
        self.relay: OutboxRelay | None = None
        self._opening = asyncio.Lock()
        self._starting: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def _open(self) -> None:
        async with self._opening:
            if self._store is not None:
                return
            from bus_orchestrator.store.migrate import require_migrated
            from bus_orchestrator.store.postgres import PostgresSagaStore, register_app

            settings = self.settings
            await require_migrated(self.pool, settings.database_schema)
            names = sorted({d.name for d in self.app.sagas})
            scope = await register_app(self.pool, self.app.name, names)
            lease = timedelta(seconds=settings.outbox_lease_seconds)
            store = PostgresSagaStore(self.pool, lease, scope)
            relay = OutboxRelay(
                store,
                self.publisher,
                lease=lease,
                sweep_interval=settings.outbox_sweep_seconds,
                workers=4,
                telemetry=self.telemetry,
            )
            relay.start()
            self._store, self._relay, self.relay = store, relay, relay
            log.info("API outlet of app %r open: its outbox rows are published", self.app.name)

    def start(self) -> None:
        """Open in the background, waiting out Postgres (so rows an earlier process left
        unsent are swept even if no request comes), and connect to RabbitMQ once."""

        async def opening() -> None:
            try:
                if not await until_started(
                    self._open, _nothing, settings=self.settings, stop=self._stop
                ):
                    return
            except BusOrchestratorError as exc:  # not retryable: unmigrated, app conflict
                log.error("API outlet not open, writes are refused: %s", exc)
                return
            with contextlib.suppress(BusOrchestratorError):
                await self.publisher.connect()

        self._starting = asyncio.create_task(opening(), name="api outlet")

    async def stop(self, grace: float = 5.0) -> None:
        """Publish what was handed over (up to ``grace`` seconds), then close; rows left
        unsent stay in the outbox for the next sweep."""
        self._stop.set()
        if self._starting is not None:
            # The wait for Postgres ends with the stop event; a connection to RabbitMQ
            # under way is let finish (cut short, aiormq leaves a coroutine unawaited).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._starting), grace)
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self.relay is not None:
            await self.relay.stop(grace)
        await self.publisher.close()


async def _nothing() -> None:
    return


@asynccontextmanager
async def postgres_outlet(
    settings: Settings, app: App, pool: asyncpg.Pool, telemetry: Telemetry | None = None
) -> AsyncIterator[PostgresOutlet]:
    """A started ``PostgresOutlet``, stopped on exit."""
    outlet = PostgresOutlet(settings, app, pool, telemetry=telemetry)
    outlet.start()
    try:
        yield outlet
    finally:
        await outlet.stop()


def outlet_of(request: Request) -> Outlet:
    """The outlet of the API serving ``request`` (``request.app.state.outlet``); 503 for
    an API built over a read-only store (no outlet)."""
    found: Outlet | None = getattr(request.app.state, "outlet", None)
    if found is None:
        detail = "this API serves reads only: it has no outlet for writes"
        raise ApiError(503, ErrorBody(error="unavailable", detail=detail))
    return found


def install_refusals(api: FastAPI) -> None:
    """A write the outlet cannot make, because the database is not ready for the app
    (unmigrated, or its saga types held by another app), is a 503 naming why."""

    @api.exception_handler(SchemaNotMigratedError)
    @api.exception_handler(AppConflictError)
    async def not_ready(request: Request, exc: BusOrchestratorError) -> JSONResponse:
        log.warning("write refused: %s", exc)
        body = ErrorBody(error="unavailable", detail=str(exc))
        return JSONResponse(body.model_dump(mode="json"), 503, {"Retry-After": "5"})


def memory_outlet(
    settings: Settings, app: App, store: object, telemetry: Telemetry | None = None
) -> Outlet | None:
    """Beside an in-memory store (tests), an outlet that commits to it and publishes
    nothing: the rows wait in its outbox. ``None`` beside any other read-only store."""
    from bus_orchestrator.store.memory import InMemorySagaStore

    if not isinstance(store, InMemorySagaStore):
        return None
    topology = Topology(settings.exchange_prefix, settings.delivery_limit)
    return Outlet(
        topology,
        f"{API_SOURCE}:{app.name}",
        store=store,
        telemetry=telemetry,
        consumer=f"api.{app.name}",
    )
