"""Done when: a dead-lettered message is listed, corrected and replayed over HTTP, and its
saga then completes. The coordinator and the example's adapters run in process on the
real broker and database, with the API (and its dead-letter archive) beside them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest

from adapters import example_adapters
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus, saga_id_for
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


@pytest.fixture
async def engine(settings: Settings, db_schema: str, bus: TestBus) -> AsyncIterator[None]:
    """The example's coordinator and adapters, consuming this test's queues."""
    await migrated(settings)
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
