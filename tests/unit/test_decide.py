"""decide(): every transition of the saga state machine, driven through order-to-cash."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bus_orchestrator.core import (
    Decision,
    Inbound,
    Outcome,
    Phase,
    SagaInstance,
    SagaStatus,
    StepStatus,
    TimerFired,
    decide,
)
from bus_orchestrator.core.messages import Reply
from contracts import (
    Address,
    LineItem,
    OrderCancelled,
    OrderPlaced,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    ShipmentCreated,
    ShipmentRejected,
    StockReleased,
    StockReserved,
    StockUnavailable,
)
from sagas import order_to_cash

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SAGA = order_to_cash.build(timedelta(seconds=30))


def placed(order_id: str = "o-1", total: str = "100.00") -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id="c-1",
        items=(LineItem(sku="SKU-1", quantity=2, unit_price=Decimal("50.00")),),
        total=Decimal(total),
        currency="EUR",
        shipping_address=Address(country="DE"),
    )


class Run:
    """Feeds messages through decide() the way the runtime would, keeping the state."""

    def __init__(self) -> None:
        self.instance: SagaInstance | None = None
        self.now = T0
        self.sent: list[str] = []
        self.n = 0

    def feed(self, message: Inbound | TimerFired) -> Decision:
        self.now += timedelta(seconds=1)
        decision = decide(SAGA, self.instance, message, self.now)
        if decision.instance is not None:
            if self.instance is not None:
                assert decision.instance.version == self.instance.version + 1
            self.instance = decision.instance
        self.sent += [o.payload.message_type for o in decision.send]
        return decision

    def event(self, payload: OrderPlaced | OrderCancelled) -> Decision:
        self.n += 1
        return self.feed(Inbound(f"evt-{self.n}", payload, payload.order_id))

    def reply(self, payload: Reply, causation: str | None = None) -> Decision:
        self.n += 1
        assert self.instance is not None
        cause = causation if causation is not None else self.instance.pending_command_id
        return self.feed(Inbound(f"rep-{self.n}", payload, self.instance.correlation_id, cause))

    def timeout(self) -> Decision:
        assert self.instance is not None and self.instance.deadline is not None
        assert self.instance.pending_command_id is not None
        self.now = self.instance.deadline
        return self.feed(
            TimerFired(
                self.instance.saga_id, self.instance.pending_command_id, self.instance.deadline
            )
        )

    @property
    def state(self) -> SagaInstance:
        assert self.instance is not None
        return self.instance

    def step_statuses(self) -> list[tuple[str, StepStatus]]:
        return [(s.name, s.status) for s in self.state.steps]


OID = "o-1"
RESERVED = StockReserved(order_id=OID, reservation_id="r-1")
UNAVAILABLE = StockUnavailable(order_id=OID, skus=("OOS-1",), reason="out of stock")
CHARGED = PaymentCharged(order_id=OID, payment_id="p-1", amount=Decimal("100.00"), currency="EUR")
DECLINED = PaymentDeclined(order_id=OID, reason="limit exceeded")
SHIPPED = ShipmentCreated(order_id=OID, shipment_id="s-1")
REJECTED = ShipmentRejected(order_id=OID, reason="no delivery to ZZ")
RELEASED = StockReleased(order_id=OID, reservation_id="r-1")
REFUNDED = PaymentRefunded(order_id=OID, payment_id="p-1")


@dataclass(frozen=True)
class Path:
    name: str
    replies: tuple[Reply, ...]
    status: SagaStatus
    sent: tuple[str, ...]
    steps: tuple[tuple[str, StepStatus], ...]


PATHS = [
    Path(
        "happy",
        (RESERVED, CHARGED, SHIPPED),
        SagaStatus.COMPLETED,
        ("inventory.reserve_stock.v1", "payments.charge_payment.v1", "shipping.create_shipment.v1"),
        (
            ("reserve_stock", StepStatus.SUCCEEDED),
            ("charge_payment", StepStatus.SUCCEEDED),
            ("create_shipment", StepStatus.SUCCEEDED),
        ),
    ),
    Path(
        "out of stock: nothing to undo",
        (UNAVAILABLE,),
        SagaStatus.COMPENSATED,
        ("inventory.reserve_stock.v1",),
        (("reserve_stock", StepStatus.FAILED),),
    ),
    Path(
        "declined: release the stock",
        (RESERVED, DECLINED, RELEASED),
        SagaStatus.COMPENSATED,
        (
            "inventory.reserve_stock.v1",
            "payments.charge_payment.v1",
            "inventory.release_stock.v1",
        ),
        (("reserve_stock", StepStatus.COMPENSATED), ("charge_payment", StepStatus.FAILED)),
    ),
    Path(
        "shipping rejected: refund, then release (reverse order)",
        (RESERVED, CHARGED, REJECTED, REFUNDED, RELEASED),
        SagaStatus.COMPENSATED,
        (
            "inventory.reserve_stock.v1",
            "payments.charge_payment.v1",
            "shipping.create_shipment.v1",
            "payments.refund_payment.v1",
            "inventory.release_stock.v1",
        ),
        (
            ("reserve_stock", StepStatus.COMPENSATED),
            ("charge_payment", StepStatus.COMPENSATED),
            ("create_shipment", StepStatus.FAILED),
        ),
    ),
]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_paths(path: Path) -> None:
    run = Run()
    assert run.event(placed()).outcome is Outcome.STARTED
    for reply in path.replies:
        assert run.reply(reply).outcome is Outcome.ADVANCED
    assert run.state.status is path.status
    assert tuple(run.sent) == path.sent
    assert tuple(run.step_statuses()) == path.steps
    assert run.state.pending_command_id is None
    assert run.state.deadline is None


def test_feedback_loop_carries_reply_data_into_later_commands() -> None:
    run = Run()
    run.event(placed())
    run.reply(RESERVED)
    run.reply(CHARGED)
    decision = run.reply(REJECTED)
    [refund] = decision.send
    assert refund.payload.model_dump()["payment_id"] == "p-1"
    release = run.reply(REFUNDED).send[0]
    assert release.payload.model_dump()["reservation_id"] == "r-1"
    assert (
        run.state.failure
        == "step create_shipment failed: shipping.shipment_rejected.v1: no delivery to ZZ"
    )


def test_start_is_deterministic_and_ids_tie_messages_together() -> None:
    first, second = Run(), Run()
    a, b = first.event(placed()), second.event(placed())
    assert a.instance is not None and b.instance is not None
    assert a.instance.saga_id == b.instance.saga_id
    assert a.send[0].message_id == b.send[0].message_id
    out = a.send[0]
    assert out.correlation_id == OID
    assert out.causation_id == "evt-1"
    assert a.timer == T0 + timedelta(seconds=31)
    assert a.instance.pending_command_id == out.message_id


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("second start event", lambda run: run.event(placed())),
        ("stale reply", lambda run: run.reply(RESERVED, causation="some-old-command")),
        ("reply of another step", lambda run: run.reply(CHARGED)),
        ("stale timer", lambda run: run.feed(TimerFired(run.state.saga_id, "x", T0))),
    ],
)
def test_ignored_messages_change_nothing(label: str, message: object) -> None:
    run = Run()
    run.event(placed())
    before = run.state
    decision = message(run)  # type: ignore[operator]
    assert decision.outcome is Outcome.IGNORED, label
    assert decision.instance is None and decision.send == ()
    assert run.state == before


def test_messages_without_a_saga_are_ignored() -> None:
    reply = Inbound("r", RESERVED, OID, "c")
    assert decide(SAGA, None, reply, T0).outcome is Outcome.IGNORED
    cancel = Inbound("e", OrderCancelled(order_id=OID), OID)
    assert decide(SAGA, None, cancel, T0).outcome is Outcome.IGNORED
    assert decide(SAGA, None, TimerFired("s", "c", T0), T0).outcome is Outcome.IGNORED


def test_replies_after_completion_are_ignored() -> None:
    run = Run()
    run.event(placed())
    for reply in (RESERVED, CHARGED, SHIPPED):
        run.reply(reply)
    assert run.reply(SHIPPED, causation="anything").outcome is Outcome.IGNORED
    assert run.event(OrderCancelled(order_id=OID)).outcome is Outcome.IGNORED


def test_cancel_waits_for_the_step_in_flight_then_undoes_it_too() -> None:
    run = Run()
    run.event(placed())
    run.reply(RESERVED)
    cancelled = run.event(OrderCancelled(order_id=OID, reason="changed my mind"))
    assert cancelled.outcome is Outcome.ADVANCED and cancelled.send == ()
    assert run.state.status is SagaStatus.RUNNING and run.state.cancel_reason
    assert run.event(OrderCancelled(order_id=OID)).outcome is Outcome.IGNORED
    # the charge in flight succeeds after all: it is refunded, then the stock released
    assert [o.payload.message_type for o in run.reply(CHARGED).send] == [
        "payments.refund_payment.v1"
    ]
    run.reply(REFUNDED)
    run.reply(RELEASED)
    assert run.state.status is SagaStatus.COMPENSATED
    assert run.state.failure == "order cancelled: changed my mind"
    assert run.sent[-2:] == ["payments.refund_payment.v1", "inventory.release_stock.v1"]


def test_cancel_when_the_step_in_flight_fails_undoes_only_earlier_steps() -> None:
    run = Run()
    run.event(placed())
    run.reply(RESERVED)
    run.event(OrderCancelled(order_id=OID))
    assert [o.payload.message_type for o in run.reply(DECLINED).send] == [
        "inventory.release_stock.v1"
    ]
    run.reply(RELEASED)
    assert run.state.status is SagaStatus.COMPENSATED


def test_step_timeout_resends_then_compensates_the_uncertain_step_as_well() -> None:
    run = Run()
    run.event(placed())
    run.reply(RESERVED)
    charge = run.state.pending_command_id
    resent = run.timeout()
    assert [o.message_id for o in resent.send] == [charge]
    assert run.state.steps[1].attempts == 2
    decision = run.timeout()
    assert [o.payload.message_type for o in decision.send] == ["payments.refund_payment.v1"]
    # the refund names the charge it undoes, so the adapter can refuse a late charge
    assert [o.compensates for o in decision.send] == [charge]
    assert run.step_statuses()[1] == ("charge_payment", StepStatus.COMPENSATING)
    assert run.state.steps[1].error == "no reply to step charge_payment within 30s"
    assert run.state.phase is Phase.COMPENSATION
    run.reply(REFUNDED)
    run.reply(RELEASED)
    assert run.state.status is SagaStatus.COMPENSATED
    assert run.state.failure == "step charge_payment timed out"


def test_compensation_is_resent_then_the_saga_fails_for_an_operator() -> None:
    run = Run()
    run.event(placed())
    run.reply(RESERVED)
    reserve = run.state.steps[0].command_id
    first = run.reply(DECLINED).send[0]
    assert first.compensates == reserve
    resends = [run.timeout(), run.timeout()]
    assert [d.send[0].message_id for d in resends] == [first.message_id] * 2
    assert [d.send[0].compensates for d in resends] == [reserve] * 2
    assert run.state.steps[0].compensation_attempts == 3
    final = run.timeout()
    assert final.send == ()
    assert run.state.status is SagaStatus.FAILED
    assert run.step_statuses()[0] == ("reserve_stock", StepStatus.COMPENSATION_FAILED)
    assert run.state.failure and "compensation of step reserve_stock failed" in run.state.failure


def test_fail_stops_a_saga_for_an_operator() -> None:
    from bus_orchestrator.core import fail

    run = Run()
    run.event(placed())
    before = run.state
    failed = fail(before, "timer kept failing", T0 + timedelta(hours=1))
    assert failed.status is SagaStatus.FAILED and failed.failure == "timer kept failing"
    assert (failed.current, failed.pending_command_id, failed.deadline) == (None, None, None)
    assert failed.version == before.version + 1 and failed.steps == before.steps


def test_a_timeout_after_a_cancellation_does_not_resend_the_forward_command() -> None:
    run = Run()
    run.event(placed())
    run.reply(RESERVED)
    run.event(OrderCancelled(order_id=OID))  # the charge is awaited: wait for it
    decision = run.timeout()
    assert [o.payload.message_type for o in decision.send] == ["payments.refund_payment.v1"]
    assert "payments.charge_payment.v1" not in run.sent[2:]
    assert run.step_statuses()[1] == ("charge_payment", StepStatus.COMPENSATING)
    assert run.state.failure is not None and "cancelled" in run.state.failure
