"""``CommandLog`` in Postgres: the ``adapter_command`` table (migration 0002).

A new command costs two round trips (``find``, then ``record``); a repeated one costs one.
The pool's connections must have ``search_path`` set to the schema holding the table, as
``bus_orchestrator.store.postgres.create_pool`` does.
"""

from __future__ import annotations

import json
from importlib.resources import files

import asyncpg

from bus_orchestrator.adapters.command_log import (
    CommandRecord,
    Recorded,
    reply_document,
    reply_from_document,
)
from bus_orchestrator.errors import ConcurrencyConflictError
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.store.driver_errors import postgres_errors


def _sql(name: str) -> str:
    return files("bus_orchestrator.adapters").joinpath("sql", f"{name}.sql").read_text("utf-8")


class PostgresCommandLog:
    """Processed commands and their replies, one row per ``(adapter, command_id)``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._find = _sql("find_command")
        self._record = _sql("record_command")

    async def find(self, adapter: str, command_id: str) -> OutboxMessage | None:
        with postgres_errors:
            document = await self._pool.fetchval(self._find, adapter, command_id)
        return None if document is None else reply_from_document(json.loads(document))

    async def record(self, record: CommandRecord) -> Recorded:
        reply = record.reply
        with postgres_errors:
            inserted = await self._pool.fetchval(
                self._record,
                record.adapter,
                record.command_id,
                record.command_type,
                record.correlation_id,
                reply.message_id,
                reply.message_type,
                json.dumps(reply_document(reply)),
            )
        if inserted is not None:
            return Recorded(reply, inserted=True)
        stored = await self.find(record.adapter, record.command_id)
        if stored is None:
            # Recorded and deleted again between our two statements: let the redelivery
            # start over rather than publish a reply the log does not hold.
            raise ConcurrencyConflictError(
                f"command {record.command_id} of {record.adapter!r} vanished from the log"
            )
        return Recorded(stored, inserted=False)
