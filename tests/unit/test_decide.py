"""decide() itself, on order-to-cash: the start, single transitions, what it ignores, fail().

Whole runs of the saga (paths, cancellation, timeouts, resends) are in
``test_order_to_cash``, through the public test harness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bus_orchestrator.core import (
    Inbound,
    Outcome,
    SagaInstance,
    SagaStatus,
    TimerFired,
    decide,
)
from bus_orchestrator.core.lifecycle import SagaEnded, cancel_event
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


OID = "o-1"
RESERVED = StockReserved(order_id=OID, reservation_id="r-1")
UNAVAILABLE = StockUnavailable(order_id=OID, skus=("OOS-1",), reason="out of stock")
CHARGED = PaymentCharged(order_id=OID, payment_id="p-1", amount=Decimal("100.00"), currency="EUR")
DECLINED = PaymentDeclined(order_id=OID, reason="limit exceeded")
SHIPPED = ShipmentCreated(order_id=OID, shipment_id="s-1")
REJECTED = ShipmentRejected(order_id=OID, reason="no delivery to ZZ")
RELEASED = StockReleased(order_id=OID, reservation_id="r-1")
REFUNDED = PaymentRefunded(order_id=OID, payment_id="p-1")


CHARGE = "payments.charge_payment.v1"


def started() -> SagaInstance:
    decision = decide(SAGA, None, Inbound("evt-1", placed(), OID), T0)
    assert decision.outcome is Outcome.STARTED and decision.instance is not None
    return decision.instance


def test_start_is_deterministic_and_ids_tie_messages_together() -> None:
    a = decide(SAGA, None, Inbound("evt-1", placed(), OID), T0)
    b = decide(SAGA, None, Inbound("evt-1", placed(), OID), T0)
    assert a.instance is not None and b.instance is not None
    assert a.instance.saga_id == b.instance.saga_id
    assert a.send[0].message_id == b.send[0].message_id
    out = a.send[0]
    assert out.correlation_id == OID
    assert out.causation_id == "evt-1"
    assert a.timer == T0 + timedelta(seconds=30)
    assert a.instance.pending_command_id == out.message_id
    assert (a.instance.version, a.instance.status) == (1, SagaStatus.RUNNING)


@pytest.mark.parametrize(
    ("reply", "outcome", "status", "sent", "step"),
    [
        (
            RESERVED,
            Outcome.ADVANCED,
            SagaStatus.RUNNING,
            ["payments.charge_payment.v1"],
            "succeeded",
        ),
        (
            UNAVAILABLE,
            Outcome.ADVANCED,
            SagaStatus.COMPENSATED,
            ["saga.order_to_cash.compensated.v1"],  # nothing to undo: it ends at once
            "failed",
        ),
    ],
)
def test_one_reply_is_one_transition(
    reply: Reply, outcome: Outcome, status: SagaStatus, sent: list[str], step: str
) -> None:
    before = started()
    now = T0 + timedelta(seconds=1)
    decision = decide(SAGA, before, Inbound("rep-1", reply, OID, before.pending_command_id), now)
    assert decision.outcome is outcome
    after = decision.instance
    assert after is not None and after.version == before.version + 1
    assert after.status is status and after.steps[0].status == step
    assert [o.payload.message_type for o in decision.send] == sent
    assert after.steps[0].finished_at == now


def test_a_saga_that_ends_sends_its_end_event_once() -> None:
    before = started()
    reply = Inbound("rep-1", UNAVAILABLE, OID, before.pending_command_id)
    decision = decide(SAGA, before, reply, T0)
    again = decide(SAGA, before, reply, T0 + timedelta(seconds=5))  # the same reply, retried
    [ended] = decision.send
    assert isinstance(ended.payload, SagaEnded)
    assert ended.payload.message_type == "saga.order_to_cash.compensated.v1"
    assert ended.payload.model_dump() == {
        "saga_id": before.saga_id,
        "saga_type": "order_to_cash",
        "correlation_id": OID,
        "status": "compensated",
        "reason": decision.instance.failure if decision.instance else None,
        "started_by": {"message_id": "evt-1", "correlation_id": OID},
    }
    assert ended.payload.reason is not None and "out of stock" in ended.payload.reason
    assert (ended.correlation_id, ended.causation_id) == (OID, "rep-1")
    assert again.send[0].message_id == ended.message_id  # one end on the bus, however retried
    assert decision.instance is not None
    # a finished saga ends no more: a cancel request afterwards is ignored, and sends nothing
    cancel = Inbound("c-1", cancel_event("order_to_cash")(correlation_id=OID, reason="r"), OID)
    late = decide(SAGA, decision.instance, cancel, T0 + timedelta(seconds=9))
    assert (late.outcome, late.send) == (Outcome.IGNORED, ())


def test_a_cancel_request_stops_a_running_saga_like_a_compensate_reaction() -> None:
    before = started()
    reserved = decide(SAGA, before, Inbound("r-1", RESERVED, OID, before.pending_command_id), T0)
    assert reserved.instance is not None
    cancel = Inbound("c-1", cancel_event("order_to_cash")(correlation_id=OID, reason="bye"), OID)
    decision = decide(SAGA, reserved.instance, cancel, T0)
    after = decision.instance
    # the charge is in flight: compensation waits for its answer, nothing is sent yet
    assert after is not None and after.status is SagaStatus.RUNNING
    assert after.cancel_reason == "bye" and decision.send == ()
    declined = Inbound("r-2", DECLINED, OID, after.pending_command_id)
    released = decide(SAGA, after, declined, T0)
    assert [o.payload.message_type for o in released.send] == ["inventory.release_stock.v1"]
    assert released.instance is not None
    done = Inbound("r-3", RELEASED, OID, released.instance.pending_command_id)
    final = decide(SAGA, released.instance, done, T0)
    assert final.instance is not None and final.instance.status is SagaStatus.COMPENSATED
    [ended] = final.send
    assert isinstance(ended.payload, SagaEnded)
    assert (ended.payload.status, ended.payload.reason) == ("compensated", "bye")


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("stale reply", lambda s: Inbound("r", RESERVED, OID, "some-old-command")),
        ("reply of another step", lambda s: Inbound("r", CHARGED, OID, s.pending_command_id)),
        ("stale timer", lambda s: TimerFired(s.saga_id, "x", T0)),
        ("second start event", lambda s: Inbound("evt-2", placed(), OID)),
    ],
)
def test_ignored_messages_change_nothing(label: str, message: object) -> None:
    before = started()
    decision = decide(SAGA, before, message(before), T0)  # type: ignore[operator]
    assert decision.outcome is Outcome.IGNORED, label
    assert decision.instance is None and decision.send == ()


def test_messages_without_a_saga_are_ignored() -> None:
    reply = Inbound("r", RESERVED, OID, "c")
    assert decide(SAGA, None, reply, T0).outcome is Outcome.IGNORED
    cancel = Inbound("e", OrderCancelled(order_id=OID), OID)
    assert decide(SAGA, None, cancel, T0).outcome is Outcome.IGNORED
    assert decide(SAGA, None, TimerFired("s", "c", T0), T0).outcome is Outcome.IGNORED


def test_fail_stops_a_saga_for_an_operator() -> None:
    from bus_orchestrator.core import fail

    before = started()
    failed = fail(before, "timer kept failing", T0 + timedelta(hours=1))
    assert failed.status is SagaStatus.FAILED and failed.failure == "timer kept failing"
    assert (failed.current, failed.pending_command_id, failed.deadline) == (None, None, None)
    assert failed.version == before.version + 1 and failed.steps == before.steps
