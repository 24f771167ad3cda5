"""Postgres crashes mid-run: kill -9 of its postmaster, then a start (retried, as after a
real crash), with the coordinator and the adapters running as processes and orders in
flight. Nothing is lost or repeated, and nothing reaches ``bus.dead``."""

from __future__ import annotations

import asyncio

import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.faults.fleet import (
    ADAPTERS,
    COORDINATOR,
    Fleet,
    Workload,
    count,
    durable_tap,
    wait_until_consuming,
)
from tests.faults.services import LocalServices
from tests.faults.summary import Row

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

ORDERS = 100


async def test_postgres_killed_and_restarted_mid_run(
    settings: Settings,
    bus: TestBus,
    fleet: Fleet,
    fault_services: LocalServices,
    summary: Row,
) -> None:
    postgres = fault_services.postgres
    dead = await durable_tap(bus, bus.topology.dead, "dead")
    workload = Workload(summary.test, ORDERS)
    first, second = workload.batches(ORDERS // 2)
    await fleet.start("adapters", ADAPTERS)
    await fleet.start("coordinator", COORDINATOR)
    await wait_until_consuming(bus)

    await workload.place(bus, first)
    await asyncio.sleep(0.3)  # under way
    pid = postgres.postmaster_pid()
    await asyncio.to_thread(postgres.kill_postmaster)
    # orders keep coming while it is down
    await workload.place(bus, second)
    await asyncio.sleep(2.0)
    await asyncio.to_thread(postgres.start)
    assert postgres.postmaster_pid() != pid
    summary.notes.append("postmaster kill -9 then start")

    counted = await count(settings, bus, workload, dead, within=120)
    counted.fill(summary, ORDERS)
    assert counted.as_expected == set(workload.plan), counted.report() + "\n" + fleet.tail()
    assert summary.lost == 0, counted.report()
    assert summary.duplicated == 0, counted.report()
    assert counted.dead == [], counted.report()
