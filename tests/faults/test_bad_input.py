"""Bad input published while good orders flow: the good ones finish, the bad ones are
dead-lettered, each with its reason (or reach ``bus.unroutable``), and nothing innocent is
dead-lettered with them. The good orders' latency goes to the summary (never asserted).

The header bomb: about 4,000 headers just under the broker's frame limit, to the
coordinator (on ``bus.events``) and to an adapter (on ``bus.commands``). A dead letter that
copies them all, plus its own ``x-dead-*`` headers, is refused by the broker, which closes
the whole connection; the message comes back, again and again, until the delivery limit.
The limit is lowered to 5 here, so that a regression costs seconds rather than minutes.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.faults.bad_input import BadInput, careless_inputs, header_bomb
from tests.faults.fleet import (
    ADAPTERS,
    COORDINATOR,
    DeadLetter,
    Fleet,
    Workload,
    count,
    drain,
    durable_tap,
    wait_until_consuming,
)
from tests.faults.summary import Row

pytestmark = [pytest.mark.faults, pytest.mark.timeout(200)]

GOOD_ORDERS = 40
DELIVERY_LIMIT = "5"


async def publish_bad(bus: TestBus, bad: list[BadInput]) -> None:
    channel = await bus.channel()
    try:
        for message in bad:
            exchange = await channel.get_exchange(
                {
                    "events": bus.topology.events,
                    "commands": bus.topology.commands,
                    "replies": bus.topology.replies,
                }[message.exchange_kind],
                ensure=False,
            )
            await exchange.publish(message.message(), routing_key=message.routing_key)
    finally:
        await channel.close()


async def collect(amqp_url: str, queue: str, ids: set[str], within: float) -> list[DeadLetter]:
    """What reaches ``queue``, until the messages ``ids`` are all there or ``within`` s."""
    found: list[DeadLetter] = []
    deadline = time.monotonic() + within
    while True:
        found += await drain(amqp_url, queue)
        if ids <= {d.message_id for d in found} or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


async def run_with_good_traffic(
    settings: Settings,
    bus: TestBus,
    fleet: Fleet,
    summary: Row,
    bad: list[BadInput],
) -> None:
    dead = await durable_tap(bus, bus.topology.dead, "dead")
    unroutable = await durable_tap(bus, bus.topology.unroutable, "unroutable")
    workload = Workload(summary.test, GOOD_ORDERS)
    await fleet.start("adapters", ADAPTERS)
    await fleet.start("coordinator", COORDINATOR)
    await wait_until_consuming(bus)

    first, second = workload.batches(GOOD_ORDERS // 2)
    await workload.place(bus, first)
    await publish_bad(bus, bad)
    await workload.place(bus, second)

    counted = await count(settings, bus, workload, dead, within=120)
    to_dead = {b.message_id for b in bad if not b.unroutable}
    counted.dead += await collect(
        settings.amqp_url, dead, to_dead - {d.message_id for d in counted.dead}, within=15
    )
    routed_away = await collect(
        settings.amqp_url, unroutable, {b.message_id for b in bad if b.unroutable}, within=5
    )
    counted.fill(summary, GOOD_ORDERS)

    reasons = {d.message_id: d.reason for d in counted.dead}
    by_engine = {d.message_id for d in counted.dead if d.by_engine}
    wrong: dict[str, str] = {}
    for message in bad:
        if message.unroutable:
            if message.message_id not in {d.message_id for d in routed_away}:
                wrong[message.name] = "not in bus.unroutable"
        elif message.message_id not in reasons:
            wrong[message.name] = "not in bus.dead"
        elif not reasons[message.message_id]:
            wrong[message.name] = "in bus.dead without a reason"
        elif message.by_engine and message.message_id not in by_engine:
            wrong[message.name] = f"dead-lettered by the broker ({reasons[message.message_id]})"
        elif message.reason is not None and reasons[message.message_id] != message.reason:
            wrong[message.name] = f"reason {reasons[message.message_id]}, not {message.reason}"
    innocent = [d for d in counted.dead if d.message_id not in to_dead]
    summary.notes.extend(f"{name}: {why}" for name, why in wrong.items())
    if innocent:
        summary.notes.append(f"{len(innocent)} innocent messages dead-lettered")

    assert counted.as_expected == set(workload.plan), counted.report() + "\n" + fleet.tail()
    assert summary.lost == 0, counted.report()
    assert summary.duplicated == 0, counted.report()
    assert wrong == {}, counted.report()
    assert innocent == [], counted.report()
    assert summary.dead_without_reason == 0, counted.report()


@pytest.mark.timeout(240)
async def test_header_bomb_with_good_traffic(
    settings: Settings, bus: TestBus, fleet: Fleet, summary: Row
) -> None:
    fleet.env["BUS_DELIVERY_LIMIT"] = DELIVERY_LIMIT
    bombs = [
        header_bomb("bomb on bus.events", "events", "orders.order_placed.v1", b"{}"),
        header_bomb("bomb on bus.commands", "commands", "payments.charge_payment.v1", b"{}"),
    ]
    await run_with_good_traffic(settings, bus, fleet, summary, bombs)


async def test_careless_inputs_with_good_traffic(
    settings: Settings, bus: TestBus, fleet: Fleet, summary: Row
) -> None:
    fleet.env["BUS_DELIVERY_LIMIT"] = DELIVERY_LIMIT
    await run_with_good_traffic(
        settings, bus, fleet, summary, careless_inputs(settings.max_message_bytes)
    )
