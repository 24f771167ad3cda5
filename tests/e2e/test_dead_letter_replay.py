"""Done when: a dead-lettered message is listed, corrected and replayed over HTTP, and its
saga then completes. The coordinator and the example's adapters run in process on the
real broker and database, with the API (and its dead-letter archive) beside them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from adapters import example_adapters
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus, saga_id_for
from contracts import OrderCancelled
from tests.conftest import TestBus
from tests.e2e.processes import WORK_QUEUES, wait_for_consumers
from tests.integration.dead_harness import served_api
from tests.integration.harness import (
    EXAMPLE_APP,
    migrated,
    order,
    publish,
    start_coordinator,
    wait_for_status,
)

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def running(settings: Settings, bus: TestBus) -> AsyncIterator[None]:
    """The example's coordinator and adapters, consuming this test's queues."""
    stop = asyncio.Event()
    coordinator = await start_coordinator(settings)
    adapters = asyncio.create_task(
        run_adapters(settings, example_adapters(), stop, app=EXAMPLE_APP)
    )
    try:
        await wait_for_consumers(bus.connection, settings, WORK_QUEUES)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(adapters, 30)
        await coordinator.stop()


@pytest.fixture
async def engine(settings: Settings, db_schema: str, bus: TestBus) -> AsyncIterator[None]:
    await migrated(settings)
    async with running(settings, bus):
        yield


async def test_a_refused_order_is_corrected_and_replayed_over_http_and_completes(
    settings: Settings, bus: TestBus, engine: None
) -> None:
    order_id = f"dead-{uuid.uuid4().hex[:6]}"
    good = json.loads(order(order_id).model_dump_json())
    channel = await bus.channel()
    async with served_api(settings) as api:
        # The shop sends a currency the contract refuses: the coordinator dead-letters it.
        bad = order(order_id).model_copy(update={"currency": "EURO"})
        message_id = await publish(channel, bus.topology.events, bad, correlation_id=order_id)
        [item] = await api.listed(1, reason="schema-violation")
        assert item["message_id"] == message_id
        assert item["message_type"] == "orders.order_placed.v1"
        assert "currency" in item["detail"]
        assert item["original_exchange"] == bus.topology.events
        assert item["original_routing_key"] == "orders.order_placed.v1"
        assert item["saga_id"] == saga_id_for("order_to_cash", order_id)
        assert item["dead_lettered_by"] == "coordinator"
        shown = await api.ok(f"/dead/{item['id']}")
        assert shown["body"]["currency"] == "EURO"
        assert (await api.get(f"/sagas/{item['saga_id']}")).status_code == 404  # no saga yet

        replayed = await api.post(
            f"/dead/{item['id']}/replay", {"reason": "currency fixed with the shop", "data": good}
        )
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["message_id"] == message_id

        found = await wait_for_status(settings, [order_id], {SagaStatus.COMPLETED}, within=60)
        saga = found[order_id]
        assert saga.saga_id == item["saga_id"]
        assert saga.status is SagaStatus.COMPLETED
        view = await api.ok(f"/sagas/{item['saga_id']}")
        assert view["status"] == "completed"
        assert view["started_by"]["message_id"] == message_id
        history = await api.ok(f"/sagas/{item['saga_id']}/history")
        assert history["entries"][0]["message_id"] == message_id

        after = await api.ok(f"/dead/{item['id']}")
        assert after["status"] == "replayed"
        assert after["replayed_by"] == "olga"
        assert after["replay_reason"] == "currency fixed with the shop"
        assert (await api.ok("/dead"))["items"] == []  # nothing else died on the way


async def test_an_expired_cancellation_replayed_before_its_order_is_kept_for_it(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    """An ``expired`` event is replayed under a new id by default: the park holds its own
    id, and would drop the same id as a duplicate while the saga does not exist yet.

    Two cancellations expire before their orders come. Both are replayed while the
    coordinator is stopped, their orders published behind them: the one under a new id
    is kept for its order and compensates it; the one forced to keep its id is dropped
    as a duplicate by the park, and its order completes."""
    await migrated(settings)
    quick = settings.model_copy(update={"park_ttl_seconds": 0.3, "park_sweep_seconds": 0.1})
    channel = await bus.channel()
    kept, dropped = (f"late-{n}-{uuid.uuid4().hex[:6]}" for n in range(2))
    async with served_api(settings) as api:
        async with running(quick, bus):
            for order_id in (kept, dropped):
                cancel = OrderCancelled(order_id=order_id, reason="changed my mind")
                await publish(channel, bus.topology.events, cancel, correlation_id=order_id)
            expired = {i["correlation_id"]: i for i in await api.listed(2, reason="expired")}
        assert expired[kept]["saga_id"] == saga_id_for("order_to_cash", kept)

        fresh = await api.post(f"/dead/{expired[kept]['id']}/replay", {"reason": "order is coming"})
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["message_id"] != expired[kept]["message_id"]
        same = await api.post(
            f"/dead/{expired[dropped]['id']}/replay", {"reason": "same id", "new_id": False}
        )
        assert same.status_code == 200, same.text
        assert same.json()["message_id"] == expired[dropped]["message_id"]
        for order_id in (kept, dropped):
            await publish(channel, bus.topology.events, order(order_id), correlation_id=order_id)

        async with running(settings, bus):  # the default park time to live: minutes
            found = await wait_for_status(
                settings,
                [kept, dropped],
                {SagaStatus.COMPENSATED, SagaStatus.COMPLETED},
                within=60,
            )
    assert found[kept].status is SagaStatus.COMPENSATED
    assert found[kept].failure == "order cancelled: changed my mind"
    assert found[dropped].status is SagaStatus.COMPLETED
