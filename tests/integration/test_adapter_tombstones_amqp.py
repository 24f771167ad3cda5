"""A compensation that overtakes its command, on the real broker and Postgres (defect 9).

``run_adapters`` with the payments example over its fake gateway: a ``RefundPayment``
(CloudEvents ``compensates`` = the charge's id) that reaches the adapter before its
``ChargePayment`` must leave the gateway uncharged, and one that comes while the charge is
under way, even across a crash, must undo it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from adapters import FakePaymentGateway, payments_adapter
from bus_orchestrator.adapters import (
    Adapter,
    CommandContext,
    PostgresCommandLog,
    RetryPolicy,
    reply_id_for,
)
from bus_orchestrator.adapters.runner import run_adapters, work_queue_name
from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Command
from bus_orchestrator.store.migrate import migrate
from bus_orchestrator.store.postgres import create_pool
from bus_orchestrator.transport import codec
from bus_orchestrator.transport.publisher import AmqpPublisher
from contracts import (
    REGISTRY,
    ChargePayment,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
)
from tests.conftest import TestBus

pytestmark = pytest.mark.integration

FAST_RETRY = RetryPolicy(attempts=5, initial_backoff=0.01, max_backoff=0.05, jitter=0.01)
CHARGE_ID, REFUND_ID = "cmd-charge-1", "cmd-refund-1"
CHARGE = ChargePayment(order_id="o1", customer_id="c1", amount=Decimal("12.50"), currency="EUR")
REFUND = RefundPayment(order_id="o1", amount=Decimal("12.50"), currency="EUR")
PROCESSOR_LOG = "bus_orchestrator.adapters.processor"


@pytest.fixture
async def migrated(database_url: str, db_schema: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, db_schema)
    finally:
        await conn.close()
    return db_schema


async def declare_work_queues(bus: TestBus, adapters: list[Adapter]) -> None:
    """Declared up front, as the runner declares them, so no command sent early is lost."""
    channel = await bus.channel()
    for adapter in adapters:
        queue = bus.topology.queue(work_queue_name(adapter))
        if queue not in bus.queues:
            bus.queues.append(queue)
        await bus.topology.declare_work_queue(
            channel,
            queue,
            [(bus.topology.commands, command_type) for command_type in adapter.command_types],
        )
    await channel.close()


async def send(
    bus: TestBus, command: Command, command_id: str, compensates: str | None = None
) -> None:
    message = codec.encode(
        message_id=command_id,
        payload=command,
        exchange=bus.topology.commands,
        source="urn:test:coordinator",
        time=datetime.now(UTC),
        correlation_id="o1",
        causation_id=f"cause-of-{command_id}",
        compensates=compensates,
    )
    channel = await bus.channel()
    await AmqpPublisher(channel).publish(message)
    await channel.close()


def by_cause(messages: list[Any]) -> dict[str, Any]:
    return {message.headers["ce-causationid"]: message for message in messages}


def data(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(message.body)
    return result


class Running:
    """``run_adapters`` over the given adapters, in a task, until ``shut_down``."""

    def __init__(self, settings: Settings, adapters: list[Adapter], grace: float = 30.0) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_adapters(settings, adapters, self.stop, grace=grace))

    async def shut_down(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
def runners() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for runner in started:
        runner.stop.set()


async def start(
    runners: list[Running],
    settings: Settings,
    bus: TestBus,
    adapters: list[Adapter],
    grace: float = 30.0,
) -> Running:
    await declare_work_queues(bus, adapters)
    runner = Running(settings, adapters, grace)
    runners.append(runner)
    return runner


async def logged(caplog: pytest.LogCaptureFixture, text: str, within: float = 10.0) -> None:
    """Wait until a log line containing ``text`` was written; fails on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not any(text in message for message in caplog.messages):
        if loop.time() > deadline:
            raise AssertionError(f"no log line with {text!r}")
        await asyncio.sleep(0.02)


def gated_payments(
    gateway: FakePaymentGateway,
    gate: asyncio.Event,
    entered: asyncio.Event,
    calls: list[asyncio.Task[Any]] | None = None,
) -> Adapter:
    """The payments adapter, whose charge waits at ``gate`` on its way to the gateway."""
    adapter = Adapter("payments", REGISTRY, retry=FAST_RETRY)

    @adapter.handles(
        ChargePayment,
        replies=(PaymentCharged, PaymentDeclined),
        refuse=lambda command, reason: PaymentDeclined(order_id=command.order_id, reason=reason),
    )
    async def charge(command: ChargePayment, ctx: CommandContext) -> PaymentCharged:
        if calls is not None:
            task = asyncio.current_task()
            assert task is not None
            calls.append(task)
        entered.set()
        await gate.wait()
        result = gateway.charge(ctx.idempotency_key, command.order_id, command.amount, "EUR")
        assert result.payment_id is not None
        return PaymentCharged(
            order_id=command.order_id,
            payment_id=result.payment_id,
            amount=command.amount,
            currency="EUR",
        )

    @adapter.handles(RefundPayment, replies=(PaymentRefunded,))
    async def refund(command: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        refunded = gateway.refund(ctx.idempotency_key, command.order_id, command.payment_id)
        return PaymentRefunded(order_id=command.order_id, payment_id=refunded)

    return adapter


async def test_a_refund_that_overtakes_its_charge_leaves_the_charge_refused(
    settings: Settings, bus: TestBus, migrated: str, runners: list[Running]
) -> None:
    gateway = FakePaymentGateway()
    await start(runners, settings, bus, [payments_adapter(gateway, retry=FAST_RETRY)])
    tap = await bus.tap(bus.topology.replies)

    await send(bus, REFUND, REFUND_ID, compensates=CHARGE_ID)
    [refunded] = await bus.drain(tap, 1)
    await send(bus, CHARGE, CHARGE_ID)
    [declined] = await bus.drain(tap, 1)
    await send(bus, CHARGE, CHARGE_ID)  # resent: still refused, the same reply
    [again] = await bus.drain(tap, 1)

    assert gateway.charges == {}  # the gateway never saw the charge
    assert refunded.type == PaymentRefunded.message_type
    assert data(refunded)["payment_id"] is None
    assert declined.type == declined.routing_key == PaymentDeclined.message_type
    assert declined.message_id == reply_id_for(CHARGE_ID)
    assert declined.headers["ce-causationid"] == CHARGE_ID
    assert data(declined)["reason"] == f"compensated before it arrived (by command {REFUND_ID})"
    assert (again.message_id, again.body) == (declined.message_id, declined.body)
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": migrated})
    try:
        row = await conn.fetchrow("SELECT * FROM adapter_claim WHERE command_id = $1", CHARGE_ID)
    finally:
        await conn.close()
    assert row is not None
    assert row["compensated_by"] == REFUND_ID
    assert row["refused_at"] is not None


async def test_a_refund_after_its_charge_undoes_it(
    settings: Settings, bus: TestBus, migrated: str, runners: list[Running]
) -> None:
    gateway = FakePaymentGateway()
    await start(runners, settings, bus, [payments_adapter(gateway, retry=FAST_RETRY)])
    tap = await bus.tap(bus.topology.replies)

    await send(bus, CHARGE, CHARGE_ID)
    [charged] = await bus.drain(tap, 1)
    await send(bus, REFUND, REFUND_ID, compensates=CHARGE_ID)
    [refunded] = await bus.drain(tap, 1)

    assert charged.type == PaymentCharged.message_type
    assert data(refunded)["payment_id"] == data(charged)["payment_id"] is not None
    assert [held.refunded for held in gateway.charges.values()] == [True]


async def test_a_refund_waits_for_its_charge_under_way_then_undoes_it(
    settings: Settings,
    bus: TestBus,
    migrated: str,
    runners: list[Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, PROCESSOR_LOG)
    gateway, gate, entered = FakePaymentGateway(), asyncio.Event(), asyncio.Event()
    await start(runners, settings, bus, [gated_payments(gateway, gate, entered)])
    tap = await bus.tap(bus.topology.replies)

    await send(bus, CHARGE, CHARGE_ID)
    await asyncio.wait_for(entered.wait(), 10)  # the charge is on its way to the gateway
    await send(bus, REFUND, REFUND_ID, compensates=CHARGE_ID)
    await logged(caplog, f"compensation {REFUND_ID} waits for command {CHARGE_ID}")
    assert gateway.refunds == {}  # held, not run
    gate.set()
    replies = by_cause(await bus.drain(tap, 2))

    charged, refunded = replies[CHARGE_ID], replies[REFUND_ID]
    assert charged.type == PaymentCharged.message_type
    assert data(refunded)["payment_id"] == data(charged)["payment_id"] is not None
    assert [held.refunded for held in gateway.charges.values()] == [True]


async def test_a_charge_cut_off_mid_call_is_finished_by_its_redelivery_then_refunded(
    settings: Settings,
    bus: TestBus,
    migrated: str,
    runners: list[Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first process dies during the gateway call, with the refund held behind it."""
    caplog.set_level(logging.INFO, PROCESSOR_LOG)
    gateway, gate, entered = FakePaymentGateway(), asyncio.Event(), asyncio.Event()
    calls: list[asyncio.Task[Any]] = []
    first = await start(
        runners, settings, bus, [gated_payments(gateway, gate, entered, calls)], grace=0.2
    )
    tap = await bus.tap(bus.topology.replies)
    await send(bus, CHARGE, CHARGE_ID)
    await asyncio.wait_for(entered.wait(), 10)
    await send(bus, REFUND, REFUND_ID, compensates=CHARGE_ID)
    await logged(caplog, f"compensation {REFUND_ID} waits for command {CHARGE_ID}")

    await first.shut_down()  # its connection is closed: the broker takes both back
    for call in calls:
        call.cancel()  # the gateway call never returns, as if the process were killed
    await start(runners, settings, bus, [payments_adapter(gateway, retry=FAST_RETRY)])
    replies = by_cause(await bus.drain(tap, 2, within=30))

    charged, refunded = replies[CHARGE_ID], replies[REFUND_ID]
    assert charged.type == PaymentCharged.message_type
    assert data(refunded)["payment_id"] == data(charged)["payment_id"] is not None
    assert [held.refunded for held in gateway.charges.values()] == [True]


async def test_a_claim_left_by_a_dead_delivery_holds_the_refund_until_the_redelivery(
    settings: Settings,
    bus: TestBus,
    migrated: str,
    runners: list[Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, PROCESSOR_LOG)
    pool = await create_pool(settings)
    try:
        # What a delivery of the charge that died (kill -9) after claiming it leaves behind.
        await PostgresCommandLog(pool).claim("payments", CHARGE_ID, timedelta(minutes=5))
    finally:
        await pool.close()
    gateway = FakePaymentGateway()
    await start(runners, settings, bus, [payments_adapter(gateway, retry=FAST_RETRY)])
    tap = await bus.tap(bus.topology.replies)

    await send(bus, REFUND, REFUND_ID, compensates=CHARGE_ID)
    await logged(caplog, f"compensation {REFUND_ID} waits for command {CHARGE_ID}")
    await send(bus, CHARGE, CHARGE_ID)  # the redelivery of the dead one
    replies = by_cause(await bus.drain(tap, 2))

    assert data(replies[REFUND_ID])["payment_id"] == data(replies[CHARGE_ID])["payment_id"]
    assert [held.refunded for held in gateway.charges.values()] == [True]


async def test_a_refund_handled_by_another_adapter_still_refuses_the_late_charge(
    settings: Settings, bus: TestBus, migrated: str, runners: list[Running]
) -> None:
    gateway = FakePaymentGateway()
    refunds = Adapter("refunds", REGISTRY)

    @refunds.handles(RefundPayment, replies=(PaymentRefunded,))
    async def refund(command: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        refunded = gateway.refund(ctx.idempotency_key, command.order_id, command.payment_id)
        return PaymentRefunded(order_id=command.order_id, payment_id=refunded)

    charges = Adapter("charges", REGISTRY)

    @charges.handles(
        ChargePayment,
        replies=(PaymentCharged, PaymentDeclined),
        refuse=lambda command, reason: PaymentDeclined(order_id=command.order_id, reason=reason),
    )
    async def charge(command: ChargePayment, ctx: CommandContext) -> PaymentCharged:
        result = gateway.charge(ctx.idempotency_key, command.order_id, command.amount, "EUR")
        assert result.payment_id is not None
        return PaymentCharged(
            order_id=command.order_id,
            payment_id=result.payment_id,
            amount=command.amount,
            currency="EUR",
        )

    await start(runners, settings, bus, [refunds, charges])
    tap = await bus.tap(bus.topology.replies)

    await send(bus, REFUND, REFUND_ID, compensates=CHARGE_ID)
    await bus.drain(tap, 1)
    await send(bus, CHARGE, CHARGE_ID)
    [declined] = await bus.drain(tap, 1)

    assert declined.type == PaymentDeclined.message_type
    assert gateway.charges == {}


async def test_the_adapters_process_purges_commands_past_their_retention(
    settings: Settings, bus: TestBus, migrated: str, runners: list[Running]
) -> None:
    pool = await create_pool(settings)
    try:
        await pool.execute(
            "INSERT INTO adapter_command (adapter, command_id, command_type, reply_id,"
            " reply_type, reply, processed_at)"
            " VALUES ('payments', 'old', 't', 'r', 't', '{}'::jsonb, now() - interval '2 days'),"
            "        ('payments', 'new', 't', 'r', 't', '{}'::jsonb, now())"
        )
        await pool.execute(
            "INSERT INTO adapter_claim (command_id, adapter, compensated_by, created_at)"
            " VALUES ('f-old', 'refunds', 'k-old', now() - interval '2 days')"
        )
        quick = settings.model_copy(
            update={"command_log_retention_seconds": 86_400.0, "housekeeping_seconds": 0.05}
        )
        await start(runners, quick, bus, [payments_adapter(FakePaymentGateway())])

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await pool.fetchval("SELECT count(*) FROM adapter_claim") > 0:
            assert loop.time() < deadline, "the old tombstone was not purged"
            await asyncio.sleep(0.05)
        left = await pool.fetch("SELECT command_id FROM adapter_command")
    finally:
        await pool.close()

    assert [row["command_id"] for row in left] == ["new"]
