"""Fixtures shared by every test: service URLs and per-test isolated names."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator

import aio_pika
import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.transport.topology import Topology
from tests import services


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with services.amqp_url() as url:
        yield url


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with services.database_url() as url:
        yield url


@pytest.fixture
def unique_name() -> str:
    """A short name no other test uses: schema name, exchange prefix, ids."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def db_schema(database_url: str, unique_name: str) -> AsyncIterator[str]:
    """An empty Postgres schema of this test's own, dropped afterwards."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{unique_name}"')
    finally:
        await conn.close()
    yield unique_name
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA "{unique_name}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def settings(amqp_url: str, database_url: str, unique_name: str) -> Settings:
    """Settings naming this test's own schema and exchange/queue prefix.

    Integration tests that need the schema or the broker names take ``db_schema`` and
    ``bus`` too, which create and remove them.
    """
    return Settings(
        amqp_url=amqp_url,
        database_url=database_url,
        database_schema=unique_name,
        exchange_prefix=f"{unique_name}.",
        step_timeout_seconds=30.0,
        outbox_lease_seconds=2.0,
        outbox_sweep_seconds=0.2,
        timer_poll_seconds=0.1,
    )


STANDARD_QUEUES = (
    # the example app's, and those of the engine run without an app
    "bus.order-to-cash.coordinator",
    "bus.order-to-cash.adapter.inventory",
    "bus.order-to-cash.adapter.payments",
    "bus.order-to-cash.adapter.shipping",
    "bus.coordinator",
    "bus.adapter.inventory",
    "bus.adapter.payments",
    "bus.adapter.shipping",
)


class TestBus:
    """This test's exchanges and queues on the real broker, removed afterwards."""

    __test__ = False

    def __init__(self, connection: aio_pika.abc.AbstractConnection, topology: Topology) -> None:
        self.connection = connection
        self.topology = topology
        self.queues: list[str] = [topology.prefix + name for name in STANDARD_QUEUES]

    async def channel(self) -> aio_pika.abc.AbstractChannel:
        return await self.connection.channel(publisher_confirms=True)

    async def tap(self, exchange: str, routing_key: str = "#") -> aio_pika.abc.AbstractQueue:
        """A queue of this test's own that sees what is published to ``exchange``."""
        channel = await self.channel()
        name = f"{self.topology.prefix}tap.{uuid.uuid4().hex[:8]}"
        self.queues.append(name)
        queue = await channel.declare_queue(name, durable=False, auto_delete=False)
        await queue.bind(exchange, routing_key=routing_key)
        return queue

    async def drain(self, queue: aio_pika.abc.AbstractQueue, count: int, within: float = 10.0):
        """Wait for ``count`` messages on ``queue``, acknowledging them; fails on timeout."""
        received: list[aio_pika.abc.AbstractIncomingMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while len(received) < count:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                if loop.time() > deadline:
                    raise AssertionError(f"got {len(received)} of {count} messages on {queue.name}")
                await asyncio.sleep(0.02)
                continue
            received.append(message)
        return received


@contextlib.asynccontextmanager
async def open_test_bus(
    connection: aio_pika.abc.AbstractConnection, settings: Settings
) -> AsyncIterator[TestBus]:
    """This test's exchanges on ``connection``; its exchanges and queues removed after."""
    topology = Topology(settings.exchange_prefix, settings.delivery_limit)
    channel = await connection.channel()
    await topology.declare_exchanges(channel)
    test_bus = TestBus(connection, topology)
    try:
        yield test_bus
    finally:
        try:
            cleanup = await connection.channel()
        except RuntimeError:  # a test restarted the broker and this connection is not back
            await connection.close()
            connection = await aio_pika.connect(str(connection.url))
            cleanup = await connection.channel()
        await topology.delete(cleanup, test_bus.queues)
        await connection.close()


@pytest.fixture
async def bus(amqp_url: str, settings: Settings) -> AsyncIterator[TestBus]:
    """The shared exchanges under this test's prefix on the real broker."""
    async with open_test_bus(await aio_pika.connect(amqp_url), settings) as test_bus:
        yield test_bus
