"""Bad input on the real bus and Postgres: each lands in ``bus.dead`` with the right reason.

None of it may reach Postgres (which cannot store NUL) or crash the handler (which would be
dead-lettered as ``handler-error`` with a traceback), and good traffic keeps flowing. The
coordinator is tested here, and the adapters, which decode with the same codec.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from adapters import FakeCarrier, FakeInventory, FakePaymentGateway, example_adapters
from bus_orchestrator.adapters import RetryPolicy
from bus_orchestrator.adapters.runner import run_adapters, work_queue_name
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from contracts import ReserveStock, StockReserved
from contracts.inventory import StockLine
from tests.conftest import TestBus
from tests.integration.harness import (
    migrated,
    order,
    publish,
    publish_raw,
    sql,
    start_coordinator,
    structured,
    wait_for_status,
)

pytestmark = pytest.mark.integration

PLACED = "orders.order_placed.v1"
RESERVE = "inventory.reserve_stock.v1"
DEEP = b"[" * 10_000 + b"]" * 10_000
CLOUDEVENTS_JSON = "application/cloudevents+json"


@pytest.fixture
async def schema(settings: Settings, db_schema: str) -> str:
    await migrated(settings)
    return db_schema


def order_data(order_id: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = order(order_id).model_dump(mode="json", exclude_none=True)
    return {**data, **changes}


def binary_headers(message_type: str, **attributes: Any) -> dict[str, Any]:
    headers = {
        "ce-id": str(uuid.uuid4()),
        "ce-type": message_type,
        "ce-source": "urn:test",
        "ce-specversion": "1.0",
    }
    return {**headers, **{f"ce-{name}": value for name, value in attributes.items()}}


async def dead_reasons(bus: TestBus, dead: aio_pika.abc.AbstractQueue, count: int) -> list[Any]:
    """The ``count`` dead letters as (reason, detail, body), sorted by body."""
    letters = await bus.drain(dead, count)
    found = [
        ((m.headers or {})["x-dead-reason"], str((m.headers or {})["x-dead-detail"]), m.body)
        for m in letters
    ]
    assert await dead.get(fail=False) is None, "more dead letters than expected"
    return sorted(found, key=lambda letter: letter[2])


async def assert_good_order_still_flows(
    settings: Settings, bus: TestBus, commands: aio_pika.abc.AbstractQueue
) -> None:
    channel = await bus.channel()
    await publish(channel, bus.topology.events, order("o-good"), correlation_id="o-good")
    [command] = await bus.drain(commands, 1)
    assert command.routing_key == RESERVE
    await wait_for_status(settings, ["o-good"], {SagaStatus.RUNNING})
    # nothing of the bad input reached Postgres: one saga, one inbox row, its own history
    assert [r["correlation_id"] for r in await sql(settings, "SELECT * FROM saga")] == ["o-good"]
    assert len(await sql(settings, "SELECT 1 FROM saga_inbox")) == 1


async def test_json_nested_10000_deep_is_malformed(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    commands = await bus.tap(bus.topology.commands)
    dead = await bus.tap(bus.topology.dead)
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        bodies = [
            b'{"specversion": "1.0", "id": "deep-1", "data": ' + DEEP + b"}",
            b'{"order_id": ' + DEEP + b"}",
        ]
        await publish_raw(channel, bus.topology.events, PLACED, bodies[0], {}, CLOUDEVENTS_JSON)
        await publish_raw(channel, bus.topology.events, PLACED, bodies[1], binary_headers(PLACED))
        letters = await dead_reasons(bus, dead, 2)
        assert [(reason, body) for reason, _, body in letters] == [
            ("malformed", body) for body in sorted(bodies)
        ]
        assert all("nested too deeply" in detail for _, detail, _ in letters)
        await assert_good_order_still_flows(settings, bus, commands)
    finally:
        await service.stop()


async def test_nul_in_data_is_a_schema_violation_and_in_an_attribute_not_a_cloudevent(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    commands = await bus.tap(bus.topology.commands)
    dead = await bus.tap(bus.topology.dead)
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        in_value = structured(PLACED, order_data("o-nul-1", customer_id="c\u00001"))
        in_key = json.dumps(order_data("o-nul-2") | {"x\u0000": 1}).encode()
        in_id = structured(PLACED, order_data("o-nul-3"), id="id\u0000")
        in_source = structured(PLACED, order_data("o-nul-4"), source="urn:\u0000")
        in_correlation = json.dumps(order_data("o-nul-5")).encode()
        surrogate = structured(PLACED, order_data("o-nul-6", customer_id="\udc00"))
        sent = [
            (in_value, {}, CLOUDEVENTS_JSON, "schema-violation"),
            (in_key, binary_headers(PLACED), "application/json", "schema-violation"),
            (in_id, {}, CLOUDEVENTS_JSON, "not-a-cloudevent"),
            (in_source, {}, CLOUDEVENTS_JSON, "not-a-cloudevent"),
            (
                in_correlation,
                binary_headers(PLACED, correlationid="o-nul-5\u0000"),
                "application/json",
                "not-a-cloudevent",
            ),
            (surrogate, {}, CLOUDEVENTS_JSON, "schema-violation"),
        ]
        for body, headers, content_type, _ in sent:
            await publish_raw(channel, bus.topology.events, PLACED, body, headers, content_type)
        letters = await dead_reasons(bus, dead, len(sent))
        expected = sorted((reason, body) for body, _, _, reason in sent)
        assert sorted((reason, body) for reason, _, body in letters) == expected
        for reason, detail, _ in letters:
            assert ("NUL" if reason == "schema-violation" else "control character") in detail
        await assert_good_order_still_flows(settings, bus, commands)
    finally:
        await service.stop()


async def test_a_binary_attribute_that_is_not_a_string_header_is_refused(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    commands = await bus.tap(bus.topology.commands)
    dead = await bus.tap(bus.topology.dead)
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        cases: list[dict[str, Any]] = [
            {"ce-id": 42},
            {"ce-id": True},
            {"ce-id": {"a": "table"}},
            {"ce-source": 7},
            {"ce-correlationid": 1001},
            {"ce-causationid": ["an", "array"]},
        ]
        for i, override in enumerate(cases):
            body = json.dumps(order_data(f"o-int-{i}")).encode()
            await publish_raw(
                channel, bus.topology.events, PLACED, body, binary_headers(PLACED) | override
            )
        letters = await dead_reasons(bus, dead, len(cases))
        assert {reason for reason, _, _ in letters} == {"not-a-cloudevent"}
        details = sorted(detail for _, detail, _ in letters)
        assert details == sorted(
            f"header '{name}' must be a string, not {type(value).__name__}"
            for case in cases
            for name, value in case.items()
        )
        await assert_good_order_still_flows(settings, bus, commands)
    finally:
        await service.stop()


async def test_a_reply_without_causationid_is_dead_lettered_and_its_saga_waits_on(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    commands = await bus.tap(bus.topology.commands)
    dead = await bus.tap(bus.topology.dead)
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        await publish(channel, bus.topology.events, order("o-r"), correlation_id="o-r")
        [reserve] = await bus.drain(commands, 1)
        reply = StockReserved(order_id="o-r", reservation_id="res-1")
        await publish(channel, bus.topology.replies, reply, correlation_id="o-r")  # no cause
        [(reason, detail, _)] = await dead_reasons(bus, dead, 1)
        assert reason == "missing-attributes"
        assert "causationid" in detail
        saga = (await wait_for_status(settings, ["o-r"], {SagaStatus.RUNNING}))["o-r"]
        assert saga.pending_command_id == reserve.message_id  # not failed: still waiting
        # the same reply, now naming its command, moves the saga on
        await publish(
            channel,
            bus.topology.replies,
            reply,
            correlation_id="o-r",
            causation_id=reserve.message_id,
        )
        [charge] = await bus.drain(commands, 1)
        assert charge.routing_key == "payments.charge_payment.v1"
    finally:
        await service.stop()


@pytest.fixture
async def adapters_running(settings: Settings, bus: TestBus, schema: str) -> AsyncIterator[None]:
    adapters = example_adapters(
        inventory=FakeInventory(),
        payments=FakePaymentGateway(),
        shipping=FakeCarrier(),
        retry=RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.05, jitter=0.01),
    )
    # declared up front, as the runner declares them, so no command sent early is lost
    channel = await bus.channel()
    for adapter in adapters:
        await bus.topology.declare_work_queue(
            channel,
            bus.topology.queue(work_queue_name(adapter)),
            [(bus.topology.commands, command_type) for command_type in adapter.command_types],
        )
    await channel.close()
    stop = asyncio.Event()
    task = asyncio.create_task(run_adapters(settings, adapters, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_the_adapters_label_bad_commands_alike(
    settings: Settings, bus: TestBus, adapters_running: None
) -> None:
    replies = await bus.tap(bus.topology.replies)
    dead = await bus.tap(bus.topology.dead)
    channel = await bus.channel()
    good = ReserveStock(order_id="o-a", items=(StockLine(sku="A", quantity=1),))
    data = good.model_dump(mode="json")
    cases = [
        (b'{"order_id": ' + DEEP + b"}", {}, "malformed"),
        (json.dumps({**data, "order_id": "o\u0000"}).encode(), {}, "schema-violation"),
        (json.dumps(data).encode(), {"ce-id": 42}, "not-a-cloudevent"),
        (json.dumps(data).encode(), {"ce-correlationid": "o\u0000a"}, "not-a-cloudevent"),
    ]
    for body, override, _ in cases:
        headers = binary_headers(RESERVE, correlationid="o-a") | override
        await publish_raw(channel, bus.topology.commands, RESERVE, body, headers)
    letters = await dead_reasons(bus, dead, len(cases))
    assert sorted((reason, body) for reason, _, body in letters) == sorted(
        (reason, body) for body, _, reason in cases
    )
    # a good command still gets its reply
    await publish(channel, bus.topology.commands, good, correlation_id="o-a")
    [reply] = await bus.drain(replies, 1)
    assert reply.routing_key == "inventory.stock_reserved.v1"
    assert len(await sql(settings, "SELECT 1 FROM adapter_command")) == 1
