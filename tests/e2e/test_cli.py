"""The command line as a user runs it: separate processes, a foreign AMQP client, signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pika
import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "bus_orchestrator"]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(
        BUS_AMQP_URL=settings.amqp_url,
        BUS_DATABASE_URL=settings.database_url,
        BUS_DATABASE_SCHEMA=settings.database_schema,
        BUS_EXCHANGE_PREFIX=settings.exchange_prefix,
        BUS_TIMER_POLL_SECONDS="0.1",
    )
    env.update(extra)
    return env


async def cli(settings: Settings, *args: str, **extra: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env_for(settings, **extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def consumers(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.consumer_count or 0
    except aio_pika.exceptions.ChannelClosed:
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()


class Processes:
    def __init__(self) -> None:
        self.running: list[asyncio.subprocess.Process] = []

    async def start(self, settings: Settings, *args: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *CLI,
            *args,
            env=env_for(settings),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self.running.append(process)
        return process


@pytest.fixture
async def processes() -> AsyncIterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        for process in procs.running:
            if process.returncode is None:
                process.kill()
                await process.wait()


def publish_with_pika(url: str, exchange: str, body: dict[str, Any]) -> None:
    """A plain AMQP client, not this project's code, publishing a structured CloudEvent."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange=exchange,
            routing_key=body["type"],
            body=json.dumps(body).encode(),
            properties=pika.BasicProperties(
                content_type="application/cloudevents+json", delivery_mode=2
            ),
        )
    finally:
        connection.close()


async def show(settings: Settings, saga: str) -> dict[str, Any] | None:
    code, out, _ = await cli(settings, "sagas", "show", saga, "--json")
    return json.loads(out) if code == 0 else None


async def wait_for(settings: Settings, saga: str, status: str) -> dict[str, Any]:
    for _ in range(150):
        view = await show(settings, saga)
        if view is not None and view["status"] == status:
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"{saga} never reached {status}: {view}")


ORDER = {
    "customer_id": "c-9",
    "items": [{"sku": "SKU-9", "quantity": 1, "unit_price": "12.50"}],
    "total": "12.50",
    "currency": "EUR",
    "shipping_address": {"country": "FR"},
}


async def test_cli_end_to_end(
    settings: Settings, db_schema: str, bus: TestBus, processes: Processes
) -> None:
    # migrate: twice at once, then again (a no-op)
    results = await asyncio.gather(cli(settings, "migrate"), cli(settings, "migrate"))
    assert [code for code, _, _ in results] == [0, 0], results
    code, out, _ = await cli(settings, "migrate")
    assert code == 0 and "up to date" in out

    coordinator = await processes.start(settings, "run")
    adapters = await processes.start(settings, "adapters")
    topology = bus.topology
    for _ in range(150):
        counts = [
            await consumers(bus.connection, topology.queue(q))
            for q in ("coordinator", "adapter.inventory", "adapter.payments", "adapter.shipping")
        ]
        if all(counts):
            break
        await asyncio.sleep(0.2)
    assert all(counts), counts

    # a foreign client starts one saga ...
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "type": "orders.order_placed.v1",
        "source": "urn:pika",
        "correlationid": "cli-1",
        "data": {"order_id": "cli-1", **ORDER},
    }
    await asyncio.to_thread(publish_with_pika, settings.amqp_url, topology.events, event)
    # ... and the CLI another, which shipping rejects
    zz = {**ORDER, "order_id": "cli-2", "shipping_address": {"country": "ZZ"}}
    code, out, err = await cli(
        settings, "publish", "orders.order_placed.v1", "--data", json.dumps(zz)
    )
    assert code == 0, err
    assert out.strip()  # the message id

    done = await wait_for(settings, "cli-1", "completed")
    assert done["saga_type"] == "order_to_cash" and done["correlation_id"] == "cli-1"
    assert [(s["name"], s["status"], s["attempts"]) for s in done["steps"]] == [
        ("reserve_stock", "succeeded", 1),
        ("charge_payment", "succeeded", 1),
        ("create_shipment", "succeeded", 1),
    ]
    for step in done["steps"]:
        assert set(step) >= {
            "name",
            "status",
            "command_type",
            "attempts",
            "started_at",
            "finished_at",
            "error",
        }
    assert set(done) >= {
        "saga_id",
        "saga_type",
        "correlation_id",
        "status",
        "created_at",
        "updated_at",
        "steps",
    }
    assert (await show(settings, done["saga_id"])) is not None  # by saga id as well

    rejected = await wait_for(settings, "cli-2", "compensated")
    assert [s["status"] for s in rejected["steps"]] == ["compensated", "compensated", "failed"]
    assert "ZZ" in rejected["steps"][2]["error"] or rejected["steps"][2]["error"]

    code, out, _ = await cli(settings, "sagas", "list", "--json")
    listed = json.loads(out)
    assert [v["correlation_id"] for v in listed] == ["cli-2", "cli-1"]  # newest first
    code, out, _ = await cli(settings, "sagas", "list", "--status", "completed", "--json")
    assert [v["correlation_id"] for v in json.loads(out)] == ["cli-1"]
    code, out, _ = await cli(settings, "sagas", "show", "cli-2")  # the readable table
    assert code == 0 and "create_shipment" in out

    # SIGTERM: both stop cleanly, and promptly
    for process in (coordinator, adapters):
        process.send_signal(signal.SIGTERM)
    for process in (coordinator, adapters):
        assert await asyncio.wait_for(process.wait(), 30) == 0


async def test_unknown_saga_and_bad_publish_are_clear_errors(
    settings: Settings, db_schema: str
) -> None:
    assert (await cli(settings, "migrate"))[0] == 0
    code, _, err = await cli(settings, "sagas", "show", "nope")
    assert code == 1 and "no saga" in err
    code, _, err = await cli(settings, "publish", "orders.nope.v1", "--data", "{}")
    assert code == 1 and "unknown message type" in err
    code, _, err = await cli(settings, "publish", "orders.order_placed.v1", "--data", '{"x": 1}')
    assert code == 1 and "invalid data" in err


@pytest.mark.parametrize(
    ("args", "override", "service", "hint"),
    [
        (
            ("sagas", "list"),
            {"BUS_DATABASE_URL": "postgresql://root@127.0.0.1:1/test"},
            "Postgres",
            "pg_ctlcluster",
        ),
        (
            ("migrate",),
            {"BUS_DATABASE_URL": "postgresql://root@127.0.0.1:1/test"},
            "Postgres",
            "pg_ctlcluster",
        ),
        (
            ("publish", "orders.order_cancelled.v1", "--data", '{"order_id": "x"}'),
            {"BUS_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"},
            "RabbitMQ",
            "rabbitmq-server -detached",
        ),
    ],
)
async def test_unreachable_services_are_named_with_how_to_start_them(
    settings: Settings, args: tuple[str, ...], override: dict[str, str], service: str, hint: str
) -> None:
    code, _, err = await cli(settings, *args, **override)
    assert code == 2
    assert f"{service} is not reachable" in err and hint in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["run", "adapters"])
async def test_an_unmigrated_schema_is_refused_at_start(
    settings: Settings, db_schema: str, command: str
) -> None:
    code, _, err = await cli(settings, command)
    assert code == 2
    assert "lacks migrations" in err and "bus-orchestrator migrate" in err
