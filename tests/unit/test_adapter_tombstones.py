"""A compensation that overtakes its command: tombstones in the adapter kit (in memory).

The payments example over its fake gateway: ``RefundPayment`` names the ``ChargePayment``
it undoes in CloudEvents ``compensates``. Whatever the order of arrival, a charge is never
left standing after its refund was answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters import FakePaymentGateway, payments_adapter
from bus_orchestrator.adapters import (
    Adapter,
    CommandContext,
    CommandLogRetention,
    CommandProcessor,
    InMemoryCommandLog,
    Standing,
    reply_id_for,
)
from bus_orchestrator.core.messages import Command, Reply
from bus_orchestrator.errors import (
    BrokerUnavailableError,
    DeadLetterReason,
    DefinitionError,
    PermanentAdapterError,
)
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.transport.codec import RawMessage, encode
from bus_orchestrator.transport.consumer import DeadLetter, Verdict
from contracts import (
    REGISTRY,
    ChargePayment,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
    ReleaseStock,
    ReserveStock,
    StockReleased,
    StockReserved,
)
from contracts.inventory import StockLine

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REPLIES = "p.bus.replies"
CHARGE_ID, REFUND_ID = "cmd-charge-1", "cmd-refund-1"
CHARGE = ChargePayment(
    order_id="order-1", customer_id="c-1", amount=Decimal("12.50"), currency="EUR"
)
REFUND = RefundPayment(order_id="order-1", amount=Decimal("12.50"), currency="EUR")


@dataclass
class FakePublisher:
    published: list[OutboxMessage] = field(default_factory=list)
    down: bool = False

    async def publish(self, message: OutboxMessage) -> None:
        if self.down:
            raise BrokerUnavailableError("broker down")
        self.published.append(message)

    def replies_to(self, command_id: str) -> list[OutboxMessage]:
        return [m for m in self.published if m.headers["ce-causationid"] == command_id]


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Waits:
    """The processor's sleep: records each wait, yields to the loop, and runs a hook."""

    waits: list[float] = field(default_factory=list)
    waiting: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.waiting.set()
        await asyncio.sleep(0)


def delivery(command: Command, command_id: str, compensates: str | None = None) -> RawMessage:
    message = encode(
        message_id=command_id,
        payload=command,
        exchange="p.bus.commands",
        source="urn:test:coordinator",
        time=NOW,
        correlation_id="order-1",
        causation_id="cause-0",
        compensates=compensates,
    )
    return RawMessage(
        body=message.body,
        headers=message.headers,
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.message_type,
        exchange=message.exchange,
        routing_key=message.routing_key,
    )


def charge() -> RawMessage:
    return delivery(CHARGE, CHARGE_ID)


def refund() -> RawMessage:
    return delivery(REFUND, REFUND_ID, compensates=CHARGE_ID)


@dataclass
class Kit:
    gateway: FakePaymentGateway
    log: InMemoryCommandLog
    publisher: FakePublisher
    waits: Waits
    processor: CommandProcessor
    clock: FakeClock


def make_kit(
    adapter: Adapter | None = None,
    *,
    gateway: FakePaymentGateway | None = None,
    log: InMemoryCommandLog | None = None,
    publisher: FakePublisher | None = None,
) -> Kit:
    gateway = gateway or FakePaymentGateway()
    clock = FakeClock()
    log = log or InMemoryCommandLog(clock=clock)
    publisher = publisher or FakePublisher()
    waits = Waits()
    processor = CommandProcessor(
        adapter or payments_adapter(gateway),
        log,
        publisher,
        replies_exchange=REPLIES,
        max_message_bytes=65536,
        clock=lambda: NOW,
        store_backoff=0.25,
        sleep=waits,
    )
    return Kit(gateway, log, publisher, waits, processor, clock)


def data(message: OutboxMessage) -> dict[str, object]:
    result: dict[str, object] = json.loads(message.body)
    return result


# -- the compensation comes first --------------------------------------------------------


async def test_a_command_overtaken_by_its_compensation_is_refused_with_the_failure_reply() -> None:
    kit = make_kit()

    assert await kit.processor.handle(refund()) is Verdict.ACK
    assert await kit.processor.handle(charge()) is Verdict.ACK

    assert kit.gateway.charges == {}  # the gateway never saw the charge
    assert kit.gateway.calls == 1  # the refund alone
    [refunded] = kit.publisher.replies_to(REFUND_ID)
    assert refunded.message_type == PaymentRefunded.message_type
    assert data(refunded)["payment_id"] is None  # nothing was charged, nothing refunded
    [declined] = kit.publisher.replies_to(CHARGE_ID)
    assert declined.message_type == PaymentDeclined.message_type
    assert declined.message_id == reply_id_for(CHARGE_ID)
    assert declined.correlation_id == "order-1"
    assert data(declined) == {
        "order_id": "order-1",
        "reason": f"compensated before it arrived (by command {REFUND_ID})",
    }
    # recorded like any reply
    assert kit.log.records[("payments", CHARGE_ID)].reply == declined


async def test_a_refused_command_redelivered_gets_the_same_reply_and_stays_refused() -> None:
    kit = make_kit()
    await kit.processor.handle(refund())
    await kit.processor.handle(charge())

    assert await kit.processor.handle(charge()) is Verdict.ACK

    first, again = kit.publisher.replies_to(CHARGE_ID)
    assert again == first  # same id, same bytes
    assert kit.gateway.charges == {}


async def test_a_compensation_redelivered_after_its_tombstone_is_answered_from_the_log() -> None:
    kit = make_kit()
    await kit.processor.handle(refund())

    assert await kit.processor.handle(refund()) is Verdict.ACK
    assert await kit.processor.handle(charge()) is Verdict.ACK

    first, again = kit.publisher.replies_to(REFUND_ID)
    assert again == first
    assert kit.gateway.calls == 1
    assert kit.gateway.charges == {}


async def test_a_second_compensation_of_the_same_command_keeps_the_tombstone() -> None:
    kit = make_kit()
    await kit.processor.handle(refund())

    await kit.processor.handle(delivery(REFUND, "cmd-refund-2", compensates=CHARGE_ID))
    await kit.processor.handle(charge())

    assert kit.gateway.charges == {}
    [declined] = kit.publisher.replies_to(CHARGE_ID)
    assert REFUND_ID in str(data(declined)["reason"])  # the first one laid the tombstone


# -- the command comes first ---------------------------------------------------------------


async def test_a_compensation_after_its_command_undoes_it() -> None:
    kit = make_kit()

    assert await kit.processor.handle(charge()) is Verdict.ACK
    assert await kit.processor.handle(refund()) is Verdict.ACK

    [charged] = kit.publisher.replies_to(CHARGE_ID)
    [refunded] = kit.publisher.replies_to(REFUND_ID)
    assert charged.message_type == PaymentCharged.message_type
    assert data(refunded)["payment_id"] == data(charged)["payment_id"] is not None
    [held] = kit.gateway.charges.values()
    assert held.refunded
    assert kit.waits.waits == []  # the charge was settled: no waiting


async def test_a_command_redelivered_after_its_compensation_repeats_its_own_reply() -> None:
    kit = make_kit()
    await kit.processor.handle(charge())
    await kit.processor.handle(refund())

    assert await kit.processor.handle(charge()) is Verdict.ACK
    assert await kit.processor.handle(refund()) is Verdict.ACK

    first, again = kit.publisher.replies_to(CHARGE_ID)
    assert again == first and first.message_type == PaymentCharged.message_type
    assert len(kit.publisher.replies_to(REFUND_ID)) == 2
    assert kit.gateway.calls == 2


# -- the two at once -------------------------------------------------------------------------


def gated_payments(
    gateway: FakePaymentGateway, gate: asyncio.Event, entered: asyncio.Event
) -> Adapter:
    """The payments adapter whose charge waits at ``gate`` before reaching the gateway."""
    adapter = Adapter("payments", REGISTRY)

    @adapter.handles(
        ChargePayment,
        replies=(PaymentCharged, PaymentDeclined),
        refuse=lambda command, reason: PaymentDeclined(order_id=command.order_id, reason=reason),
    )
    async def charge_it(command: ChargePayment, ctx: CommandContext) -> PaymentCharged:
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
    async def refund_it(command: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        refunded = gateway.refund(ctx.idempotency_key, command.order_id, command.payment_id)
        return PaymentRefunded(order_id=command.order_id, payment_id=refunded)

    return adapter


async def test_a_compensation_waits_for_its_command_under_way_then_undoes_it() -> None:
    gateway, gate, entered = FakePaymentGateway(), asyncio.Event(), asyncio.Event()
    kit = make_kit(gated_payments(gateway, gate, entered), gateway=gateway)

    charging = asyncio.create_task(kit.processor.handle(charge()))
    await entered.wait()  # the charge is at the gateway's door
    refunding = asyncio.create_task(kit.processor.handle(refund()))
    await kit.waits.waiting.wait()  # the refund found the claim and holds
    assert not refunding.done() and gateway.refunds == {}
    gate.set()

    assert await charging is Verdict.ACK
    assert await refunding is Verdict.ACK
    [charged] = kit.publisher.replies_to(CHARGE_ID)
    [refunded] = kit.publisher.replies_to(REFUND_ID)
    assert data(refunded)["payment_id"] == data(charged)["payment_id"] is not None
    assert all(held.refunded for held in gateway.charges.values())
    assert kit.waits.waits[0] == 0.25  # held with backoff, not requeued


async def test_a_claim_outlives_a_crash_and_the_redelivery_takes_it_over() -> None:
    kit = make_kit()
    # A delivery of the charge claimed it and died before recording an outcome (kill -9).
    await kit.log.claim("payments", CHARGE_ID, timedelta(minutes=5))

    refunding = asyncio.create_task(kit.processor.handle(refund()))
    await kit.waits.waiting.wait()
    assert not refunding.done()
    assert await kit.processor.handle(charge()) is Verdict.ACK  # the redelivery

    assert await refunding is Verdict.ACK
    [charged] = kit.publisher.replies_to(CHARGE_ID)
    assert charged.message_type == PaymentCharged.message_type
    [refunded] = kit.publisher.replies_to(REFUND_ID)
    assert data(refunded)["payment_id"] == data(charged)["payment_id"]


async def test_a_claim_whose_lease_ran_out_no_longer_holds_the_compensation() -> None:
    kit = make_kit()
    await kit.log.claim("payments", CHARGE_ID, timedelta(minutes=5))
    kit.clock.now += timedelta(minutes=5)  # nothing redelivered the charge meanwhile

    assert await kit.processor.handle(refund()) is Verdict.ACK
    assert kit.waits.waits == []
    assert kit.log.claims[CHARGE_ID].lapsed
    assert await kit.processor.handle(charge()) is Verdict.ACK

    assert kit.gateway.charges == {}
    [declined] = kit.publisher.replies_to(CHARGE_ID)
    assert declined.message_type == PaymentDeclined.message_type


async def test_a_command_dead_lettered_lets_its_waiting_compensation_go_and_is_refused_later() -> (
    None
):
    adapter = Adapter("payments", REGISTRY)
    gate, entered = asyncio.Event(), asyncio.Event()

    @adapter.handles(
        ChargePayment,
        refuse=lambda command, reason: PaymentDeclined(order_id=command.order_id, reason=reason),
    )
    async def charge_it(command: ChargePayment, ctx: CommandContext) -> PaymentCharged:
        entered.set()
        await gate.wait()
        raise PermanentAdapterError("card stolen")

    @adapter.handles(RefundPayment)
    async def refund_it(command: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        return PaymentRefunded(order_id=command.order_id)

    kit = make_kit(adapter)
    charging = asyncio.create_task(kit.processor.handle(charge()))
    await entered.wait()
    refunding = asyncio.create_task(kit.processor.handle(refund()))
    await kit.waits.waiting.wait()
    gate.set()

    assert await charging == DeadLetter(
        DeadLetterReason.HANDLER_ERROR, "PermanentAdapterError: card stolen"
    )
    assert await refunding is Verdict.ACK
    # The charge, resent after all that, does not reach the handler again.
    assert await kit.processor.handle(charge()) is Verdict.ACK
    [declined] = kit.publisher.replies_to(CHARGE_ID)
    assert declined.message_type == PaymentDeclined.message_type


async def test_stopping_while_a_compensation_waits_requeues_it() -> None:
    kit = make_kit()
    await kit.log.claim("payments", CHARGE_ID, timedelta(minutes=5))

    refunding = asyncio.create_task(kit.processor.handle(refund()))
    await kit.waits.waiting.wait()
    kit.processor.stop()

    assert await refunding is Verdict.REQUEUE
    assert kit.publisher.published == [] and kit.gateway.calls == 0


async def test_a_compensation_handled_by_another_adapter_tombstones_the_command() -> None:
    """The refund is some other adapter's business, in another process: one log, two kits."""
    gateway = FakePaymentGateway()
    log = InMemoryCommandLog()
    refunds = Adapter("refunds", REGISTRY)

    @refunds.handles(RefundPayment)
    async def refund_it(command: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        refunded = gateway.refund(ctx.idempotency_key, command.order_id, command.payment_id)
        return PaymentRefunded(order_id=command.order_id, payment_id=refunded)

    refund_kit = make_kit(refunds, log=log)
    charge_kit = make_kit(payments_adapter(gateway), log=log)

    await refund_kit.processor.handle(refund())
    await charge_kit.processor.handle(charge())

    assert gateway.charges == {}
    [declined] = charge_kit.publisher.replies_to(CHARGE_ID)
    assert declined.message_type == PaymentDeclined.message_type


# -- without a declared failure reply ------------------------------------------------------


def inventory_without_refusal(calls: list[str]) -> Adapter:
    adapter = Adapter("inventory", REGISTRY)

    @adapter.handles(ReserveStock, replies=(StockReserved,))
    async def reserve(command: ReserveStock, ctx: CommandContext) -> StockReserved:
        calls.append(ctx.command_id)
        return StockReserved(order_id=command.order_id, reservation_id="r-1")

    @adapter.handles(ReleaseStock, replies=(StockReleased,))
    async def release(command: ReleaseStock, ctx: CommandContext) -> StockReleased:
        calls.append(ctx.command_id)
        return StockReleased(order_id=command.order_id)

    return adapter


async def test_without_a_declared_refusal_the_command_is_acknowledged_unanswered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    kit = make_kit(inventory_without_refusal(calls))
    reserve = ReserveStock(order_id="order-1", items=(StockLine(sku="A", quantity=1),))
    await kit.processor.handle(delivery(ReleaseStock(order_id="order-1"), "rel-1", "rsv-1"))

    with caplog.at_level(logging.WARNING, "bus_orchestrator.adapters.processor"):
        verdict = await kit.processor.handle(delivery(reserve, "rsv-1"))

    assert verdict is Verdict.ACK
    assert calls == ["rel-1"]  # the reservation never reached the handler
    assert kit.publisher.replies_to("rsv-1") == []
    assert "refusing command rsv-1" in caplog.text
    assert "no refusal reply is declared" in caplog.text
    assert kit.log.claims["rsv-1"].refused_at is not None  # the tombstone says so


async def test_a_refusal_that_is_not_a_declared_reply_dead_letters_the_command() -> None:
    adapter = Adapter("payments", REGISTRY)

    @adapter.handles(
        ChargePayment,
        replies=(PaymentCharged,),
        refuse=lambda command, reason: PaymentDeclined(order_id=command.order_id, reason=reason),
    )
    async def charge_it(command: ChargePayment, ctx: CommandContext) -> PaymentCharged:
        raise AssertionError("never called")

    @adapter.handles(RefundPayment)
    async def refund_it(command: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        return PaymentRefunded(order_id=command.order_id)

    kit = make_kit(adapter)
    await kit.processor.handle(refund())

    verdict = await kit.processor.handle(charge())

    assert isinstance(verdict, DeadLetter)
    assert verdict.reason is DeadLetterReason.HANDLER_ERROR
    assert "does not declare" in verdict.detail
    assert kit.publisher.replies_to(CHARGE_ID) == []


def test_the_refusal_is_built_by_the_declared_function() -> None:
    adapter = payments_adapter(FakePaymentGateway())

    reply = adapter.refusal(CHARGE, "too late")

    assert reply == PaymentDeclined(order_id="order-1", reason="too late")
    assert adapter.refuses_with_reply(ChargePayment.message_type)
    assert not adapter.refuses_with_reply(RefundPayment.message_type)


@pytest.mark.parametrize("lease", [timedelta(0), timedelta(seconds=-1)])
def test_a_claim_lease_must_be_positive(lease: timedelta) -> None:
    with pytest.raises(DefinitionError, match="claim_lease"):
        Adapter("payments", REGISTRY, claim_lease=lease)


async def test_the_context_of_a_compensation_names_the_command_it_undoes() -> None:
    seen: list[CommandContext] = []
    adapter = Adapter("payments", REGISTRY)

    @adapter.handles(RefundPayment)
    async def refund_it(command: RefundPayment, ctx: CommandContext) -> Reply:
        seen.append(ctx)
        return PaymentRefunded(order_id=command.order_id)

    kit = make_kit(adapter)
    await kit.processor.handle(refund())

    [ctx] = seen
    assert ctx.compensates == CHARGE_ID
    assert ctx.command_id == REFUND_ID


# -- the standings, one by one ---------------------------------------------------------------


async def test_the_in_memory_log_reports_each_standing() -> None:
    clock = FakeClock()
    log = InMemoryCommandLog(clock=clock)
    lease = timedelta(seconds=30)

    assert (await log.tombstone("p", "k1", "f1")).standing is Standing.FORWARD_UNSEEN
    assert (await log.claim("p", "f1", lease)).standing is Standing.COMPENSATED
    assert (await log.claim("p", "f2", lease)).standing is Standing.CLAIMED
    assert (await log.tombstone("p", "k2", "f2")).standing is Standing.FORWARD_UNDER_WAY
    clock.now += lease
    assert (await log.tombstone("p", "k2", "f2")).standing is Standing.FORWARD_LAPSED


# -- retention -------------------------------------------------------------------------------


async def test_retention_purges_old_rows_batch_after_batch() -> None:
    clock = FakeClock()
    log = InMemoryCommandLog(clock=clock)
    kit = make_kit(log=log)
    await kit.processor.handle(refund())
    await kit.processor.handle(charge())
    clock.now += timedelta(days=31)
    kit2 = make_kit(log=log)
    await kit2.processor.handle(delivery(CHARGE, "cmd-charge-2"))  # a recent one

    removed = await CommandLogRetention(log, retention=timedelta(days=30), interval=60).sweep()

    assert removed == 3  # the refund, the refused charge, and the tombstone
    assert set(log.records) == {("payments", "cmd-charge-2")}
    assert set(log.claims) == {"cmd-charge-2"}


# -- a call that lasts ----------------------------------------------------------------------


async def test_a_long_call_renews_its_claim_so_the_compensation_keeps_waiting() -> None:
    gateway, gate, entered = FakePaymentGateway(), asyncio.Event(), asyncio.Event()
    adapter = gated_payments(gateway, gate, entered)
    adapter.claim_lease = timedelta(milliseconds=30)  # renewed every 10 ms of real time
    kit = make_kit(adapter, gateway=gateway)
    charging = asyncio.create_task(kit.processor.handle(charge()))
    await entered.wait()
    claim = kit.log.claims[CHARGE_ID]
    kit.clock.now += timedelta(hours=1)  # far past the first lease, as the log sees it
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while claim.lease_until is None or claim.lease_until <= kit.clock.now:
        assert loop.time() < deadline, "the claim was never renewed"
        await asyncio.sleep(0.005)

    refunding = asyncio.create_task(kit.processor.handle(refund()))
    await kit.waits.waiting.wait()  # under way, not lapsed
    gate.set()

    assert await charging is Verdict.ACK
    assert await refunding is Verdict.ACK
    assert [held.refunded for held in gateway.charges.values()] == [True]


async def test_a_call_that_lost_its_claim_meanwhile_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway, gate, entered = FakePaymentGateway(), asyncio.Event(), asyncio.Event()
    kit = make_kit(gated_payments(gateway, gate, entered), gateway=gateway)
    charging = asyncio.create_task(kit.processor.handle(charge()))
    await entered.wait()
    kit.clock.now += timedelta(minutes=5)  # the process stalled: no renewal came in time

    assert await kit.processor.handle(refund()) is Verdict.ACK  # the claim lapsed
    with caplog.at_level(logging.ERROR, "bus_orchestrator.adapters.processor"):
        gate.set()
        assert await charging is Verdict.ACK

    assert "lost its claim during its call" in caplog.text
    [charged] = kit.publisher.replies_to(CHARGE_ID)
    assert charged.message_type == PaymentCharged.message_type  # what really happened
