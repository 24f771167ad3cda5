"""Order-to-cash through the public test harness: every path, cancellation, timeouts and
resends, as the coordinator runs them (codec, store, timers), with scripted replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from bus_orchestrator.app import App
from bus_orchestrator.core import Command, Phase, Reply, SagaStatus, StepStatus
from bus_orchestrator.testing import DEFAULT_START, SagaHarness
from contracts import (
    ChargePayment,
    CreateShipment,
    OrderCancelled,
    RefundPayment,
    ReleaseStock,
    ReserveStock,
)
from sagas import order_to_cash
from tests.unit.test_decide import (
    CHARGED,
    DECLINED,
    OID,
    REFUNDED,
    REJECTED,
    RELEASED,
    RESERVED,
    SHIPPED,
    UNAVAILABLE,
    placed,
)

RESERVE, RELEASE = "inventory.reserve_stock.v1", "inventory.release_stock.v1"
CHARGE, REFUND = "payments.charge_payment.v1", "payments.refund_payment.v1"
SHIP = "shipping.create_shipment.v1"


@pytest.fixture
def harness() -> SagaHarness:
    """Order-to-cash alone, no adapters: each test scripts the replies it needs."""
    return SagaHarness(App("order-to-cash", sagas=[order_to_cash.build(timedelta(seconds=30))]))


def script(harness: SagaHarness, answers: dict[type[Command], Reply]) -> None:
    for command, reply in answers.items():
        harness.reply(command, lambda _, reply=reply: reply)


async def started(harness: SagaHarness, *answers: Reply) -> None:
    """Start the order and answer its first commands, one by one, with ``answers``."""
    await harness.publish(placed(), message_id="evt-1")
    await harness.run_until_idle()
    for answer in answers:
        await harness.answer(harness.commands[-1], answer)
        await harness.run_until_idle()


async def inbound_outcomes(harness: SagaHarness) -> list[str]:
    return [h.outcome for h in await harness.history(OID) if h.direction == "in"]


# -- every path, table-driven -----------------------------------------------------------


@dataclass(frozen=True)
class Path:
    name: str
    answers: dict[type[Command], Reply]
    status: SagaStatus
    sent: tuple[str, ...]
    steps: dict[str, StepStatus] = field(default_factory=dict)


PATHS = [
    Path(
        "happy",
        {ReserveStock: RESERVED, ChargePayment: CHARGED, CreateShipment: SHIPPED},
        SagaStatus.COMPLETED,
        (RESERVE, CHARGE, SHIP),
        {
            "reserve_stock": StepStatus.SUCCEEDED,
            "charge_payment": StepStatus.SUCCEEDED,
            "create_shipment": StepStatus.SUCCEEDED,
        },
    ),
    Path(
        "out of stock: nothing to undo",
        {ReserveStock: UNAVAILABLE},
        SagaStatus.COMPENSATED,
        (RESERVE,),
        {"reserve_stock": StepStatus.FAILED},
    ),
    Path(
        "declined: release the stock",
        {ReserveStock: RESERVED, ChargePayment: DECLINED, ReleaseStock: RELEASED},
        SagaStatus.COMPENSATED,
        (RESERVE, CHARGE, RELEASE),
        {"reserve_stock": StepStatus.COMPENSATED, "charge_payment": StepStatus.FAILED},
    ),
    Path(
        "shipping rejected: refund, then release (reverse order)",
        {
            ReserveStock: RESERVED,
            ChargePayment: CHARGED,
            CreateShipment: REJECTED,
            RefundPayment: REFUNDED,
            ReleaseStock: RELEASED,
        },
        SagaStatus.COMPENSATED,
        (RESERVE, CHARGE, SHIP, REFUND, RELEASE),
        {
            "reserve_stock": StepStatus.COMPENSATED,
            "charge_payment": StepStatus.COMPENSATED,
            "create_shipment": StepStatus.FAILED,
        },
    ),
]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
async def test_paths(harness: SagaHarness, path: Path) -> None:
    script(harness, path.answers)
    await harness.publish(placed())
    await harness.run_until_idle()
    saga = await harness.saga(OID)
    assert saga.status is path.status
    assert tuple(harness.command_types()) == path.sent
    assert await harness.steps(OID) == path.steps
    assert (saga.pending_command_id, saga.deadline) == (None, None)
    # one commit per message, each advancing the saga by one version
    assert await inbound_outcomes(harness) == ["started"] + ["advanced"] * len(path.sent)
    assert saga.version == len(path.sent) + 1
    # its one end event, kept by bus.lifecycle: nothing went unroutable
    [ended] = harness.ended(OID)
    assert ended.message_type == f"saga.order_to_cash.{path.status}.v1"
    assert (ended.saga_id, ended.reason) == (saga.saga_id, saga.failure)
    assert harness.dead_letters == [] and harness.unroutable == []


async def test_the_feedback_loop_carries_reply_data_into_later_commands(
    harness: SagaHarness,
) -> None:
    script(harness, PATHS[3].answers)
    await harness.publish(placed())
    await harness.run_until_idle()
    refund, release = harness.commands[-2:]
    assert isinstance(refund.payload, RefundPayment) and refund.payload.payment_id == "p-1"
    assert isinstance(release.payload, ReleaseStock) and release.payload.reservation_id == "r-1"
    saga = await harness.saga(OID)
    assert saga.failure == (
        "step create_shipment failed: shipping.shipment_rejected.v1: no delivery to ZZ"
    )


async def test_ids_tie_the_messages_together(harness: SagaHarness) -> None:
    await started(harness)
    [reserve] = harness.commands
    saga = await harness.saga(OID)
    assert (reserve.correlation_id, reserve.causation_id) == (OID, "evt-1")
    assert saga.pending_command_id == reserve.message_id
    assert saga.deadline == DEFAULT_START + timedelta(seconds=30)
    # the same order, another run: the same saga id and the same command id
    again = SagaHarness(harness.app)
    await started(again)
    assert (await again.saga(OID)).saga_id == saga.saga_id
    assert again.commands[0].message_id == reserve.message_id


# -- what changes nothing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "answer"),
    [
        ("second start event", {"payload": placed(), "message_id": "evt-2"}),
        (
            "stale reply",
            {"payload": RESERVED, "correlation_id": OID, "causation_id": "some-old-command"},
        ),
        ("reply of another step", {"payload": CHARGED, "correlation_id": OID, "pending": True}),
    ],
)
async def test_ignored_messages_change_nothing(
    harness: SagaHarness, label: str, answer: dict[str, object]
) -> None:
    await started(harness)
    before = await harness.saga(OID)
    if answer.pop("pending", False):
        answer["causation_id"] = before.pending_command_id
    await harness.publish(**answer)  # type: ignore[arg-type]
    await harness.run_until_idle()
    assert await harness.saga(OID) == before, label
    assert await inbound_outcomes(harness) == ["started", "ignored"]
    assert harness.command_types() == [RESERVE]


async def test_replies_and_a_cancel_after_completion_are_ignored(harness: SagaHarness) -> None:
    script(harness, PATHS[0].answers)
    await harness.publish(placed())
    await harness.run_until_idle()
    done = await harness.saga(OID)
    await harness.publish(SHIPPED, correlation_id=OID, causation_id="anything")
    await harness.publish(OrderCancelled(order_id=OID))
    await harness.run_until_idle()
    assert await harness.saga(OID) == done
    assert (await inbound_outcomes(harness))[-2:] == ["ignored", "ignored"]
    assert len(harness.commands) == 3


# -- cancellation ---------------------------------------------------------------------------


async def test_a_cancel_waits_for_the_step_in_flight_then_undoes_it_too(
    harness: SagaHarness,
) -> None:
    await started(harness, RESERVED)
    await harness.publish(OrderCancelled(order_id=OID, reason="changed my mind"))
    await harness.run_until_idle()
    saga = await harness.saga(OID)
    assert saga.status is SagaStatus.RUNNING and saga.cancel_reason
    assert harness.command_types() == [RESERVE, CHARGE]  # nothing sent: the charge is awaited
    await harness.publish(OrderCancelled(order_id=OID))
    await harness.run_until_idle()
    assert (await inbound_outcomes(harness))[-2:] == ["advanced", "ignored"]
    # the charge in flight succeeds after all: it is refunded, then the stock released
    for reply in (CHARGED, REFUNDED, RELEASED):
        await harness.answer(harness.commands[-1], reply)
        await harness.run_until_idle()
    saga = await harness.saga(OID)
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.failure == "order cancelled: changed my mind"
    assert harness.command_types()[-2:] == [REFUND, RELEASE]
    assert [(e.status, e.reason) for e in harness.ended()] == [("compensated", saga.failure)]


async def test_a_cancel_when_the_step_in_flight_fails_undoes_only_earlier_steps(
    harness: SagaHarness,
) -> None:
    await started(harness, RESERVED)
    await harness.publish(OrderCancelled(order_id=OID))
    await harness.run_until_idle()
    await harness.answer(harness.commands[-1], DECLINED)
    await harness.run_until_idle()
    assert harness.command_types() == [RESERVE, CHARGE, RELEASE]
    await harness.answer(harness.commands[-1], RELEASED)
    await harness.run_until_idle()
    assert (await harness.saga(OID)).status is SagaStatus.COMPENSATED
    assert [e.status for e in harness.ended()] == ["compensated"]


async def test_a_timeout_after_a_cancellation_does_not_resend_the_forward_command(
    harness: SagaHarness,
) -> None:
    await started(harness, RESERVED)
    await harness.publish(OrderCancelled(order_id=OID))  # the charge is awaited: wait for it
    await harness.advance(timedelta(seconds=30))
    assert harness.command_types() == [RESERVE, CHARGE, REFUND]
    saga = await harness.saga(OID)
    assert (await harness.steps(OID))["charge_payment"] is StepStatus.COMPENSATING
    assert saga.failure is not None and "cancelled" in saga.failure


# -- timeouts and resends -----------------------------------------------------------------


async def test_a_step_timeout_resends_then_compensates_the_uncertain_step_as_well(
    harness: SagaHarness,
) -> None:
    await started(harness, RESERVED)
    charge = harness.commands[-1]
    await harness.advance(timedelta(seconds=30))
    resent = harness.commands[-1]
    assert resent.message_id == charge.message_id and resent.payload == charge.payload
    assert (await harness.saga(OID)).steps[1].attempts == 2
    await harness.advance(timedelta(seconds=30))
    refund = harness.commands[-1]
    assert refund.message_type == REFUND
    # the refund names the charge it undoes, so the adapter can refuse a late charge
    assert refund.compensates == charge.message_id and refund.compensation
    saga = await harness.saga(OID)
    assert saga.steps[1].status is StepStatus.COMPENSATING
    assert saga.steps[1].error == "no reply to step charge_payment within 30s"
    assert saga.phase is Phase.COMPENSATION
    for reply in (REFUNDED, RELEASED):
        await harness.answer(harness.commands[-1], reply)
        await harness.run_until_idle()
    saga = await harness.saga(OID)
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.failure == "step charge_payment timed out"
    assert [(e.status, e.reason) for e in harness.ended()] == [("compensated", saga.failure)]


async def test_a_compensation_is_resent_then_the_saga_fails_for_an_operator(
    harness: SagaHarness,
) -> None:
    await started(harness, RESERVED, DECLINED)
    reserve, release = harness.commands[0], harness.commands[-1]
    assert release.compensates == reserve.message_id
    await harness.advance(timedelta(seconds=60))
    resends = harness.commands[3:]
    assert [c.message_id for c in resends] == [release.message_id] * 2
    assert [c.compensates for c in resends] == [reserve.message_id] * 2
    saga = await harness.saga(OID)
    assert saga.steps[0].compensation_attempts == 3
    await harness.advance(timedelta(seconds=30))
    assert len(harness.commands) == 5  # no fourth release
    saga = await harness.saga(OID)
    assert saga.status is SagaStatus.FAILED
    assert saga.steps[0].status is StepStatus.COMPENSATION_FAILED
    assert saga.failure and "compensation of step reserve_stock failed" in saga.failure
    [ended] = harness.ended()
    assert (ended.message_type, ended.reason) == ("saga.order_to_cash.failed.v1", saga.failure)
