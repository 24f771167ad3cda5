"""Long-running commands started while a service is down, or refusing the engine's topology.

The shared Postgres and RabbitMQ are never disturbed: the processes reach them through a
``Gate`` on a port of the test's own, closed (connection refused) until the test opens it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.transport.topology import Topology
from tests.conftest import TestBus
from tests.e2e.gate import Gate
from tests.e2e.processes import WORK_QUEUES, Processes, cli, wait_for_consumers
from tests.integration.harness import migrated, order, publish, wait_for_status

pytestmark = pytest.mark.e2e

WAITING = re.compile(
    r"waiting for (?P<service>Postgres|RabbitMQ) at 127\.0\.0\.1:(?P<port>\d+): "
    r"(?P<why>.+); retrying in \d+\.\ds$"
)


@pytest.fixture
async def gates(settings: Settings) -> AsyncIterator[tuple[Gate, Gate]]:
    """Closed gates to this test's Postgres and RabbitMQ."""
    postgres, rabbitmq = Gate(settings.database_url, 5432), Gate(settings.amqp_url, 5672)
    try:
        yield postgres, rabbitmq
    finally:
        await postgres.close()
        await rabbitmq.close()


async def log_line(processes: Processes, pattern: str, count: int = 1) -> list[str]:
    """Wait until ``count`` lines of the processes' logs match ``pattern``."""
    for _ in range(300):
        found = [line for line in processes.log_lines() if re.search(pattern, line)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"no {count} lines matching {pattern!r} in:\n" + "\n".join(processes.log_lines()[-30:])
    )


def waits(processes: Processes) -> list[tuple[str, str, str]]:
    found = []
    for line in processes.log_lines():
        if (match := WAITING.search(line)) is not None:
            found.append((match["service"], match["port"], match["why"]))
    return found


async def test_the_coordinator_waits_for_postgres_then_rabbitmq_then_runs(
    settings: Settings, db_schema: str, bus: TestBus, processes: Processes, gates: tuple[Gate, Gate]
) -> None:
    await migrated(settings)
    postgres, rabbitmq = gates
    coordinator = await processes.start(
        settings, "run", BUS_DATABASE_URL=postgres.url, BUS_AMQP_URL=rabbitmq.url
    )
    await log_line(processes, "waiting for Postgres", count=2)
    await postgres.open()
    await log_line(processes, "waiting for RabbitMQ", count=2)
    await rabbitmq.open()
    await log_line(processes, "coordinator running")

    await processes.start(settings, "adapters")
    await wait_for_consumers(bus.connection, settings, WORK_QUEUES)
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    channel = await bus.channel()
    await publish(channel, bus.topology.events, order(order_id), correlation_id=order_id)
    await wait_for_status(settings, [order_id], {SagaStatus.COMPLETED})
    assert await processes.stop(coordinator) == 0

    seen = waits(processes)
    postgres_port, rabbitmq_port = str(postgres.port), str(rabbitmq.port)
    assert {s for s, _, _ in seen} == {"Postgres", "RabbitMQ"}
    assert all(why == "connection refused" for _, _, why in seen), seen
    assert {(s, p) for s, p, _ in seen} == {
        ("Postgres", postgres_port),
        ("RabbitMQ", rabbitmq_port),
    }
    # Postgres was waited for first, then RabbitMQ only
    services = [s for s, _, _ in seen]
    assert services == sorted(services, key=["Postgres", "RabbitMQ"].index)
    # one line per attempt: nothing else logged before the coordinator ran
    lines = processes.log_lines()
    first_run = next(i for i, line in enumerate(lines) if "coordinator running" in line)
    assert len(seen) == first_run, lines[:first_run]
    assert "Traceback" not in "\n".join(lines)


async def test_the_adapters_wait_for_a_broker_that_hangs_up_and_stop_on_sigterm(
    settings: Settings, db_schema: str, processes: Processes, gates: tuple[Gate, Gate]
) -> None:
    await migrated(settings)
    postgres, rabbitmq = gates
    await postgres.open()
    await rabbitmq.hang_up()  # accepts, then closes: a broker going down
    adapters = await processes.start(
        settings, "adapters", BUS_DATABASE_URL=postgres.url, BUS_AMQP_URL=rabbitmq.url
    )
    await log_line(processes, "waiting for RabbitMQ", count=2)

    adapters.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(adapters.wait(), 30) == 0

    seen = waits(processes)
    assert seen and {s for s, _, _ in seen} == {"RabbitMQ"}, processes.log_lines()
    assert "Traceback" not in "\n".join(processes.log_lines())


async def test_the_adapters_start_once_the_broker_is_back(
    settings: Settings, db_schema: str, bus: TestBus, processes: Processes, gates: tuple[Gate, Gate]
) -> None:
    await migrated(settings)
    postgres, rabbitmq = gates
    adapters = await processes.start(
        settings, "adapters", BUS_DATABASE_URL=postgres.url, BUS_AMQP_URL=rabbitmq.url
    )
    await log_line(processes, "waiting for Postgres")
    await postgres.open()
    await rabbitmq.hang_up()
    await log_line(processes, "waiting for RabbitMQ")
    await rabbitmq.open()
    await log_line(processes, "adapter shipping consuming")
    assert await processes.stop(adapters) == 0
    assert "Traceback" not in "\n".join(processes.log_lines())


async def test_a_mismatched_exchange_is_one_line_and_exit_code_2(
    settings: Settings, db_schema: str, amqp_url: str
) -> None:
    await migrated(settings)
    name = f"{settings.exchange_prefix}bus.events"
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)

        code, _, err = await cli(settings, "run")
    finally:
        await Topology(settings.exchange_prefix).delete(await connection.channel())
        await connection.close()

    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert f"exchange '{name}'" in lines[0] and "'alternate-exchange'" in lines[0]
    assert "Traceback" not in err


async def test_one_shot_commands_do_not_wait(settings: Settings, gates: tuple[Gate, Gate]) -> None:
    postgres, rabbitmq = gates
    for args in (("migrate",), ("sagas", "list")):
        code, _, err = await cli(settings, *args, BUS_DATABASE_URL=postgres.url)
        assert code == 2 and "Postgres is not reachable" in err, err
        assert "waiting for" not in err
    code, _, err = await cli(
        settings,
        "publish",
        "orders.order_cancelled.v1",
        "--data",
        '{"order_id": "o-1"}',
        BUS_AMQP_URL=rabbitmq.url,
    )
    assert code == 2 and "RabbitMQ is not reachable" in err, err
