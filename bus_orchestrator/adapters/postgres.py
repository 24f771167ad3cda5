"""``CommandLog`` in Postgres: the ``adapter_command`` (migration 0002) and ``adapter_claim``
(migration 0006) tables.

A new command costs two round trips (``claim`` or ``tombstone``, then ``record``); a repeated
one costs one. Each method is one statement, atomic on its own. The pool's connections must
have ``search_path`` set to the schema holding the tables, as
``bus_orchestrator.store.postgres.create_pool`` does.
"""

from __future__ import annotations

import json
from datetime import timedelta
from importlib.resources import files

import asyncpg

from bus_orchestrator.adapters.command_log import (
    Admission,
    CommandRecord,
    Recorded,
    Standing,
    reply_document,
    reply_from_document,
)
from bus_orchestrator.errors import ConcurrencyConflictError
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.store.driver_errors import postgres_errors


def _sql(name: str) -> str:
    return files("bus_orchestrator.adapters").joinpath("sql", f"{name}.sql").read_text("utf-8")


def _reply(document: str | None) -> OutboxMessage | None:
    return None if document is None else reply_from_document(json.loads(document))


class PostgresCommandLog:
    """Processed commands and their replies, one row per ``(adapter, command_id)``; claims
    and tombstones, one row per command id."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._find = _sql("find_command")
        self._claim = _sql("claim_command")
        self._renew = _sql("renew_claim")
        self._tombstone = _sql("tombstone_command")
        self._record = _sql("record_command")
        self._release = _sql("release_claim")
        self._purge = _sql("purge_command_log")

    async def find(self, adapter: str, command_id: str) -> OutboxMessage | None:
        with postgres_errors:
            document = await self._pool.fetchval(self._find, adapter, command_id)
        return _reply(document)

    async def claim(self, adapter: str, command_id: str, lease: timedelta) -> Admission:
        with postgres_errors:
            row = await self._pool.fetchrow(self._claim, adapter, command_id, lease)
        assert row is not None  # noqa: S101 - INSERT .. ON CONFLICT DO UPDATE returns a row
        compensated_by = row["compensated_by"]
        if compensated_by is None:
            return Admission(Standing.CLAIMED, _reply(row["reply"]))
        return Admission(Standing.COMPENSATED, _reply(row["reply"]), compensated_by)

    async def renew(self, command_id: str, lease: timedelta) -> bool:
        with postgres_errors:
            renewed = await self._pool.fetchval(self._renew, command_id, lease)
        return renewed is not None

    async def tombstone(self, adapter: str, command_id: str, compensates: str) -> Admission:
        with postgres_errors:
            row = await self._pool.fetchrow(self._tombstone, adapter, command_id, compensates)
        assert row is not None  # noqa: S101 - INSERT .. ON CONFLICT DO UPDATE returns a row
        if row["tombstone"]:
            standing = Standing.FORWARD_LAPSED if row["lapsed"] else Standing.FORWARD_UNSEEN
        elif row["settled"]:
            standing = Standing.FORWARD_SETTLED
        else:
            standing = Standing.FORWARD_UNDER_WAY
        return Admission(standing, _reply(row["reply"]))

    async def record(self, record: CommandRecord) -> Recorded:
        reply = record.reply
        with postgres_errors:
            row = await self._pool.fetchrow(
                self._record,
                record.adapter,
                record.command_id,
                record.command_type,
                record.correlation_id,
                reply.message_id,
                reply.message_type,
                json.dumps(reply_document(reply)),
            )
        assert row is not None  # noqa: S101 - a SELECT without FROM returns one row
        tombstoned = bool(row["tombstoned"])
        if row["reply_id"] is not None:
            return Recorded(reply, inserted=True, tombstoned=tombstoned)
        stored = await self.find(record.adapter, record.command_id)
        if stored is None:
            # Recorded and deleted again between our two statements: let the redelivery
            # start over rather than publish a reply the log does not hold.
            raise ConcurrencyConflictError(
                f"command {record.command_id} of {record.adapter!r} vanished from the log"
            )
        return Recorded(stored, inserted=False, tombstoned=tombstoned)

    async def release(self, command_id: str) -> None:
        with postgres_errors:
            await self._pool.execute(self._release, command_id)

    async def purge(self, older_than: timedelta) -> int:
        with postgres_errors:
            removed = await self._pool.fetchval(self._purge, older_than)
        return int(removed)
