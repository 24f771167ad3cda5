"""Migrations: applied once, idempotent, safe to run from two processes at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bus_orchestrator.store.migrate import available, migrate

pytestmark = pytest.mark.integration

# The tables of 0001; later migrations (other components') may add more.
TABLES = {"saga", "saga_inbox", "saga_history", "outbox", "schema_migrations"}
VERSIONS = [version for version, _ in available()]


async def tables_in(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    return sorted(row["table_name"] for row in rows)


async def recorded_versions(conn: asyncpg.Connection, schema: str) -> list[str]:
    query = f'SELECT version FROM "{schema}".schema_migrations ORDER BY version'  # noqa: S608 - test's own schema name
    return [row["version"] for row in await conn.fetch(query)]


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def missing_schema(database_url: str, unique_name: str) -> AsyncIterator[str]:
    """A schema name that does not exist yet; dropped afterwards if a test created it."""
    name = f"{unique_name}_new"
    yield name
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


def test_migrations_are_numbered_sql_files() -> None:
    assert VERSIONS[0] == "0001_initial"
    assert VERSIONS == sorted(VERSIONS)


async def test_second_run_applies_nothing(conn: asyncpg.Connection, db_schema: str) -> None:
    assert await migrate(conn, db_schema) == VERSIONS
    assert await migrate(conn, db_schema) == []

    assert TABLES <= set(await tables_in(conn, db_schema))
    assert await recorded_versions(conn, db_schema) == VERSIONS


async def test_migrate_leaves_the_session_search_path_alone(
    conn: asyncpg.Connection, db_schema: str
) -> None:
    before = await conn.fetchval("SHOW search_path")
    await migrate(conn, db_schema)
    assert await conn.fetchval("SHOW search_path") == before


async def test_creates_a_missing_schema(conn: asyncpg.Connection, missing_schema: str) -> None:
    assert await migrate(conn, missing_schema) == VERSIONS
    assert TABLES <= set(await tables_in(conn, missing_schema))


@pytest.mark.parametrize("exists", [True, False], ids=["existing-schema", "missing-schema"])
async def test_concurrent_runs_both_succeed(
    database_url: str, db_schema: str, missing_schema: str, exists: bool
) -> None:
    schema = db_schema if exists else missing_schema
    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        results = await asyncio.gather(migrate(first, schema), migrate(second, schema))
        tables = await tables_in(first, schema)
        recorded = await recorded_versions(first, schema)
    finally:
        await first.close()
        await second.close()

    assert sorted(results) == [[], VERSIONS]
    assert TABLES <= set(tables)
    assert len(tables) == len(set(tables))  # each table exactly once
    assert recorded == VERSIONS


async def test_require_migrated_names_what_is_missing(settings, db_schema) -> None:
    from bus_orchestrator.errors import SchemaNotMigratedError
    from bus_orchestrator.store.migrate import require_migrated
    from bus_orchestrator.store.postgres import create_pool

    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    try:
        with pytest.raises(SchemaNotMigratedError, match="0001_initial"):
            await require_migrated(pool, db_schema)
        conn = await asyncpg.connect(settings.database_url)
        try:
            await migrate(conn, db_schema)
        finally:
            await conn.close()
        await require_migrated(pool, db_schema)
    finally:
        await pool.close()
