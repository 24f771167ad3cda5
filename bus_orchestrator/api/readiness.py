"""The checks of ``GET /readyz``: each says ``ok`` or why not, never a credential."""

from __future__ import annotations

import asyncio

import aio_pika
import asyncpg

from bus_orchestrator.errors import SchemaNotMigratedError
from bus_orchestrator.store.migrate import require_migrated

CHECK_SECONDS = 5.0
"""How long /readyz waits for each dependency."""


async def check_postgres(pool: asyncpg.Pool | None) -> str:
    if pool is None:
        return "ok"
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), CHECK_SECONDS)
    except Exception as exc:  # any failure means not ready
        return f"unreachable ({type(exc).__name__})"
    return "ok"


async def check_migrations(pool: asyncpg.Pool | None, schema: str) -> str:
    if pool is None:
        return "ok"
    try:
        await asyncio.wait_for(require_migrated(pool, schema), CHECK_SECONDS)
    except SchemaNotMigratedError as exc:
        return str(exc)
    except Exception as exc:
        return f"unknown, Postgres unreachable ({type(exc).__name__})"
    return "ok"


async def check_rabbitmq(url: str) -> str:
    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), CHECK_SECONDS)
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    await connection.close()
    return "ok"
