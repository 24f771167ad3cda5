"""The HTTP API's outlet on the real services: what it commits is published by its own
relay; with RabbitMQ unreachable the rows stay in the outbox and are published later, by
its own sweep once the broker is back, or by a coordinator's relay of the same app."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bus_orchestrator.api.outlet import PostgresOutlet, postgres_outlet
from bus_orchestrator.config import Settings
from bus_orchestrator.ports import Change, CommitResult
from bus_orchestrator.store.postgres import create_pool
from example import create_app
from tests.conftest import TestBus
from tests.e2e.gate import Gate
from tests.integration.harness import migrated, order, rows_when, sql, start_coordinator

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(settings: Settings, db_schema: str) -> AsyncIterator[asyncpg.Pool]:
    await migrated(settings)
    opened = await create_pool(settings.model_copy(update={"db_pool_size": 2}), min_size=0)
    try:
        yield opened
    finally:
        await opened.close()


def change_of(outlet: PostgresOutlet, order_id: str) -> Change:
    event_id = str(uuid.uuid4())
    message = outlet.encode(order(order_id), message_id=event_id, correlation_id=order_id)
    return Change(
        consumer=outlet.consumer,
        message_id=event_id,
        saga_id=None,
        instance=None,
        expected_version=None,
        history=(),
        outbox=(message,),
        source=outlet.source,
    )


UNSENT = "SELECT message_id, app FROM outbox WHERE sent_at IS NULL"
SENT = "SELECT message_id FROM outbox WHERE sent_at IS NOT NULL"


async def test_a_commit_is_published_by_the_outlets_relay(
    settings: Settings, pool: asyncpg.Pool, bus: TestBus
) -> None:
    tap = await bus.tap(bus.topology.events, "orders.order_placed.v1")
    async with postgres_outlet(settings, create_app(settings), pool) as outlet:
        change = change_of(outlet, "o-out-1")
        committed = await outlet.commit(change)
        assert committed.result is CommitResult.COMMITTED
        [received] = await bus.drain(tap, 1)
        assert received.message_id == change.message_id
        assert json.loads(received.body)["order_id"] == "o-out-1"
        assert received.headers["ce-source"] == "urn:bus-orchestrator:api:order-to-cash"
        rows = await rows_when(settings, SENT, lambda r: len(r) == 1)
        assert [r["message_id"] for r in rows] == [change.message_id]

        # the same change again: the inbox knows it, nothing more is written
        assert (await outlet.commit(change)).result is CommitResult.DUPLICATE
    assert await tap.get(fail=False) is None
    assert len(await sql(settings, "SELECT 1 FROM outbox")) == 1
    # the app's scope was registered: its relay takes only its own rows
    apps = await sql(settings, "SELECT DISTINCT app FROM saga_type_app")
    assert [r["app"] for r in apps] == ["order-to-cash"]


async def test_rows_wait_while_rabbitmq_is_down_and_go_when_it_is_back(
    settings: Settings, pool: asyncpg.Pool, bus: TestBus
) -> None:
    tap = await bus.tap(bus.topology.events, "orders.order_placed.v1")
    gate = Gate(settings.amqp_url, 5672)  # closed: RabbitMQ is unreachable for the outlet
    down = settings.model_copy(update={"amqp_url": gate.url})
    try:
        async with postgres_outlet(down, create_app(down), pool) as outlet:
            change = change_of(outlet, "o-out-2")
            assert (await outlet.commit(change)).result is CommitResult.COMMITTED
            # several sweeps go by (lease 2 s, sweep 0.2 s): still unsent, still there
            rows = await rows_when(settings, SENT, lambda r: bool(r), within=3.0)
            assert rows == []
            assert [r["message_id"] for r in await sql(settings, UNSENT)] == [change.message_id]
            assert await tap.get(fail=False) is None

            await gate.open()
            [received] = await bus.drain(tap, 1, within=15.0)
            assert received.message_id == change.message_id
            await rows_when(settings, SENT, lambda r: len(r) == 1)
    finally:
        await gate.close()
    assert await sql(settings, UNSENT) == []


async def test_rows_left_unsent_are_published_by_a_coordinators_sweep(
    settings: Settings, pool: asyncpg.Pool, bus: TestBus
) -> None:
    tap = await bus.tap(bus.topology.events, "orders.order_placed.v1")
    gate = Gate(settings.amqp_url, 5672)
    down = settings.model_copy(update={"amqp_url": gate.url})
    async with postgres_outlet(down, create_app(down), pool) as outlet:
        change = change_of(outlet, "o-out-3")
        assert (await outlet.commit(change)).result is CommitResult.COMMITTED
    # the API process is gone, its row unsent; the app's coordinator comes
    rows = await sql(settings, UNSENT)
    assert [(r["message_id"], r["app"]) for r in rows] == [(change.message_id, "order-to-cash")]
    service = await start_coordinator(settings)
    try:
        [received] = await bus.drain(tap, 1, within=15.0)
        assert received.message_id == change.message_id
        await rows_when(settings, UNSENT, lambda r: not r)
    finally:
        await service.stop()
    assert await sql(settings, UNSENT) == []
