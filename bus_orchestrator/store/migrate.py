"""Numbered ``.sql`` migrations, applied once per schema under an advisory lock.

Each file in ``store/migrations`` is applied in name order inside one transaction that also
records it in ``schema_migrations``. The files name tables unqualified; the transaction's
``search_path`` points them at the target schema, so one set of files serves any schema.

The files whose name holds ``_adapter_`` concern the adapters' command log alone
(``adapter_command``, ``adapter_claim``) and nothing else: they are the set an adapters
database needs (``ADAPTER_MIGRATIONS``), which may be another database than the
orchestrator's. Every other file concerns the orchestrator's tables.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

import asyncpg

from bus_orchestrator.errors import SchemaNotMigratedError
from bus_orchestrator.store.driver_errors import postgres_errors

_LOCK_NAMESPACE = b"bus_orchestrator.migrate:"


ADAPTER_MIGRATIONS = "_adapter_"
"""The mark of the migrations of the adapters' command log (``only=`` below)."""


def available(only: str | None = None) -> list[tuple[str, str]]:
    """Every migration shipped with the package (or those whose name holds ``only``), as
    ``(version, sql)`` in order."""
    folder = files("bus_orchestrator.store").joinpath("migrations")
    found = sorted(
        (entry.name.removesuffix(".sql"), entry)
        for entry in folder.iterdir()
        if entry.name.endswith(".sql") and (only is None or only in entry.name)
    )
    return [(version, entry.read_text(encoding="utf-8")) for version, entry in found]


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory lock key for migrating ``schema``."""
    digest = hashlib.blake2b(_LOCK_NAMESPACE + schema.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def migrate(conn: asyncpg.Connection, schema: str, only: str | None = None) -> list[str]:
    """Bring ``schema`` up to date (with the migrations whose name holds ``only``, if
    given); return the versions applied by this call, in order.

    Safe to run concurrently from several processes: the advisory lock serialises them, and
    whoever comes second finds nothing left to do.
    """
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
        # Created under the lock, since a bare CREATE SCHEMA IF NOT EXISTS can still race; and
        # only when missing, since CREATE SCHEMA checks the CREATE privilege even when it exists.
        if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        await conn.execute("SELECT set_config('search_path', $1, true)", quote_ident(schema))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in available(only):
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())", version
            )
            applied.append(version)
    return applied


async def require_migrated(pool: asyncpg.Pool, schema: str, only: str | None = None) -> None:
    """Refuse to run on a schema that lacks migrations this code needs (those whose name
    holds ``only``, if given).

    Without this, a coordinator started before ``migrate`` would dead-letter every message
    for a missing table; better to stop at once and say what to do.
    """
    with postgres_errors:
        async with pool.acquire() as conn:
            table = await conn.fetchval(
                "SELECT to_regclass(format('%I.schema_migrations', $1::text))", schema
            )
            done = (
                {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                if table is not None
                else set()
            )
    missing = [version for version, _ in available(only) if version not in done]
    if missing:
        raise SchemaNotMigratedError(
            f"schema {schema!r} (BUS_DATABASE_SCHEMA) lacks migrations {missing}: run "
            "'bus-orchestrator migrate" + (" --adapters'" if only == ADAPTER_MIGRATIONS else "'")
        )
