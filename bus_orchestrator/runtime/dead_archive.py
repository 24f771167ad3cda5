"""The dead-letter archive: moves each message of ``bus.dead`` into Postgres.

Insert, then acknowledge: a message is taken off the queue only once its row is committed.
While Postgres is down, the message in hand is held and the insert retried (nothing is
acknowledged, so nothing is lost; should the process stop meanwhile, the broker gives the
message back to the queue). A redelivery (an acknowledgement lost with its connection)
finds its row by the fingerprint and writes nothing. A message that is not JSON, not a
CloudEvent, or of no known type, is archived all the same, as it came.

It runs in the API process (``api.app.create_api``'s lifespan). It only consumes
``bus.dead``, declared by the coordinators (it waits for it rather than declare the
broker's topology itself). Where a dead letter does not say its saga (``x-saga-id``), the
saga id is derived as the engine derives it: from the saga type of the app that handles
the message's type, and its correlation id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, ConsumerTag
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity

from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Event
from bus_orchestrator.core.state import saga_id_for
from bus_orchestrator.errors import BrokerUnavailableError, BusOrchestratorError
from bus_orchestrator.ports import DeadLetterArchive, DeadLetterRecord
from bus_orchestrator.transport.connections import BrokerConnections
from bus_orchestrator.transport.dead_letters import dead_letter_record
from bus_orchestrator.transport.publisher import AmqpPublisher
from bus_orchestrator.transport.topology import Topology

log = logging.getLogger(__name__)

PREFETCH = 20
"""Dead letters in hand at once."""
RETRY_SECONDS = (0.2, 30.0)
"""First and longest wait between tries to reach RabbitMQ, ``bus.dead`` or Postgres."""


def saga_of(record: DeadLetterRecord, app: App | None) -> str | None:
    """The saga a dead letter concerns: its ``x-saga-id``, else derived when exactly one
    saga type of ``app`` handles its type and its correlation id is known (from its data
    when the data is valid, else from its ``correlationid``)."""
    if record.saga_id is not None:
        return record.saga_id
    if app is None or record.message_type is None:
        return None
    kind = record.message_type
    handlers = [d for d in app.newest_sagas if kind in d.event_types() or kind in d.reply_types()]
    if len(handlers) != 1:
        return None
    [definition] = handlers
    correlation = record.correlation_id
    contract = app.registry.get(kind)
    data = _data(record)
    if contract is not None and issubclass(contract.model, Event) and data is not None:
        try:
            correlation = definition.correlation_of(contract.model.model_validate(data))
        except Exception:  # invalid data, or the saga's own correlate: fall back
            log.debug("no correlation from the data of %s", record.id, exc_info=True)
    return None if correlation is None else saga_id_for(definition.name, correlation)


def _data(record: DeadLetterRecord) -> Any:
    try:
        document = json.loads(record.body)
    except (ValueError, RecursionError):
        return None
    structured = (record.content_type or "").lower().startswith("application/cloudevents")
    if structured:
        return document.get("data") if isinstance(document, dict) else None
    return document


class DeadArchive:
    """Consumes ``bus.dead`` into the ``dead_letter`` table, in the background.

    ``start`` returns at once: RabbitMQ may be down, or ``bus.dead`` not declared yet; it
    keeps trying. ``publisher`` gives a confirming publisher on the archive's own
    publishing connection, for replays.
    """

    def __init__(
        self,
        settings: Settings,
        store: DeadLetterArchive,
        app: App | None = None,
        *,
        name: str = "dead-letter archive",
    ) -> None:
        self._settings = settings
        self._store = store
        self._app = app
        self._name = name
        self._topology = Topology(settings.exchange_prefix, settings.delivery_limit)
        self._connections: BrokerConnections | None = None
        self._channel: AbstractChannel | None = None
        self._publishing: AbstractChannel | None = None
        self._publisher: AmqpPublisher | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._consuming = asyncio.Event()
        self._queue: AbstractQueue | None = None
        self._tag: ConsumerTag | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self.archived = 0
        """Dead letters written by this archive (not counting redeliveries)."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def consuming(self) -> None:
        """Wait until it consumes ``bus.dead`` (tests)."""
        await self._consuming.wait()

    async def _run(self) -> None:
        wait = RETRY_SECONDS[0]
        while not self._stopping.is_set():
            try:
                await self._consume()
                return
            except ChannelNotFoundEntity:  # the passive declaration: no coordinator yet
                log.info("%s: %s is not declared yet", self._name, self._dead)
            except (BusOrchestratorError, AMQPError, OSError, RuntimeError, TimeoutError) as exc:
                await self._close()
                log.warning("%s: waiting for RabbitMQ: %s", self._name, exc)
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
            except TimeoutError:
                wait = min(wait * 2, RETRY_SECONDS[1])

    @property
    def _dead(self) -> str:
        return self._topology.dead

    async def _consume(self) -> None:
        if self._connections is None:
            self._connections = await BrokerConnections.open(self._settings.amqp_url, self._name)
        channel = await self._connections.consume.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(self._dead, passive=True)
        self._channel, self._queue = channel, queue
        self._tag = await queue.consume(self._on_message)
        self._consuming.set()
        log.info("%s: consuming %s", self._name, self._dead)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._keep(message)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _keep(self, message: AbstractIncomingMessage) -> None:
        record = dead_letter_record(message, datetime.now(UTC))
        saga_id = saga_of(record, self._app)
        wait = RETRY_SECONDS[0]
        while True:
            try:
                written = await self._store.archive(record, saga_id)
                break
            except Exception as exc:  # held and tried again, never dropped
                if isinstance(exc, BusOrchestratorError) and exc.retryable:
                    log.warning("%s: holding %s for Postgres: %s", self._name, record.id, exc)
                else:  # refused credentials, or a row Postgres refuses: to be fixed
                    log.exception("%s: cannot archive %s; trying again", self._name, record.id)
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
                return  # stopping: left unacknowledged, so the broker gives it back
            except TimeoutError:
                wait = min(wait * 2, RETRY_SECONDS[1])
        if written:
            self.archived += 1
            log.info(
                "%s: archived dead letter %s (%s, %s)",
                self._name,
                record.id,
                record.message_type,
                record.reason,
            )
        try:
            await message.ack()
        except Exception:  # the channel broke: the redelivery finds its row
            log.warning("%s: could not acknowledge %s", self._name, record.id, exc_info=True)

    async def publisher(self) -> AmqpPublisher:
        """A confirming publisher on the archive's publishing connection;
        ``BrokerUnavailableError`` while RabbitMQ cannot be reached."""
        if self._publisher is not None and self._publishing is not None:
            if not self._publishing.is_closed:
                return self._publisher
        if self._connections is None:
            raise BrokerUnavailableError("RabbitMQ is not reachable from the API process")
        try:
            self._publishing = await self._connections.publish.channel(publisher_confirms=True)
        except Exception as exc:
            raise BrokerUnavailableError(f"RabbitMQ is not reachable: {exc!r}") from exc
        self._publisher = AmqpPublisher(self._publishing)
        return self._publisher

    async def stop(self, grace: float = 10.0) -> None:
        """Stop consuming; dead letters in hand finish or go back to the queue."""
        self._stopping.set()
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except Exception:  # the channel is gone already: nothing more comes
                log.debug("%s: cancelling the consumer", self._name, exc_info=True)
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=grace)
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)
        await self._close()

    async def _close(self) -> None:
        connections, self._connections = self._connections, None
        self._channel = self._publishing = None
        self._publisher, self._queue, self._tag = None, None, None
        if connections is not None:
            try:
                await connections.close()
            except Exception:  # already gone
                log.debug("%s: closing", self._name, exc_info=True)
