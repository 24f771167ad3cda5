"""Helpers for tests that run the coordinator on the real broker and database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aio_pika
import asyncpg

from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Message
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.store.migrate import migrate
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.transport.codec import encode
from contracts import REGISTRY, Address, LineItem, OrderPlaced
from sagas import all_sagas


async def migrated(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn, settings.database_schema)
    finally:
        await conn.close()


RESERVE, RELEASE = "inventory.reserve_stock.v1", "inventory.release_stock.v1"
CHARGE, REFUND = "payments.charge_payment.v1", "payments.refund_payment.v1"
SHIP = "shipping.create_shipment.v1"

SCENARIOS = {
    "ok": (dict(), SagaStatus.COMPLETED, [RESERVE, CHARGE, SHIP]),
    "oos": (dict(sku="OOS-1"), SagaStatus.COMPENSATED, [RESERVE]),
    "declined": (dict(price="10000.01"), SagaStatus.COMPENSATED, [RESERVE, CHARGE, RELEASE]),
    "zz": (dict(country="ZZ"), SagaStatus.COMPENSATED, [RESERVE, CHARGE, SHIP, REFUND, RELEASE]),
}
"""The example domain's outcomes: order() changes, final status, commands the adapters see."""


def order(
    order_id: str, *, sku: str = "SKU-1", price: str = "10.00", country: str = "DE"
) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id="c-1",
        items=(LineItem(sku=sku, quantity=1, unit_price=Decimal(price)),),
        total=Decimal(price),
        currency="EUR",
        shipping_address=Address(country=country),
    )


EXAMPLE_APP = "order-to-cash"
"""The example app's name (``example.NAME``): its queues are ``bus.order-to-cash.*``."""


async def start_coordinator(
    settings: Settings, step_timeout: float = 30.0, app: str | None = EXAMPLE_APP
) -> CoordinatorService:
    """The example's coordinator, as the example app (``app``) runs it."""
    service = CoordinatorService(
        settings, all_sagas(timedelta(seconds=step_timeout)), REGISTRY, app=app
    )
    await service.start()
    return service


async def publish(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    payload: Message,
    *,
    message_id: str | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> str:
    message_id = message_id or str(uuid.uuid4())
    out = encode(
        message_id=message_id,
        payload=payload,
        exchange=exchange,
        source="urn:test",
        time=datetime.now(UTC),
        correlation_id=correlation_id,
        causation_id=causation_id,
    )
    await publish_raw(
        channel, exchange, out.routing_key, out.body, dict(out.headers), out.content_type
    )
    return message_id


async def publish_raw(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: dict[str, Any] | None = None,
    content_type: str | None = "application/json",
) -> None:
    target = await channel.get_exchange(exchange, ensure=False)
    await target.publish(
        aio_pika.Message(
            body,
            headers=headers or {},
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        ),
        routing_key=routing_key,
    )


def structured(message_type: str, data: Any, **attributes: Any) -> bytes:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": message_type,
            "source": "urn:test",
            "specversion": "1.0",
            "data": data,
            **attributes,
        }
    ).encode()


async def wait_for_status(
    settings: Settings,
    correlation_ids: list[str],
    statuses: set[SagaStatus],
    within: float = 30.0,
) -> dict[str, SagaInstance]:
    """Poll until each saga has one of ``statuses``; fails with what it saw on timeout."""
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    store = PostgresSagaStore(pool, timedelta(seconds=1))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    found: dict[str, SagaInstance] = {}
    try:
        while True:
            rows = await store.list_sagas(limit=10_000)
            found = {i.correlation_id: i for i in rows if i.correlation_id in set(correlation_ids)}
            if len(found) == len(correlation_ids) and all(
                i.status in statuses for i in found.values()
            ):
                return found
            if loop.time() > deadline:
                seen = {cid: str(i.status) for cid, i in found.items()}
                raise AssertionError(f"timed out waiting for {statuses}; saw {seen}")
            await asyncio.sleep(0.05)
    finally:
        await pool.close()


async def sql(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.database_schema}
    )
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def rows_when(
    settings: Settings,
    query: str,
    until: Callable[[list[asyncpg.Record]], bool],
    within: float = 10.0,
) -> list[asyncpg.Record]:
    """Poll ``query`` until its rows satisfy ``until``; the last rows either way, for asserts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        rows = await sql(settings, query)
        if until(rows) or loop.time() > deadline:
            return rows
        await asyncio.sleep(0.05)
