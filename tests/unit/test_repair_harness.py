"""Repairs through the coordinator, in memory (the public harness): what is committed, the
history entry with who and why, and an action applied once by its id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bus_orchestrator.core import SagaStatus, StepStatus
from bus_orchestrator.core.repair import (
    Repair,
    RepairInvalidError,
    RepairRefusedError,
    RepairRequest,
)
from bus_orchestrator.errors import SagaNotFoundError
from bus_orchestrator.testing import SagaHarness
from contracts import (
    CreateShipment,
    PaymentRefunded,
    RefundPayment,
    ShipmentRejected,
)
from example import create_app
from tests.integration.harness import order


async def failed_refund() -> tuple[SagaHarness, list[RefundPayment]]:
    """o-1: shipment rejected, and the refund never answered: the saga gives up, failed."""
    harness = SagaHarness(create_app())
    refunds: list[RefundPayment] = []

    def lost(command: RefundPayment) -> None:
        refunds.append(command)

    harness.reply(CreateShipment, lambda c: ShipmentRejected(order_id=c.order_id, reason="no"))
    harness.reply(RefundPayment, lost)
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    await harness.advance(timedelta(minutes=5))
    assert (await harness.saga("o-1")).status is SagaStatus.FAILED
    return harness, refunds


async def test_resume_compensates_a_failed_saga_once_its_adapter_answers() -> None:
    harness, refunds = await failed_refund()
    tries = len(refunds)

    def refunded(command: RefundPayment) -> PaymentRefunded:
        refunds.append(command)
        return PaymentRefunded(order_id=command.order_id, payment_id=command.payment_id)

    harness.reply(RefundPayment, refunded)
    repaired = await harness.repair(Repair.RESUME, "o-1", reason="PSP back up", by="alice")
    assert repaired.instance.status is SagaStatus.COMPENSATING and not repaired.repeated
    await harness.run_until_idle()
    saga = await harness.saga("o-1")
    assert saga.status is SagaStatus.COMPENSATED
    assert len(refunds) == tries + 1
    [entry] = [h for h in await harness.history("o-1") if h.message_type == "bus.operator.resume"]
    assert entry.payload["by"] == "alice" and entry.payload["reason"] == "PSP back up"
    assert "resume by alice: PSP back up" in entry.note
    assert [e.status for e in harness.ended("o-1")] == ["failed", "compensated"]


async def test_a_repeated_action_is_applied_once() -> None:
    harness, _ = await failed_refund()
    saga = await harness.saga("o-1")
    request = RepairRequest(Repair.RESUME, saga.saga_id, "op-1", "alice", "retry the refund")
    first = await harness.coordinator.repair(request)
    again = await harness.coordinator.repair(request)
    assert not first.repeated and again.repeated
    assert again.instance.version == first.instance.version
    entries = [h for h in await harness.history("o-1") if h.message_type == "bus.operator.resume"]
    assert len(entries) == 1


async def test_refusals_change_nothing() -> None:
    harness, _ = await failed_refund()
    before = await harness.saga("o-1")
    with pytest.raises(RepairRefusedError, match="resume compensates"):
        await harness.repair(Repair.RETRY, "o-1")
    with pytest.raises(SagaNotFoundError):
        await harness.coordinator.repair(RepairRequest(Repair.ABORT, "nope", "x", "a", "b"))
    assert await harness.saga("o-1") == before
    assert not [h for h in await harness.history("o-1") if h.message_type.startswith("bus.op")]


async def test_skip_validates_the_reply_against_the_steps_contract() -> None:
    harness = SagaHarness(create_app())
    harness.reply(CreateShipment)  # never answered
    await harness.publish(order("o-1"))
    await harness.run_until_idle()
    bad: dict[str, Any] = {"order_id": "o-1"}
    with pytest.raises(RepairInvalidError, match=r"shipping\.shipment_created\.v1"):
        await harness.repair(Repair.SKIP, "o-1", data=bad)
    good = {"order_id": "o-1", "shipment_id": "s-by-hand"}
    repaired = await harness.repair(Repair.SKIP, "o-1", data=good, reason="shipped by hand")
    assert repaired.instance.status is SagaStatus.COMPLETED
    assert repaired.instance.steps[-1].status is StepStatus.SUCCEEDED
    [entry] = [h for h in await harness.history("o-1") if h.message_type == "bus.operator.skip"]
    assert entry.payload["reply"] == good
    assert entry.payload["reply_type"] == "shipping.shipment_created.v1"
