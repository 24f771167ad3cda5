"""A cancel that overtakes its order: ``OrderPlaced`` and ``OrderCancelled`` back to back.

The coordinator takes prefetched messages concurrently, so the cancel of an order may be
handled before the order's saga exists. It must not be lost: every saga ends
``compensated`` or never charged nor shipped (per the ledger), and none ``completed``.
"""

from __future__ import annotations

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from contracts import OrderCancelled
from tests.conftest import TestBus
from tests.faults.fleet import (
    ADAPTERS,
    COORDINATOR,
    Fleet,
    Workload,
    connect_db,
    count,
    durable_tap,
    wait_until_consuming,
)
from tests.faults.ledger import net_effects
from tests.faults.summary import Row
from tests.integration.harness import SCENARIOS, order, publish

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

ORDERS = 50


async def test_a_cancel_right_behind_its_order_is_not_lost(
    settings: Settings, bus: TestBus, fleet: Fleet, summary: Row
) -> None:
    dead = await durable_tap(bus, bus.topology.dead, "dead")
    workload = Workload(summary.test, ORDERS, scenarios=("ok",))
    await fleet.start("adapters", ADAPTERS)
    await fleet.start("coordinator", COORDINATOR)
    await wait_until_consuming(bus)

    channel = await bus.channel()
    for oid in workload.plan:
        await publish(channel, bus.topology.events, order(oid, **SCENARIOS["ok"][0]))
        await publish(channel, bus.topology.events, OrderCancelled(order_id=oid, reason="oops"))
    await channel.close()

    conn = await connect_db(settings)
    try:
        standing: dict[str, set[str]] = {}

        def cancelled(oid: str, status: str) -> bool:
            if status == SagaStatus.COMPLETED:
                return False
            if status == SagaStatus.COMPENSATED:
                return not standing.get(oid)
            return not standing.get(oid, set()) & {"charge", "ship"}

        counted = await count(
            settings, bus, workload, dead, within=90, as_expected=lambda o, s: True
        )
        standing = await net_effects(conn)
    finally:
        await conn.close()
    counted.as_expected = {oid for oid, s in counted.statuses.items() if cancelled(oid, s)}
    counted.fill(summary, ORDERS)
    completed = sorted(o for o, s in counted.statuses.items() if s == SagaStatus.COMPLETED)
    summary.notes.append(f"{len(completed)} completed")
    assert completed == [], f"{len(completed)} of {ORDERS} orders completed despite the cancel"
    assert counted.as_expected == set(workload.plan), counted.report()
    assert summary.lost == 0, counted.report()
    assert summary.duplicated == 0, counted.report()
    assert summary.dead_without_reason == 0, counted.report()
