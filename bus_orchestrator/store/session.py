"""Short-lived store access for one-off commands (migrate, sagas show/list)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg

from bus_orchestrator.config import Settings
from bus_orchestrator.store.driver_errors import postgres_errors
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool


async def connect_once(settings: Settings) -> asyncpg.Connection:
    """One connection to the configured database (not yet to the schema, which may not exist)."""
    with postgres_errors:
        return await asyncpg.connect(
            settings.database_url, timeout=settings.db_connect_timeout_seconds
        )


@asynccontextmanager
async def open_store(settings: Settings, pool_size: int = 2) -> AsyncIterator[PostgresSagaStore]:
    """The saga store, for reading; raises ``SchemaNotMigratedError`` on a schema that lacks
    migrations (rather than failing on a missing table or column)."""
    from bus_orchestrator.store.migrate import require_migrated

    pool = await create_pool(settings.model_copy(update={"db_pool_size": pool_size}))
    try:
        await require_migrated(pool, settings.database_schema)
        yield PostgresSagaStore(pool, timedelta(seconds=settings.outbox_lease_seconds))
    finally:
        await pool.close()
