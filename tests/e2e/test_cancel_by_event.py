"""Cancelling a running saga by publishing its cancel request with ``bus-orchestrator publish``:
it compensates what it did and ends on the bus as ``compensated``."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import aio_pika
import pytest

from bus_orchestrator.adapters.processor import reply_id_for
from bus_orchestrator.config import Settings
from bus_orchestrator.core.lifecycle import SagaEnded
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.ports import HistoryEntry
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.transport.codec import RawMessage, decode
from contracts import REGISTRY, StockReleased, StockReserved
from tests.conftest import TestBus
from tests.e2e.processes import cli
from tests.integration.harness import (
    RELEASE,
    RESERVE,
    migrated,
    order,
    publish,
    start_coordinator,
    wait_for_status,
)

pytestmark = pytest.mark.e2e

CANCEL = "saga.order_to_cash.cancel_requested.v1"
COMPENSATED = "saga.order_to_cash.compensated.v1"


def decoded(message: aio_pika.abc.AbstractIncomingMessage) -> object:
    raw = RawMessage(
        body=message.body,
        headers=dict(message.headers or {}),
        content_type=message.content_type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        exchange=message.exchange,
        routing_key=message.routing_key,
    )
    return decode(raw, REGISTRY, 1_000_000).payload


async def saga_when(settings: Settings, correlation_id: str, until: str) -> SagaInstance:
    """The saga once ``until`` names a field it has set; fails after 30 s."""
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    store = PostgresSagaStore(pool, timedelta(seconds=1))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    try:
        while True:
            found = await store.find(correlation_id)
            if found and getattr(found[0], until) is not None:
                return found[0]
            assert loop.time() < deadline, f"{correlation_id}: {until} never set ({found})"
            await asyncio.sleep(0.05)
    finally:
        await pool.close()


async def saga_history(settings: Settings, saga: SagaInstance) -> list[HistoryEntry]:
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    try:
        return await PostgresSagaStore(pool, timedelta(seconds=1)).history(saga.saga_id)
    finally:
        await pool.close()


async def test_a_cancel_request_published_with_the_cli_compensates_a_running_saga(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    commands = await bus.tap(bus.topology.commands)  # no adapters: the test answers
    # the saga's events on bus.events: the request to cancel it, and its end
    about = await bus.tap(bus.topology.events, "saga.order_to_cash.*.v1")
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        await publish(channel, bus.topology.events, order("o-1"), correlation_id="o-1")
        [reserve] = await bus.drain(commands, 1)
        assert reserve.routing_key == RESERVE

        data = json.dumps({"correlation_id": "o-1", "reason": "the customer called"})
        code, out, err = await cli(
            settings, "publish", CANCEL, "--data", data, "--correlation-id", "o-1"
        )
        assert code == 0, err
        request_id = out.strip()
        cancelled = await saga_when(settings, "o-1", "cancel_reason")
        # the reservation is still in flight: the saga awaits it before undoing it
        assert (cancelled.status, cancelled.cancel_reason) == (
            SagaStatus.RUNNING,
            "the customer called",
        )

        reserved = StockReserved(order_id="o-1", reservation_id="r-1")
        reserve_id = reserve.message_id or ""
        await publish(
            channel,
            bus.topology.replies,
            reserved,
            message_id=reply_id_for(reserve_id),
            correlation_id="o-1",
            causation_id=reserve_id,
        )
        [release] = await bus.drain(commands, 1)
        assert release.routing_key == RELEASE  # never the charge: only the undoing
        assert (release.headers or {})["ce-compensates"] == reserve_id
        release_id = release.message_id or ""
        await publish(
            channel,
            bus.topology.replies,
            StockReleased(order_id="o-1", reservation_id="r-1"),
            message_id=reply_id_for(release_id),
            correlation_id="o-1",
            causation_id=release_id,
        )
        [saga] = (await wait_for_status(settings, ["o-1"], {SagaStatus.COMPENSATED})).values()
        request, ended = await bus.drain(about, 2)
    finally:
        await service.stop()

    assert saga.failure == "the customer called"
    assert (request.routing_key, request.message_id) == (CANCEL, request_id)
    assert ended.routing_key == COMPENSATED
    payload = decoded(ended)
    assert isinstance(payload, SagaEnded)
    assert (payload.saga_id, payload.status, payload.reason) == (
        saga.saga_id,
        "compensated",
        "the customer called",
    )
    assert await commands.get(no_ack=True, fail=False) is None  # nothing else went out
    assert await about.get(no_ack=True, fail=False) is None  # it ended once
    history = [(h.message_type, h.message_id) for h in await saga_history(settings, saga)]
    assert (CANCEL, request_id) in history
