"""kill -9 storms: the coordinator, the adapters, and two coordinators, killed at random.

200 orders of every outcome go through the processes in ten waves; in each wave, after a
random number of its side effects, a process is killed with SIGKILL and started again.
Afterwards every saga has the status its scenario expects, every command the coordinator
sent was processed by an adapter, the fakes' ledger (which survives kill -9) shows no side
effect twice, and nothing reached ``bus.dead``. The seed of each storm is in the summary
table, to replay it.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.faults.fleet import (
    ADAPTERS,
    COORDINATOR,
    Fleet,
    Workload,
    connect_db,
    count,
    durable_tap,
    ledger_rows,
    wait_for_consumer,
    wait_until_consuming,
    work_queues,
)
from tests.faults.summary import Row

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

ORDERS = 200
KILLS = 10


async def storm(
    settings: Settings,
    bus: TestBus,
    fleet: Fleet,
    summary: Row,
    *,
    coordinators: int,
    victims: list[str],
) -> None:
    seed = random.randrange(1_000_000)
    chance = random.Random(seed)
    summary.notes.append(f"seed {seed}")
    dead = await durable_tap(bus, bus.topology.dead, "dead")
    workload = Workload(summary.test, ORDERS)
    await fleet.start("adapters", ADAPTERS)
    for n in range(coordinators):
        await fleet.start(f"coordinator-{n}", COORDINATOR)
    await wait_until_consuming(bus, coordinators)

    queues = work_queues(bus)
    in_flight: list[int] = []
    for batch in workload.batches(ORDERS // KILLS):
        # a random moment in the wave's work: after a random number of its side effects
        target = await ledger_rows(settings) + chance.randint(1, 3 * len(batch))
        await workload.place(bus, batch)
        for _ in range(250):
            if await ledger_rows(settings) >= target:
                break
            await asyncio.sleep(0.02)
        victim = chance.choice(victims)
        in_flight.append(await running(settings))
        await fleet.kill(victim)
        await fleet.start(victim)
        # the next kill must find it at work, not still starting
        queue = queues["coordinator" if victim.startswith("coordinator") else "adapter.shipping"]
        await wait_for_consumer(
            bus.connection, queue, coordinators if victim.startswith("coordinator") else 1
        )
    summary.notes.append(f"{fleet.kills} kills, sagas running at each: {in_flight}")

    counted = await count(settings, bus, workload, dead, within=120)
    counted.fill(summary, ORDERS)
    assert counted.as_expected == set(workload.plan), counted.report() + "\n" + fleet.tail()
    assert summary.lost == 0, counted.report()
    assert summary.duplicated == 0, counted.report()
    assert counted.dead == [], counted.report()


async def running(settings: Settings) -> int:
    conn = await connect_db(settings)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM saga WHERE status = 'running'"))
    finally:
        await conn.close()


async def test_coordinator_kill_storm(
    settings: Settings, bus: TestBus, fleet: Fleet, summary: Row
) -> None:
    await storm(settings, bus, fleet, summary, coordinators=1, victims=["coordinator-0"])


async def test_adapters_kill_storm(
    settings: Settings, bus: TestBus, fleet: Fleet, summary: Row
) -> None:
    await storm(settings, bus, fleet, summary, coordinators=1, victims=["adapters"])


async def test_two_coordinators_killed_at_random(
    settings: Settings, bus: TestBus, fleet: Fleet, summary: Row
) -> None:
    await storm(
        settings, bus, fleet, summary, coordinators=2, victims=["coordinator-0", "coordinator-1"]
    )
