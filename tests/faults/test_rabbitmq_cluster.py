"""A three-node RabbitMQ cluster: the node leading the coordinator's quorum queue is killed
(SIGKILL to its Erlang VM) mid-run. Nothing is lost or repeated.

The coordinator's queue is declared through node ``b`` first, so that ``b`` leads it; the
coordinator, the adapters and the test connect to node ``a``. With ``b`` gone, ``a`` and
``c`` are a majority: the queue elects a new leader and goes on. Publishes the broker
refuses meanwhile (nacks) are repeated by the test, as a careful publisher does.

The cluster is booted and joined for the test (about 18 s, three VMs of about 145 MB).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.transport.topology import Topology
from tests.conftest import open_test_bus
from tests.faults.cluster import RabbitCluster
from tests.faults.fleet import (
    ADAPTERS,
    COORDINATOR,
    Fleet,
    Workload,
    count,
    durable_tap,
    ledger_rows,
    wait_until_consuming,
)
from tests.faults.services import LocalServices
from tests.faults.summary import Row
from tests.integration.harness import EXAMPLE_APP

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

ORDERS = 200


@pytest.fixture
def rabbit_cluster(fault_services: LocalServices) -> Iterator[RabbitCluster]:
    # not under pytest's basetemp: the nodes run as the rabbitmq user, which cannot enter it
    base = Path(tempfile.mkdtemp(prefix="bus-fault-cluster-"))
    base.chmod(0o755)
    cluster = RabbitCluster(base)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


async def test_killing_the_leader_of_the_coordinator_queue_loses_nothing(
    settings: Settings,
    ledger_schema: str,
    rabbit_cluster: RabbitCluster,
    tmp_path: Path,
    summary: Row,
) -> None:
    cluster = rabbit_cluster
    on_a = settings.model_copy(update={"amqp_url": cluster.url("a")})
    topology = Topology(settings.exchange_prefix, settings.delivery_limit)
    coordinator_queue = topology.coordinator_queue(EXAMPLE_APP)
    via_b = await aio_pika.connect(cluster.url("b"))
    try:
        channel = await via_b.channel()
        await topology.declare_exchanges(channel)
        await topology.declare_work_queue(channel, coordinator_queue, [])
    finally:
        await via_b.close()
    assert cluster.leader(coordinator_queue) == "b"

    fleet = Fleet(on_a, tmp_path)
    async with open_test_bus(await aio_pika.connect(cluster.url("a")), on_a) as bus:
        try:
            dead = await durable_tap(bus, bus.topology.dead, "dead")
            workload = Workload(summary.test, ORDERS)
            await fleet.start("adapters", ADAPTERS)
            await fleet.start("coordinator", COORDINATOR)
            await wait_until_consuming(bus)
            first, second = workload.batches(ORDERS // 2)
            target = await ledger_rows(settings) + 100
            await workload.place(bus, first)
            for _ in range(1000):  # well under way
                if await ledger_rows(settings) >= target:
                    break
                await asyncio.sleep(0.02)
            await asyncio.to_thread(cluster.kill, "b")
            await workload.place(bus, second, retry=30)
            counted = await count(on_a, bus, workload, dead, within=150)
            counted.fill(summary, ORDERS)
            new_leader = await asyncio.to_thread(cluster.leader, coordinator_queue)
            summary.notes.append(f"leader b killed; new leader {new_leader}")
            assert counted.as_expected == set(workload.plan), counted.report() + fleet.tail()
            assert summary.lost == 0, counted.report()
            assert summary.duplicated == 0, counted.report()
            assert counted.dead == [], counted.report()
        finally:
            await fleet.stop_all()
