"""Edges of the message path on the real broker and database: a cancel that overtakes its
order, ids reused by other sources, a valid order of non-ASCII text near the size limit."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from adapters import example_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from contracts import Address, LineItem, OrderCancelled, OrderPlaced
from tests.conftest import TestBus
from tests.e2e.conftest import Adapters
from tests.integration.harness import (
    CHARGE,
    REFUND,
    RELEASE,
    RESERVE,
    order,
    publish,
    sql,
    start_coordinator,
    wait_for_status,
)

pytestmark = pytest.mark.e2e

ORDERS = 50


async def test_cancels_right_behind_their_orders_are_never_lost(
    settings: Settings, bus: TestBus, running_adapters: Adapters
) -> None:
    running_adapters.start(example_adapters())
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        ids = [f"oc-{n:02d}" for n in range(ORDERS)]
        for oid in ids:  # back to back: each cancel lands in the prefetch with its order
            await publish(channel, bus.topology.events, order(oid), correlation_id=oid)
            cancel = OrderCancelled(order_id=oid, reason="changed my mind")
            await publish(channel, bus.topology.events, cancel, correlation_id=oid)
        finals = {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED}
        sagas = await wait_for_status(settings, ids, finals, within=90)
        assert {oid: sagas[oid].status for oid in ids} == dict.fromkeys(ids, SagaStatus.COMPENSATED)
        rows = await sql(settings, "SELECT correlation_id, command_type FROM adapter_command")
        acted: dict[str, list[str]] = {}
        for row in rows:
            acted.setdefault(row["correlation_id"], []).append(row["command_type"])
        # cancelled while reserving: the reservation is undone, nothing is charged or shipped
        for oid in ids:
            assert sorted(acted[oid]) == sorted([RESERVE, RELEASE]), (oid, acted[oid])
        parked = await sql(settings, "SELECT count(*) AS n FROM parked_event")
        assert parked[0]["n"] == 0
    finally:
        await service.stop()


async def test_a_cancel_before_its_order_waits_for_it(
    settings: Settings, bus: TestBus, running_adapters: Adapters
) -> None:
    running_adapters.start(example_adapters())
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        await publish(channel, bus.topology.events, OrderCancelled(order_id="early-1"))
        history = (
            "SELECT outcome FROM saga_history WHERE message_type = 'orders.order_cancelled.v1'"
        )
        for _ in range(200):
            if await sql(settings, history):
                break
        await publish(channel, bus.topology.events, order("early-1"))
        sagas = await wait_for_status(settings, ["early-1"], {SagaStatus.COMPENSATED})
        outcomes = [
            (h["direction"], h["message_type"], h["outcome"])
            for h in await sql(
                settings,
                "SELECT direction, message_type, outcome FROM saga_history "
                "WHERE saga_id = $1::uuid ORDER BY id",
                sagas["early-1"].saga_id,
            )
        ]
        assert outcomes[0] == ("in", "orders.order_cancelled.v1", "parked")
        assert ("in", "orders.order_cancelled.v1", "advanced") in outcomes
        assert ("out", CHARGE, "queued") not in outcomes
    finally:
        await service.stop()


async def test_the_same_event_id_from_two_sources_starts_two_sagas(
    settings: Settings, bus: TestBus, running_adapters: Adapters
) -> None:
    running_adapters.start(example_adapters())
    service = await start_coordinator(settings)
    try:
        channel = await bus.channel()
        shared = str(uuid.uuid4())
        for oid, source in (("web-7", "urn:shop:web"), ("mob-7", "urn:shop:mobile")):
            await publish_from(channel, bus, order(oid), shared, oid, source)
        sagas = await wait_for_status(settings, ["web-7", "mob-7"], {SagaStatus.COMPLETED})
        assert len(sagas) == 2
        # a cancel reusing the id of another order, from yet another source, is applied
        await publish_from(channel, bus, order("late-7"), shared + "x", "late-7", "urn:a")
        await wait_for_status(settings, ["late-7"], {SagaStatus.COMPLETED})
        cancel = OrderCancelled(order_id="web-7")
        await publish_from(channel, bus, cancel, shared, "web-7", "urn:shop:backoffice")
        rows = await sql(
            settings,
            "SELECT source, outcome FROM saga_history h JOIN saga_inbox i "
            "ON i.message_id = h.message_id WHERE h.message_type = 'orders.order_cancelled.v1'",
        )
        for _ in range(100):
            rows = await sql(
                settings,
                "SELECT outcome FROM saga_history WHERE message_type = 'orders.order_cancelled.v1'",
            )
            if rows:
                break
        # the saga had completed: the cancel is recorded against it, not dropped unseen
        assert [r["outcome"] for r in rows] == ["ignored"]
    finally:
        await service.stop()


async def publish_from(
    channel: object, bus: TestBus, payload: object, message_id: str, oid: str, source: str
) -> None:
    from datetime import UTC, datetime

    from bus_orchestrator.transport.codec import encode
    from tests.integration.harness import publish_raw

    out = encode(
        message_id=message_id,
        payload=payload,  # type: ignore[arg-type]
        exchange=bus.topology.events,
        source=source,
        time=datetime.now(UTC),
        correlation_id=oid,
    )
    await publish_raw(
        channel,  # type: ignore[arg-type]
        bus.topology.events,
        out.routing_key,
        out.body,
        dict(out.headers),
        out.content_type,
    )


async def test_an_order_of_non_ascii_text_near_the_limit_goes_through(
    settings: Settings, bus: TestBus, running_adapters: Adapters
) -> None:
    """Its commands are no bigger than it is: text is sent as UTF-8, not as \\u escapes."""
    running_adapters.start(example_adapters())
    service = await start_coordinator(settings)
    try:
        items = tuple(
            LineItem(sku=f"Ärmel-größe-{n:04d}-" + "ü" * 170, quantity=1, unit_price=Decimal(1))
            for n in range(2590)
        )
        big = OrderPlaced(
            order_id="big-1",
            customer_id="c-1",
            items=items,
            total=Decimal(2590),
            currency="EUR",
            shipping_address=Address(country="DE"),
        )
        size = len(big.model_dump_json().encode())
        assert 1_000_000 < size < settings.max_message_bytes
        channel = await bus.channel()
        await publish(channel, bus.topology.events, big, correlation_id="big-1")
        sagas = await wait_for_status(settings, ["big-1"], {SagaStatus.COMPLETED}, within=60)
        assert sagas["big-1"].failure is None
        refunds = await sql(
            settings, "SELECT 1 FROM adapter_command WHERE command_type = $1", REFUND
        )
        assert refunds == []
    finally:
        await service.stop()
