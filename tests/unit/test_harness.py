"""The public test harness itself: the in-memory bus routes and refuses as the broker does,
the clock fires deadlines in order, scripts answer in place of adapters."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import ClassVar

import pytest

from bus_orchestrator.adapters import Adapter, CommandContext, RetryPolicy
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import Command, Event, Reply, SagaDefinition, SagaStatus, Step
from bus_orchestrator.core.decide import TIMER_MESSAGE_TYPE
from bus_orchestrator.core.lifecycle import StartedBy, cancel_event
from bus_orchestrator.core.state import StepStatus
from bus_orchestrator.errors import DefinitionError, TransientAdapterError
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.testing import DEFAULT_START, HarnessError, SagaHarness
from bus_orchestrator.testing.bus import InMemoryBus, topic_matches
from contracts import (
    ChargePayment,
    OrderCancelled,
    OrderToCashCancelRequested,
    PaymentCharged,
    PaymentDeclined,
    StockReserved,
)
from example import create_app
from tests.integration.harness import SCENARIOS, order


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("orders.order_placed.v1", "orders.order_placed.v1", True),
        ("orders.order_placed.v1", "orders.order_placed.v2", False),
        ("orders.*.v1", "orders.order_placed.v1", True),
        ("orders.*", "orders.order_placed.v1", False),
        ("orders.#", "orders.order_placed.v1", True),
        ("#", "anything.at.all", True),
        ("#.v1", "v1", True),
        ("orders.#.v1", "orders.v1", True),
        ("*", "", True),
    ],
)
def test_topic_bindings_match_as_amqp_does(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_the_example_runs_on_its_own_adapters(scenario: str) -> None:
    changes, status, commands = SCENARIOS[scenario]
    harness = SagaHarness(create_app())
    started = await harness.publish(order("o-1", **changes))
    await harness.run_until_idle()
    saga = await harness.saga("o-1")
    assert saga.status is status
    assert harness.command_types() == commands
    # the replies came through the adapter kit: one record per command in its log
    assert len(harness.command_log.records) == len(commands)
    assert {c.correlation_id for c in harness.commands} == {"o-1"}
    # its end went out on bus.events, where bus.lifecycle keeps it: nothing is unroutable
    [ended] = harness.ended()
    assert ended.message_type == f"saga.order_to_cash.{status}.v1"
    assert (ended.saga_id, ended.correlation_id, ended.status) == (saga.saga_id, "o-1", status)
    assert ended.reason == saga.failure
    assert ended.started_by == StartedBy(message_id=started, correlation_id=None)
    assert harness.dead_letters == [] and harness.unroutable == []


async def test_a_script_answers_instead_of_the_adapter() -> None:
    harness = SagaHarness(create_app())
    asked: list[ChargePayment] = []

    def decline(command: ChargePayment) -> PaymentDeclined:
        asked.append(command)
        return PaymentDeclined(order_id=command.order_id, reason="scripted")

    harness.reply(ChargePayment, decline)
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    saga = await harness.saga("o-1")
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.failure is not None and "scripted" in saga.failure
    assert [c.order_id for c in asked] == ["o-1"]
    # the payments adapter never saw the charge; inventory reserved and released
    logged = sorted(r.command_type for r in harness.command_log.records.values())
    assert logged == ["inventory.release_stock.v1", "inventory.reserve_stock.v1"]
    release = harness.commands[-1]
    assert release.message_type == "inventory.release_stock.v1"
    assert release.compensation and release.compensates == harness.commands[0].message_id


async def test_an_unanswered_command_times_out_when_the_clock_moves() -> None:
    harness = SagaHarness(create_app())
    harness.reply(ChargePayment)  # never answered
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    assert (await harness.steps("o-1"))["charge_payment"] is StepStatus.RUNNING
    await harness.advance(timedelta(seconds=29))
    assert harness.command_types().count("payments.charge_payment.v1") == 1
    # one minute: the first deadline resends the charge, the second gives up on it
    await harness.advance(timedelta(seconds=31))
    saga = await harness.saga("o-1")
    assert harness.command_types().count("payments.charge_payment.v1") == 2
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.failure == "step charge_payment timed out"
    timers = [h.at for h in await harness.history("o-1") if h.message_type == TIMER_MESSAGE_TYPE]
    # each fired at its own deadline, 30s after the charge was sent, then resent
    assert [t - DEFAULT_START for t in timers] == [timedelta(seconds=30), timedelta(seconds=60)]


async def test_without_adapters_commands_are_unroutable() -> None:
    harness = SagaHarness(create_app(), adapters=False)
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    [reserve] = harness.unroutable
    assert reserve.message_type == "inventory.reserve_stock.v1"  # type: ignore[union-attr]
    assert harness.bus.unroutable[0].exchange == harness.topology.commands


async def test_an_event_no_saga_binds_is_unroutable_not_lost() -> None:
    class Unrelated(Event):
        message_type: ClassVar[str] = "tests.unrelated.v1"

    harness = SagaHarness(create_app())
    await harness.publish(Unrelated())
    await harness.run_until_idle()
    assert harness.unroutable == [b"{}"]  # the app does not know the type: kept as bytes


async def test_bad_input_and_a_failing_script_are_dead_lettered_with_reasons() -> None:
    harness = SagaHarness(create_app())
    harness.reply(ChargePayment, lambda command: 1 / 0)  # type: ignore[arg-type,return-value]
    bad = OutboxMessage(
        "m-1",
        "orders.order_placed.v1",
        harness.topology.events,
        "orders.order_placed.v1",
        b"{}",
        "application/json",
    )
    await harness.bus.publish(bad)
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    reasons = [(d.message_type, d.reason, d.by) for d in harness.dead_letters]
    assert reasons == [
        ("orders.order_placed.v1", "not-a-cloudevent", harness.topology.queue("coordinator")),
        ("payments.charge_payment.v1", "handler-error", harness.topology.queue("scripted")),
    ]
    assert "ZeroDivisionError" in harness.dead_letters[1].detail
    # the dead letter itself went out on bus.dead, reason in its headers
    dead = [m for m in harness.bus.published if m.exchange == harness.topology.dead]
    assert [m.headers["x-dead-reason"] for m in dead] == ["not-a-cloudevent", "handler-error"]


class Ping(Event):
    message_type: ClassVar[str] = "tests.ping.v1"
    key: str


class Knock(Command):
    message_type: ClassVar[str] = "tests.knock.v1"


class Knocked(Reply):
    message_type: ClassVar[str] = "tests.knocked.v1"


def knock_app(adapter: Adapter) -> App:
    saga = SagaDefinition(
        name="knock",
        data_model=Ping,
        started_by=Ping,
        correlate=lambda e: e.key,
        initial_data=lambda e: e,
        steps=(Step(name="knock", command=lambda d: Knock(), succeeds_on=(Knocked,)),),
    )
    return App("knock", sagas=[saga], adapters=[adapter])


async def test_a_delivery_requeued_past_the_limit_is_dead_lettered() -> None:
    adapter = Adapter("door", retry=RetryPolicy(attempts=2, jitter=0))

    @adapter.handles(Knock, replies=(Knocked,))
    async def knock(command: Knock, ctx: CommandContext) -> Knocked:
        raise TransientAdapterError("nobody home")

    harness = SagaHarness(knock_app(adapter), settings=Settings(delivery_limit=3))
    await harness.publish(Ping(key="k"))
    await harness.run_until_idle()
    [dead] = harness.dead_letters
    assert (dead.message_type, dead.reason, dead.by) == (
        "tests.knock.v1",
        "delivery-limit",
        harness.topology.queue("adapter.door"),
    )
    assert (await harness.saga("k")).status is SagaStatus.RUNNING  # its timer takes over


async def test_the_harness_says_what_it_cannot_find() -> None:
    harness = SagaHarness(create_app())
    with pytest.raises(HarnessError, match="0 sagas for 'nope'"):
        await harness.saga("nope")
    with pytest.raises(DefinitionError, match="does not know"):
        harness.reply(Knock)
    # a cancel with no saga is parked, then expires: its history is there all the same
    await harness.publish(OrderCancelled(order_id="o-9"))
    await harness.advance(timedelta(hours=2))
    assert [h.outcome for h in await harness.history("o-9")] == ["parked", "dead-lettered"]
    [dead] = harness.dead_letters
    assert (dead.reason, dead.by) == ("expired", "coordinator")


async def test_a_reply_published_by_the_test_reaches_its_saga() -> None:
    harness = SagaHarness(create_app(), adapters=False)
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    [reserve] = harness.bus.unroutable
    await harness.publish(
        StockReserved(order_id="o-1", reservation_id="r-1"),
        correlation_id="o-1",
        causation_id=reserve.message_id,
    )
    await harness.run_until_idle()
    assert (await harness.steps("o-1"))["reserve_stock"] is StepStatus.SUCCEEDED


async def test_a_command_the_app_cannot_read_is_a_clear_error() -> None:
    adapter = Adapter("door")

    @adapter.handles(Knock, replies=(Knocked,))
    async def knock(command: Knock, ctx: CommandContext) -> Knocked:
        return Knocked()

    without_adapter = App("knock", sagas=knock_app(adapter).sagas)  # Knock is undeclared
    harness = SagaHarness(without_adapter)
    await harness.publish(Ping(key="k"))
    await harness.run_until_idle()
    assert len(harness.bus.unroutable) == 1
    with pytest.raises(HarnessError, match=r"declare it with Step\(sends=...\)"):
        _ = harness.commands


def test_a_fresh_bus_has_seen_nothing() -> None:
    bus = InMemoryBus()
    assert (bus.published, bus.dead_letters, bus.unroutable, bus.pending) == ([], [], [], 0)
    assert bus.lifecycle == []


async def test_a_cancel_request_compensates_a_running_saga_once_its_step_answers() -> None:
    harness = SagaHarness(create_app())
    harness.reply(ChargePayment)  # left unanswered for now
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    await harness.publish(OrderToCashCancelRequested(correlation_id="o-1", reason="changed mind"))
    await harness.run_until_idle()
    # the charge is in flight: nothing more goes out until it is answered
    saga = await harness.saga("o-1")
    assert (saga.status, saga.cancel_reason) == (SagaStatus.RUNNING, "changed mind")
    assert harness.ended() == []
    charge = harness.commands[-1]
    await harness.answer(
        charge,
        PaymentCharged(order_id="o-1", payment_id="p-1", amount=Decimal("10.00"), currency="EUR"),
    )
    await harness.run_until_idle()
    saga = await harness.saga("o-1")
    assert saga.status is SagaStatus.COMPENSATED
    assert harness.command_types() == [
        "inventory.reserve_stock.v1",
        "payments.charge_payment.v1",
        "payments.refund_payment.v1",
        "inventory.release_stock.v1",
    ]
    [ended] = harness.ended("o-1")
    assert (ended.message_type, ended.reason) == (
        "saga.order_to_cash.compensated.v1",
        "changed mind",
    )
    # a second request finds the saga finished: ignored, and no second end event
    await harness.publish(OrderToCashCancelRequested(correlation_id="o-1", reason="again"))
    await harness.run_until_idle()
    assert len(harness.ended()) == 1
    assert (await harness.history("o-1"))[-1].outcome == "ignored"
    assert harness.dead_letters == [] and harness.unroutable == []


async def test_a_cancel_request_for_no_saga_waits_then_expires_like_any_early_event() -> None:
    harness = SagaHarness(create_app())
    await harness.publish(OrderToCashCancelRequested(correlation_id="o-9", reason="who?"))
    await harness.run_until_idle()
    assert [h.outcome for h in await harness.history("o-9")] == ["parked"]
    await harness.advance(timedelta(seconds=harness.settings.park_ttl_seconds + 60))
    assert [h.outcome for h in await harness.history("o-9")] == ["parked", "dead-lettered"]
    [dead] = harness.dead_letters
    assert (dead.message_type, dead.reason) == ("saga.order_to_cash.cancel_requested.v1", "expired")
    assert harness.unroutable == [] and harness.ended() == []


async def test_a_cancel_request_that_overtook_its_order_cancels_the_saga_when_it_starts() -> None:
    harness = SagaHarness(create_app())
    await harness.publish(OrderToCashCancelRequested(correlation_id="o-1", reason="early"))
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    saga = await harness.saga("o-1")
    assert (saga.status, saga.failure) == (SagaStatus.COMPENSATED, "early")
    [ended] = harness.ended("o-1")
    assert ended.status == "compensated"


async def test_a_cancel_request_for_a_saga_type_nobody_runs_is_unroutable() -> None:
    harness = SagaHarness(create_app())
    await harness.publish(cancel_event("invoicing")(correlation_id="i-1", reason="none"))
    await harness.run_until_idle()
    assert len(harness.bus.unroutable) == 1  # bus.lifecycle keeps end events only
    assert harness.bus.unroutable[0].routing_key == "saga.invoicing.cancel_requested.v1"
    assert harness.bus.lifecycle == []
