"""The example adapters on the real broker and Postgres, run by ``run_adapters``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import aio_pika
import asyncpg
import pytest

from adapters import (
    FakeCarrier,
    FakeInventory,
    FakePaymentGateway,
    example_adapters,
)
from bus_orchestrator.adapters import (
    Adapter,
    CommandContext,
    CommandLog,
    CommandRecord,
    InMemoryCommandLog,
    PostgresCommandLog,
    RetryPolicy,
    reply_id_for,
)
from bus_orchestrator.adapters.runner import run_adapters, work_queue_name
from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Command
from bus_orchestrator.errors import StoreUnavailableError
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.store.migrate import migrate
from bus_orchestrator.store.postgres import create_pool
from bus_orchestrator.transport import codec
from bus_orchestrator.transport.consumer import QueueConsumer, raw_message
from bus_orchestrator.transport.publisher import AmqpPublisher
from contracts import (
    REGISTRY,
    Address,
    ChargePayment,
    CreateShipment,
    RefundPayment,
    ReleaseStock,
    ReserveStock,
    StockReserved,
)
from contracts.inventory import StockLine
from tests.conftest import TestBus

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(attempts=5, initial_backoff=0.01, max_backoff=0.05, jitter=0.01)


@pytest.fixture
async def migrated(database_url: str, db_schema: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, db_schema)
    finally:
        await conn.close()
    return db_schema


@dataclass
class Running:
    """``run_adapters`` in a task, with the fakes behind its adapters."""

    task: asyncio.Task[None]
    stop: asyncio.Event
    inventory: FakeInventory
    payments: FakePaymentGateway
    shipping: FakeCarrier

    async def shut_down(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def declare_work_queues(bus: TestBus, adapters: list[Adapter]) -> None:
    """Declared up front, as the runner declares them, so no command sent early is lost."""
    channel = await bus.channel()
    topology = bus.topology
    for adapter in adapters:
        await topology.declare_work_queue(
            channel,
            topology.queue(work_queue_name(adapter)),
            [(topology.commands, command_type) for command_type in adapter.command_types],
        )
    await channel.close()


@pytest.fixture
async def running(settings: Settings, bus: TestBus, migrated: str) -> AsyncIterator[Running]:
    inventory, payments, shipping = FakeInventory(), FakePaymentGateway(), FakeCarrier()
    adapters = example_adapters(
        inventory=inventory, payments=payments, shipping=shipping, retry=FAST_RETRY
    )
    await declare_work_queues(bus, adapters)
    stop = asyncio.Event()
    task = asyncio.create_task(run_adapters(settings, adapters, stop))
    handle = Running(task, stop, inventory, payments, shipping)
    try:
        yield handle
    finally:
        if not task.done():
            await handle.shut_down()


async def send(bus: TestBus, command: Command, command_id: str, correlation_id: str) -> None:
    message = codec.encode(
        message_id=command_id,
        payload=command,
        exchange=bus.topology.commands,
        source="urn:test:coordinator",
        time=datetime.now(UTC),
        correlation_id=correlation_id,
        causation_id=f"cause-of-{command_id}",
    )
    channel = await bus.channel()
    await AmqpPublisher(channel).publish(message)
    await channel.close()


def lines(*skus: str) -> tuple[StockLine, ...]:
    return tuple(StockLine(sku=sku, quantity=1) for sku in skus)


CASES: list[tuple[Command, str]] = [
    (ReserveStock(order_id="o1", items=lines("A")), "inventory.stock_reserved.v1"),
    (ReserveStock(order_id="o2", items=lines("A", "OOS-9")), "inventory.stock_unavailable.v1"),
    (ReleaseStock(order_id="o3"), "inventory.stock_released.v1"),
    (
        ChargePayment(order_id="o4", customer_id="c", amount=Decimal("12.50"), currency="EUR"),
        "payments.payment_charged.v1",
    ),
    (
        ChargePayment(order_id="o5", customer_id="c", amount=Decimal("10000.01"), currency="EUR"),
        "payments.payment_declined.v1",
    ),
    (
        RefundPayment(order_id="o6", amount=Decimal("1"), currency="EUR"),
        "payments.payment_refunded.v1",
    ),
    (
        CreateShipment(order_id="o7", items=lines("A"), shipping_address=Address(country="DE")),
        "shipping.shipment_created.v1",
    ),
    (
        CreateShipment(order_id="o8", items=lines("A"), shipping_address=Address(country="ZZ")),
        "shipping.shipment_rejected.v1",
    ),
]


async def count_rows(database_url: str, schema: str, command_id: str) -> int:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        query = "SELECT count(*) FROM adapter_command WHERE command_id = $1"
        return int(await conn.fetchval(query, command_id))
    finally:
        await conn.close()


async def test_each_command_gets_its_reply_with_derived_id_and_ids_of_its_cause(
    bus: TestBus, running: Running, settings: Settings
) -> None:
    tap = await bus.tap(bus.topology.replies)
    sent = {f"cmd-{i}": (command, reply_type) for i, (command, reply_type) in enumerate(CASES)}
    for command_id, (command, _) in sent.items():
        await send(bus, command, command_id, correlation_id=f"corr-{command_id}")

    replies = await bus.drain(tap, len(CASES))

    by_cause = {message.headers["ce-causationid"]: message for message in replies}
    assert set(by_cause) == set(sent)
    for command_id, (command, reply_type) in sent.items():
        message = by_cause[command_id]
        inbound = codec.decode(raw_message(message), REGISTRY, settings.max_message_bytes)
        assert inbound.message_type == reply_type
        assert message.routing_key == reply_type
        assert inbound.message_id == message.message_id == reply_id_for(command_id)
        assert inbound.correlation_id == message.correlation_id == f"corr-{command_id}"
        assert inbound.causation_id == command_id
        assert inbound.payload.order_id == command.order_id  # type: ignore[attr-defined]


async def test_a_redelivered_command_has_one_effect_and_the_same_reply_twice(
    bus: TestBus, running: Running, database_url: str, migrated: str
) -> None:
    tap = await bus.tap(bus.topology.replies)
    command = ReserveStock(order_id="o1", items=lines("A"))

    await send(bus, command, "cmd-1", "o1")
    [first] = await bus.drain(tap, 1)
    await send(bus, command, "cmd-1", "o1")
    [second] = await bus.drain(tap, 1)

    assert first.message_id == second.message_id == reply_id_for("cmd-1")
    assert first.body == second.body
    assert first.headers == second.headers
    assert running.inventory.calls == 1  # answered from the command log
    assert await count_rows(database_url, migrated, "cmd-1") == 1


async def test_concurrent_copies_of_a_command_record_one_row_and_reply_alike(
    bus: TestBus, running: Running, database_url: str, migrated: str
) -> None:
    tap = await bus.tap(bus.topology.replies)
    command = ChargePayment(order_id="o1", customer_id="c", amount=Decimal("5"), currency="EUR")

    for _ in range(3):
        await send(bus, command, "cmd-1", "o1")
    replies = await bus.drain(tap, 3)

    assert {message.message_id for message in replies} == {reply_id_for("cmd-1")}
    assert len({message.body for message in replies}) == 1
    assert len(running.payments.charges) == 1
    assert await count_rows(database_url, migrated, "cmd-1") == 1


async def test_transient_failures_are_retried_until_a_reply_goes_out(
    bus: TestBus, running: Running
) -> None:
    tap = await bus.tap(bus.topology.replies)
    running.shipping.fail_next(2)

    await send(
        bus,
        CreateShipment(order_id="o1", items=lines("A"), shipping_address=Address(country="DE")),
        "cmd-1",
        "o1",
    )
    [reply] = await bus.drain(tap, 1)

    assert reply.type == "shipping.shipment_created.v1"
    assert running.shipping.calls == 3


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"not a cloud event", {}, "not-a-cloudevent"),
        (
            b"{broken",
            {
                "ce-id": "x1",
                "ce-source": "urn:test",
                "ce-specversion": "1.0",
                "ce-type": "inventory.reserve_stock.v1",
            },
            "malformed",
        ),
    ],
)
async def test_a_malformed_command_is_dead_lettered_with_its_reason(
    bus: TestBus, running: Running, body: bytes, headers: dict[str, str], reason: str
) -> None:
    channel = await bus.channel()
    dead = await channel.declare_queue(bus.topology.dead, passive=True)
    commands = await channel.get_exchange(bus.topology.commands)

    await commands.publish(
        aio_pika.Message(body, headers=headers, message_id="bad-1"),
        routing_key="inventory.reserve_stock.v1",
    )
    [message] = await bus.drain(dead, 1)

    assert message.headers["x-dead-reason"] == reason
    assert message.headers["x-dead-by"] == "adapter.inventory"
    assert message.headers["x-original-routing-key"] == "inventory.reserve_stock.v1"
    assert message.body == body
    assert running.inventory.calls == 0


async def test_stopping_lets_the_delivery_in_hand_finish_and_returns(
    settings: Settings, bus: TestBus, migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release, stopping = asyncio.Event(), asyncio.Event(), asyncio.Event()
    stop_consumer = QueueConsumer.stop

    async def tell_and_stop(self: QueueConsumer, grace: float = 30.0) -> None:
        stopping.set()
        await stop_consumer(self, grace)

    monkeypatch.setattr(QueueConsumer, "stop", tell_and_stop)
    adapter = Adapter("gated", REGISTRY)

    @adapter.handles(ReserveStock)
    async def reserve(command: ReserveStock, ctx: CommandContext) -> StockReserved:
        entered.set()
        await release.wait()
        return StockReserved(order_id=command.order_id, reservation_id="r-1")

    queue = bus.topology.queue(work_queue_name(adapter))
    bus.queues.append(queue)
    tap = await bus.tap(bus.topology.replies)
    await declare_work_queues(bus, [adapter])
    stop = asyncio.Event()
    task = asyncio.create_task(run_adapters(settings, [adapter], stop))

    await send(bus, ReserveStock(order_id="o1", items=lines("A")), "cmd-1", "o1")
    await asyncio.wait_for(entered.wait(), 10)
    stop.set()
    await asyncio.wait_for(stopping.wait(), 10)  # the runner is stopping, the command in hand
    release.set()

    assert await asyncio.wait_for(task, 30) is None
    [reply] = await bus.drain(tap, 1)
    assert reply.message_id == reply_id_for("cmd-1")
    channel = await bus.channel()
    left = await channel.declare_queue(queue, passive=True)
    assert left.declaration_result.message_count == 0  # acknowledged, not given back


async def test_the_runner_uses_a_pool_it_is_given(
    settings: Settings, bus: TestBus, migrated: str, database_url: str
) -> None:
    tap = await bus.tap(bus.topology.replies)
    adapters = example_adapters(retry=FAST_RETRY)
    await declare_work_queues(bus, adapters)
    pool = await create_pool(settings)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(run_adapters(settings, adapters, stop, pool))
        await send(bus, ReleaseStock(order_id="o1"), "cmd-1", "o1")
        await bus.drain(tap, 1)
        stop.set()
        await asyncio.wait_for(task, 30)
        # Still open: the caller owns it.
        assert await pool.fetchval("SELECT count(*) FROM adapter_command") == 1
    finally:
        await pool.close()


# -- the command log port, on both adapters ----------------------------------------------


def reply(message_id: str, body: bytes = b'{"order_id": "o1"}') -> OutboxMessage:
    return OutboxMessage(
        message_id=message_id,
        message_type="inventory.stock_released.v1",
        exchange="x.bus.replies",
        routing_key="inventory.stock_released.v1",
        body=body,
        content_type="application/json",
        headers={"ce-id": message_id, "ce-time": "2024-05-01T12:00:00Z"},
        correlation_id="o1",
    )


@pytest.fixture(params=["memory", "postgres"])
async def command_log(
    request: pytest.FixtureRequest, settings: Settings, migrated: str
) -> AsyncIterator[CommandLog]:
    if request.param == "memory":
        yield InMemoryCommandLog()
        return
    pool = await create_pool(settings)
    try:
        yield PostgresCommandLog(pool)
    finally:
        await pool.close()


async def test_a_command_log_keeps_the_first_reply(command_log: CommandLog) -> None:
    first = CommandRecord("inventory", "cmd-1", "inventory.release_stock.v1", "o1", reply("r1"))
    later = CommandRecord(
        "inventory", "cmd-1", "inventory.release_stock.v1", "o1", reply("r1", b'{"later": 1}')
    )

    assert await command_log.find("inventory", "cmd-1") is None
    assert (await command_log.record(first)).inserted
    assert await command_log.find("inventory", "cmd-1") == first.reply
    recorded = await command_log.record(later)
    assert not recorded.inserted
    assert recorded.reply == first.reply
    assert await command_log.find("payments", "cmd-1") is None  # keyed by adapter too


async def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    port = 1  # nothing listens there
    pool = await asyncpg.create_pool(
        f"postgresql://root@127.0.0.1:{port}/test", min_size=0, max_size=1, timeout=2
    )
    log = PostgresCommandLog(pool)
    try:
        with pytest.raises(StoreUnavailableError):
            await log.find("inventory", str(uuid.uuid4()))
        with pytest.raises(StoreUnavailableError):
            await log.record(
                CommandRecord("inventory", "c", "inventory.release_stock.v1", None, reply("r"))
            )
    finally:
        await pool.close()
