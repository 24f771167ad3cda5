"""Order-to-cash end to end: coordinator and example adapters on the real broker and database."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from adapters import example_adapters, inventory_adapter, payments_adapter, shipping_adapter
from adapters.inventory import FakeInventory
from adapters.payments import FakePaymentGateway
from adapters.shipping import FakeCarrier
from bus_orchestrator.adapters.runner import work_queue_name
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.runtime.service import CoordinatorService
from contracts import OrderCancelled
from tests.conftest import TestBus
from tests.e2e.conftest import Adapters
from tests.integration.harness import (
    REFUND,
    RELEASE,
    SCENARIOS,
    order,
    publish,
    sql,
    start_coordinator,
    wait_for_status,
)

pytestmark = pytest.mark.e2e


def commands_by_order(messages: list) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for message in messages:
        seen[str(message.correlation_id)].append(message.routing_key)
    return dict(seen)


async def test_two_hundred_orders_reach_their_expected_status(
    settings: Settings, bus: TestBus, running_adapters: Adapters
) -> None:
    settings = settings.model_copy(update={"outbox_lease_seconds": 30.0})
    commands = await bus.tap(bus.topology.commands)
    plan = {f"o-{n:03d}": list(SCENARIOS)[n % len(SCENARIOS)] for n in range(200)}
    running_adapters.start(example_adapters())
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        for n, (order_id, scenario) in enumerate(plan.items()):
            event = order(order_id, **SCENARIOS[scenario][0])
            message_id = await publish(channel, bus.topology.events, event, correlation_id=order_id)
            if n < 20:  # the same delivery twice, and the same order under a new event id
                await publish(channel, bus.topology.events, event, message_id=message_id)
                await publish(channel, bus.topology.events, event)
        sagas = await wait_for_status(
            settings,
            list(plan),
            {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED},
            within=90,
        )
        assert {oid: sagas[oid].status for oid in plan} == {
            oid: SCENARIOS[s][1] for oid, s in plan.items()
        }
        expected = {oid: SCENARIOS[s][2] for oid, s in plan.items()}
        total = sum(len(v) for v in expected.values())
        # exactly these commands went out, each once, compensations in reverse order
        assert commands_by_order(await bus.drain(commands, total, within=30)) == expected
        await asyncio.sleep(0.3)
        assert await commands.get(fail=False) is None
        # and the adapters acted on each exactly once, in that order
        rows = await sql(
            settings, "SELECT correlation_id, command_type FROM adapter_command ORDER BY seq"
        )
        acted: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            acted[row["correlation_id"]].append(row["command_type"])
        assert dict(acted) == expected
        assert len(await sql(settings, "SELECT 1 FROM saga")) == 200
        assert (await sql(settings, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL"))[0][
            "n"
        ] == 0
    finally:
        await service.stop()


async def test_cancellation_waits_for_the_step_in_flight_then_compensates(
    settings: Settings, bus: TestBus, running_adapters: Adapters
) -> None:
    """Shipping is down at first: the saga waits on it when the cancellation arrives."""
    commands = await bus.tap(bus.topology.commands)
    shipping = shipping_adapter(FakeCarrier())
    # Its queue exists (the adapter is deployed), but nothing consumes it yet.
    await bus.topology.declare_work_queue(
        await bus.channel(),
        bus.topology.queue(work_queue_name(shipping)),
        [(bus.topology.commands, t) for t in shipping.command_types],
    )
    running_adapters.start(
        [inventory_adapter(FakeInventory()), payments_adapter(FakePaymentGateway())]
    )
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        await publish(channel, bus.topology.events, order("o-c"), correlation_id="o-c")
        await bus.drain(commands, 3)  # reserve, charge, ship (nobody ships yet)
        await publish(channel, bus.topology.events, OrderCancelled(order_id="o-c", reason="late"))
        for _ in range(200):
            [saga] = (await wait_for_status(settings, ["o-c"], {SagaStatus.RUNNING})).values()
            if saga.cancel_reason:
                break
            await asyncio.sleep(0.05)
        assert saga.cancel_reason == "order cancelled: late"
        running_adapters.start([shipping])
        sagas = await wait_for_status(settings, ["o-c"], {SagaStatus.COMPENSATED})
        compensations = await bus.drain(commands, 2)
        assert [m.routing_key for m in compensations] == [REFUND, RELEASE]
        assert [s.status for s in sagas["o-c"].steps] == ["compensated", "compensated", "succeeded"]
    finally:
        await service.stop()


async def test_a_coordinator_restart_mid_flight_loses_and_repeats_nothing(
    settings: Settings, bus: TestBus, running_adapters: Adapters
) -> None:
    settings = settings.model_copy(update={"outbox_lease_seconds": 30.0})
    commands = await bus.tap(bus.topology.commands)
    running_adapters.start(example_adapters())
    plan = {f"r-{n:03d}": list(SCENARIOS)[n % len(SCENARIOS)] for n in range(60)}
    first: CoordinatorService | None = await start_coordinator(settings)
    second: CoordinatorService | None = None
    try:
        channel = await bus.channel()
        for order_id, scenario in plan.items():
            await publish(channel, bus.topology.events, order(order_id, **SCENARIOS[scenario][0]))
        await bus.drain(commands, 30)  # well under way
        assert first is not None
        await first.stop()
        first = None
        second = await start_coordinator(settings)
        sagas = await wait_for_status(
            settings, list(plan), {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}, within=60
        )
        assert {oid: sagas[oid].status for oid in plan} == {
            oid: SCENARIOS[s][1] for oid, s in plan.items()
        }
        rows = await sql(settings, "SELECT command_type, correlation_id FROM adapter_command")
        assert len(rows) == sum(len(SCENARIOS[s][2]) for s in plan.values())
    finally:
        for service in (first, second):
            if service is not None:
                await service.stop()
