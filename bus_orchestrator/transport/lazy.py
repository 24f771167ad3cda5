"""A confirming publisher that connects when first used, and again after a failed try.

For a process whose main work is not the bus (the HTTP API): it starts, and serves,
while RabbitMQ is down. A publish then fails fast with ``BrokerUnavailableError`` (the
outbox relay leaves the row for its sweep), and no more than one connection attempt is
made per ``retry_after`` seconds, however many rows wait. Once connected, the robust
connection reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from aio_pika.abc import AbstractRobustConnection

from bus_orchestrator.errors import BrokerUnavailableError, BusOrchestratorError
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.transport.publisher import AmqpPublisher
from bus_orchestrator.transport.topology import Topology, connect


class LazyAmqpPublisher:
    """``ports.Publisher`` on a connection of its own, opened on first use."""

    def __init__(
        self, url: str, topology: Topology, name: str, *, retry_after: float = 2.0
    ) -> None:
        self._url = url
        self._topology = topology
        self._name = name
        self._retry_after = retry_after
        self._lock = asyncio.Lock()
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AmqpPublisher | None = None
        self._failed_at: float | None = None
        self._failure = ""

    @property
    def connected(self) -> bool:
        return self._publisher is not None

    async def connect(self) -> AmqpPublisher:
        """The publisher, connecting (and declaring the exchanges) first if need be.

        Raises ``BrokerUnavailableError`` (or ``BrokerRefusedError``) when RabbitMQ cannot
        be used; within ``retry_after`` of a failed attempt, at once without trying."""
        if self._publisher is not None:
            return self._publisher
        async with self._lock:
            if self._publisher is not None:
                return self._publisher
            now = time.monotonic()
            if self._failed_at is not None and now - self._failed_at < self._retry_after:
                raise BrokerUnavailableError(self._failure)
            try:
                connection = await connect(self._url, self._name)
            except BusOrchestratorError as exc:
                self._failed_at, self._failure = now, str(exc)
                raise
            try:
                channel = await connection.channel(publisher_confirms=True)
                await self._topology.declare_exchanges(channel)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await connection.close()
                self._failed_at = now
                self._failure = f"RabbitMQ is not usable: {type(exc).__name__}"
                if isinstance(exc, BusOrchestratorError | asyncio.CancelledError):
                    raise
                raise BrokerUnavailableError(self._failure) from exc
            self._connection, self._publisher = connection, AmqpPublisher(channel)
            self._failed_at = None
            return self._publisher

    async def publish(self, message: OutboxMessage) -> None:
        await (await self.connect()).publish(message)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._publisher = None
