"""The command line as a user runs it: separate processes, a foreign AMQP client, signals."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pika
import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.e2e.processes import WORK_QUEUES, Processes, cli, wait_for_consumers

pytestmark = pytest.mark.e2e


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
    await wait_for_consumers(bus.connection, settings, WORK_QUEUES)

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
        assert await processes.stop(process) == 0


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


async def test_send_puts_a_command_on_bus_commands(settings: Settings, bus: TestBus) -> None:
    commands = await bus.tap(bus.topology.commands)
    data = {"order_id": "o-7", "reservation_id": "r-7"}
    code, out, err = await cli(
        settings,
        "send",
        "inventory.release_stock.v1",
        "--data",
        json.dumps(data),
        "--correlation-id",
        "o-7",
    )
    assert code == 0, err
    [message] = await bus.drain(commands, 1)
    assert message.routing_key == "inventory.release_stock.v1"  # binary mode: ce- headers
    assert message.headers["ce-id"] == out.strip()
    assert message.headers["ce-correlationid"] == "o-7"
    assert json.loads(message.body)["order_id"] == "o-7"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ("publish", "inventory.release_stock.v1", "--data", '{"order_id": "o-8"}'),
            "inventory.release_stock.v1 is a command: use "
            "`bus-orchestrator send inventory.release_stock.v1`",
        ),
        (
            ("send", "orders.order_cancelled.v1", "--data", '{"order_id": "o-8"}'),
            "orders.order_cancelled.v1 is an event: use "
            "`bus-orchestrator publish orders.order_cancelled.v1`",
        ),
        *(
            (
                (verb, "inventory.stock_released.v1", "--data", '{"order_id": "o-8"}'),
                "inventory.stock_released.v1 is a reply: replies are sent by adapters, in "
                "answer to a command (send the command instead)",
            )
            for verb in ("publish", "send")
        ),
    ],
)
async def test_publish_and_send_refuse_the_other_kind_and_publish_nothing(
    settings: Settings, bus: TestBus, args: tuple[str, ...], line: str
) -> None:
    taps = [
        await bus.tap(exchange)
        for exchange in (bus.topology.events, bus.topology.commands, bus.topology.replies)
    ]
    code, out, err = await cli(settings, *args)
    assert (code, out, err.splitlines()) == (2, "", [line])
    await asyncio.sleep(0.5)
    for tap in taps:
        assert await tap.get(no_ack=True, fail=False) is None
