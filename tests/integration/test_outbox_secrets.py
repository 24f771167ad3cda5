"""A secret travels to the adapter that needs it, and is not kept in the outbox afterwards."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import SecretStr

from adapters import example_adapters
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from tests.conftest import TestBus
from tests.integration.harness import (
    CHARGE,
    RESERVE,
    SHIP,
    migrated,
    order,
    publish,
    rows_when,
    start_coordinator,
    wait_for_status,
)

pytestmark = pytest.mark.integration

COMPLETED = "saga.order_to_cash.completed.v1"


async def test_no_confirmed_outbox_row_keeps_the_payment_token(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    token = f"tok-{uuid.uuid4().hex}"
    commands = await bus.tap(bus.topology.commands)
    stop_adapters = asyncio.Event()
    adapters = asyncio.create_task(run_adapters(settings, example_adapters(), stop_adapters))
    service = await start_coordinator(settings)
    try:
        event = order("o-1").model_copy(update={"payment_token": SecretStr(token)})
        await publish(await bus.channel(), bus.topology.events, event, correlation_id="o-1")
        await wait_for_status(settings, ["o-1"], {SagaStatus.COMPLETED})
        rows = await rows_when(
            settings,
            "SELECT message_type, sent_at, body, headers::text AS headers FROM outbox",
            lambda rows: len(rows) == 4 and all(r["sent_at"] is not None for r in rows),
        )
        sent = await bus.drain(commands, 3)
    finally:
        await service.stop()
        stop_adapters.set()
        await adapters

    # the token went out to the payments adapter, in clear, as it must
    [charge] = [m for m in sent if m.routing_key == CHARGE]
    assert token.encode() in charge.body
    # and no confirmed row holds it, nor any other body (the saga's end event's neither)
    assert sorted(r["message_type"] for r in rows) == sorted([RESERVE, CHARGE, SHIP, COMPLETED])
    assert [r["message_type"] for r in rows if token.encode() in (r["body"] or b"")] == []
    assert [(r["body"], r["headers"]) for r in rows] == [(None, None)] * 4
