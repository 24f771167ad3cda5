"""The adapters' command log in a database (here a schema) of its own.

A team's adapters need not reach the orchestrator's database: with
``BUS_ADAPTERS_DATABASE_URL`` / ``BUS_ADAPTERS_DATABASE_SCHEMA`` they keep their processed
commands, claims and tombstones there, and need only the command log's migrations.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from adapters import example_adapters
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.store.migrate import ADAPTER_MIGRATIONS, available, migrate
from bus_orchestrator.transport import codec
from bus_orchestrator.transport.publisher import AmqpPublisher
from contracts import ReserveStock
from contracts.inventory import StockLine
from tests.conftest import TestBus
from tests.e2e.processes import cli, consumers
from tests.integration.harness import EXAMPLE_APP, sql

pytestmark = pytest.mark.integration


@pytest.fixture
async def log_schema(database_url: str, unique_name: str) -> AsyncIterator[str]:
    """A second schema, for the adapters' log (created by the migration, dropped after)."""
    name = f"{unique_name}_adapters"
    yield name
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def tables(settings: Settings, schema: str) -> set[str]:
    rows = await sql(
        settings, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    return {r["table_name"] for r in rows}


def test_the_command_log_migrations_are_those_of_its_tables() -> None:
    versions = [version for version, _ in available(ADAPTER_MIGRATIONS)]
    assert versions == ["0002_adapter_commands", "0006_adapter_tombstones"]
    for version, text in available():
        touches_log = "adapter_command" in text or "adapter_claim" in text
        assert touches_log == (version in versions), version


async def test_migrate_adapters_prepares_only_the_command_log_in_its_own_schema(
    settings: Settings, db_schema: str, log_schema: str
) -> None:
    code, out, err = await cli(
        settings, "migrate", "--adapters", BUS_ADAPTERS_DATABASE_SCHEMA=log_schema
    )
    assert code == 0, err
    assert "0002_adapter_commands" in out and "0007" not in out
    assert await tables(settings, log_schema) == {
        "schema_migrations",
        "adapter_command",
        "adapter_claim",
    }
    assert await tables(settings, db_schema) == set()  # the orchestrator's: not touched

    # a plain migrate with the adapters apart migrates both, each with its own set
    code, out, err = await cli(settings, "migrate", BUS_ADAPTERS_DATABASE_SCHEMA=log_schema)
    assert code == 0, err
    assert {"saga", "outbox", "adapter_command"} <= await tables(settings, db_schema)
    assert await tables(settings, log_schema) == {
        "schema_migrations",
        "adapter_command",
        "adapter_claim",
    }


async def test_adapters_keep_their_log_in_their_own_schema(
    settings: Settings, db_schema: str, log_schema: str, bus: TestBus
) -> None:
    # The orchestrator's schema is left empty: the adapters never look at it.
    apart = settings.model_copy(update={"adapters_database_schema": log_schema})
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn, log_schema, ADAPTER_MIGRATIONS)
    finally:
        await conn.close()
    replies = await bus.tap(bus.topology.replies)
    stop = asyncio.Event()
    task = asyncio.create_task(run_adapters(apart, example_adapters(), stop, app=EXAMPLE_APP))
    queue = bus.topology.adapter_queue(EXAMPLE_APP, "inventory")
    bus.queues.extend(bus.topology.adapter_queue(EXAMPLE_APP, n) for n in ("payments", "shipping"))
    try:
        for _ in range(200):
            if task.done() or await consumers(bus.connection, queue):
                break
            await asyncio.sleep(0.05)
        assert not task.done(), task.exception()
        command = codec.encode(
            message_id="command-1",
            payload=ReserveStock(order_id="o-1", items=(StockLine(sku="A", quantity=1),)),
            exchange=bus.topology.commands,
            source="urn:test:coordinator",
            time=datetime.now(UTC),
            correlation_id="o-1",
            causation_id="cause-1",
        )
        channel = await bus.channel()
        await AmqpPublisher(channel).publish(command)
        [reply] = await bus.drain(replies, 1)
        assert reply.type == "inventory.stock_reserved.v1"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    logged = await sql(apart.for_adapters(), "SELECT adapter, command_id FROM adapter_command")
    assert [tuple(r) for r in logged] == [("inventory", "command-1")]
    claims = await sql(apart.for_adapters(), "SELECT command_id, settled_at FROM adapter_claim")
    assert [r["command_id"] for r in claims] == ["command-1"] and claims[0]["settled_at"]
    assert await tables(settings, db_schema) == set()
