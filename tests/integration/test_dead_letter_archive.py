"""The dead-letter archive on the real broker and database: every message of ``bus.dead``
becomes one row, as it came (not JSON, not a CloudEvent, dead-lettered by RabbitMQ
itself), a redelivery makes no second row, and nothing is acknowledged while Postgres
cannot take it."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.runtime.dead_archive import DeadArchive
from bus_orchestrator.store.dead_letters import PostgresDeadLetters
from bus_orchestrator.store.postgres import create_pool
from bus_orchestrator.transport.dead_letters import dead_letter_record
from bus_orchestrator.transport.publisher import dead_letter_reasons
from bus_orchestrator.transport.topology import Topology
from tests.conftest import TestBus
from tests.integration.dead_harness import queue_counts, rows, served_api, to_dead
from tests.integration.harness import migrated, publish_raw

pytestmark = pytest.mark.integration


async def test_each_dead_letter_is_archived_as_it_came_and_taken_off_the_queue(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    topology = bus.topology
    order_id = f"o-{uuid.uuid4().hex[:6]}"
    at = datetime(2026, 11, 29, 21, 0, 1, 123456, tzinfo=UTC)
    reasons = dead_letter_reasons(
        "schema-violation",  # type: ignore[arg-type]
        "orders.order_placed.v1: currency: too long",
        "coordinator",
        at,
        topology.events,
        "orders.order_placed.v1",
    )
    engine_style = {
        "ce-id": "evt-1",
        "ce-type": "orders.order_placed.v1",
        "ce-source": "urn:shop",
        "ce-specversion": "1.0",
        "ce-correlationid": order_id,
        "x-odd-bytes": bytearray(b"\x00\xff"),
        "x-odd-text": "a\x00b",
        "x-odd-decimal": Decimal("1.50"),
        **reasons,
    }
    async with served_api(settings) as api:
        await to_dead(
            bus, b'{"order_id": "x", "currency": "EURO"}', engine_style, message_id="evt-1"
        )
        await to_dead(bus, b"\xff\xfe not json at all", {}, content_type=None)
        listed = await api.listed(2)
        assert await queue_counts(bus, topology.dead) == (0, 1)  # taken off, still consuming

    by_reason = {item["reason"]: item for item in listed}
    assert set(by_reason) == {"schema-violation", "unknown"}
    engine = by_reason["schema-violation"]
    assert engine["message_id"] == "evt-1"
    assert engine["message_type"] == "orders.order_placed.v1"
    assert engine["source"] == "urn:shop"
    assert engine["detail"] == "orders.order_placed.v1: currency: too long"
    assert engine["original_exchange"] == topology.events
    assert engine["original_routing_key"] == "orders.order_placed.v1"
    assert engine["dead_lettered_by"] == "coordinator"
    assert engine["dead_lettered_at"] == at.isoformat()
    assert engine["status"] == "dead"
    # The data is invalid, so the saga id comes from the correlation id, as the engine
    # derives it for the start event of order_to_cash.
    from bus_orchestrator.core.state import saga_id_for

    assert engine["saga_id"] == saga_id_for("order_to_cash", order_id)
    garbage = by_reason["unknown"]
    assert garbage["message_type"] is None and garbage["original_exchange"] is None

    stored = await rows(settings)
    assert len(stored) == 2
    raw = {r["reason"]: r for r in stored}
    assert bytes(raw["unknown"]["body"]) == b"\xff\xfe not json at all"
    assert bytes(raw["schema-violation"]["body"]) == b'{"order_id": "x", "currency": "EURO"}'


async def test_show_gives_headers_and_a_body_as_json_or_base64(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    async with served_api(settings) as api:
        await to_dead(
            bus, b'{"a": [1, 2]}', {"x-dead-reason": "malformed", "x-bin": bytearray(b"\x00\x01")}
        )
        await to_dead(bus, b"\x00\x01binary", {"x-dead-reason": "oversized"})
        items = {i["reason"]: i for i in await api.listed(2)}
        as_json = await api.ok(f"/dead/{items['malformed']['id']}")
        as_base64 = await api.ok(f"/dead/{items['oversized']['id']}")
    assert as_json["body_encoding"] == "json" and as_json["body"] == {"a": [1, 2]}
    assert as_json["body_base64"] is None
    assert as_json["headers"]["x-bin"] == {"$bytes": base64.b64encode(b"\x00\x01").decode()}
    assert as_json["properties"]["content_type"] == "application/json"
    assert as_base64["body_encoding"] == "base64" and as_base64["body"] is None
    assert base64.b64decode(as_base64["body_base64"]) == b"\x00\x01binary"


async def test_a_message_rabbitmq_dead_lettered_itself_says_so_and_where_from(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    """The broker's own dead-lettering (x-death): a work queue's delivery limit."""
    await migrated(settings)
    topology = Topology(bus.topology.prefix, delivery_limit=1)
    channel = await bus.channel()
    name = topology.queue("limit-test")
    bus.queues.append(name)
    queue = await topology.declare_work_queue(channel, name, [(topology.events, "orders.#")])
    await publish_raw(channel, topology.events, "orders.order_placed.v1", b'{"x": 1}')
    async with served_api(settings) as api:
        for _ in range(2):  # past the limit of 1: RabbitMQ moves it to bus.dead
            message = await queue.get(timeout=10)
            await message.nack(requeue=True)
        [item] = await api.listed(1)
    assert item["reason"] == "rabbitmq:delivery_limit"
    assert name in item["detail"]
    assert item["original_exchange"] == topology.events
    assert item["original_routing_key"] == "orders.order_placed.v1"


async def test_a_redelivered_dead_letter_makes_no_second_row(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    """Archived, then its acknowledgement lost with the channel: the broker redelivers it
    (with x-delivery-count), and the archive finds its row."""
    await migrated(settings)
    await to_dead(bus, b'{"k": 1}', {"x-dead-reason": "handler-error", "ce-id": "m-1"})
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    try:
        channel = await bus.connection.channel()
        queue = await channel.declare_queue(bus.topology.dead, passive=True)
        first = await queue.get(timeout=10)
        assert await PostgresDeadLetters(pool).archive(
            dead_letter_record(first, datetime.now(UTC)), None
        )
        await channel.close()  # never acknowledged: back to the queue
    finally:
        await pool.close()

    async with served_api(settings) as api:
        for _ in range(200):
            if await queue_counts(bus, bus.topology.dead) == (0, 1):
                break
            await asyncio.sleep(0.05)
        assert await queue_counts(bus, bus.topology.dead) == (0, 1)
        [item] = await api.listed(1)
        assert api.archive.archived == 0  # the redelivery wrote nothing
    assert len(await rows(settings)) == 1
    assert item["message_id"] == "m-1"


async def test_nothing_is_acknowledged_while_postgres_cannot_take_it(
    settings: Settings, db_schema: str, bus: TestBus, unused_tcp_port: int
) -> None:
    """An archive whose Postgres is unreachable holds the dead letter; stopped, the
    message is back in the queue, and an archive that can write takes it."""
    await migrated(settings)
    down = settings.model_copy(
        update={
            "database_url": f"postgresql://root@127.0.0.1:{unused_tcp_port}/test",
            "db_connect_timeout_seconds": 1.0,
        }
    )
    await to_dead(bus, b"{}", {"x-dead-reason": "malformed"})
    pool = await create_pool(down, min_size=0)
    archive = DeadArchive(settings, PostgresDeadLetters(pool))
    try:
        await archive.start()
        await asyncio.wait_for(archive.consuming(), 30)
        for _ in range(100):  # delivered to it, and held unacknowledged
            if await queue_counts(bus, bus.topology.dead) == (0, 1):
                break
            await asyncio.sleep(0.05)
        assert await queue_counts(bus, bus.topology.dead) == (0, 1)
        await asyncio.sleep(1.0)  # a few failed inserts later, still held
        assert await queue_counts(bus, bus.topology.dead) == (0, 1)
    finally:
        await archive.stop()
        await pool.close()
    assert archive.archived == 0
    assert await queue_counts(bus, bus.topology.dead) == (1, 0)

    async with served_api(settings) as api:
        [item] = await api.listed(1)
    assert item["reason"] == "malformed"
