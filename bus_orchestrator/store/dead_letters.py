"""The dead-letter archive in Postgres (table ``dead_letter``, migration 0009).

The archive consumer inserts each message of ``bus.dead`` (``archive``); listing reads the
table, never the queue. A replay locks its row while it publishes (``replaying``), so two
replays of one dead letter cannot both send it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from importlib.resources import files

import asyncpg

from bus_orchestrator.ports import (
    DeadAfter,
    DeadFilter,
    DeadLetterRecord,
    DeadStatus,
    StoredDeadLetter,
)
from bus_orchestrator.store.driver_errors import postgres_errors


@dataclass(frozen=True, slots=True)
class _Sql:
    dead_archive: str
    dead_page: str
    dead_get: str
    dead_lock: str
    dead_replayed: str
    dead_purge: str

    @classmethod
    def load(cls) -> _Sql:
        folder = files("bus_orchestrator.store").joinpath("sql")
        return cls(
            **{
                f.name: folder.joinpath(f"{f.name}.sql").read_text(encoding="utf-8")
                for f in fields(cls)
            }
        )


_ROW_FIELDS = {f.name for f in fields(StoredDeadLetter)}


def _row(record: asyncpg.Record) -> StoredDeadLetter:
    values = {k: v for k, v in dict(record).items() if k in _ROW_FIELDS}
    for name in ("properties", "headers"):
        if isinstance(values.get(name), str):
            values[name] = json.loads(values[name])
    for name in ("id", "saga_id"):
        if values.get(name) is not None:
            values[name] = str(values[name])
    values["status"] = DeadStatus(values["status"])
    return StoredDeadLetter(**values)


def as_uuid(text: str) -> str | None:
    """``text`` as a canonical uuid, or ``None`` when it is not one (no row has it)."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


class PostgresDeadLetters:
    """The ``dead_letter`` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = _Sql.load()

    async def archive(self, record: DeadLetterRecord, saga_id: str | None) -> bool:
        """Keep ``record``; ``False`` when it is there already (a redelivery)."""
        with postgres_errors:
            found = await self._pool.fetchval(
                self._sql.dead_archive,
                record.id,
                record.fingerprint,
                record.message_id,
                record.message_type,
                record.source,
                record.correlation_id,
                record.reason,
                record.detail,
                record.dead_lettered_by,
                record.original_exchange,
                record.original_routing_key,
                saga_id,
                record.content_type,
                json.dumps(record.properties),
                json.dumps(record.headers),
                record.body,
                len(record.body),
                record.dead_lettered_at,
            )
        return found is not None

    async def page(
        self, where: DeadFilter, after: DeadAfter | None, limit: int
    ) -> list[StoredDeadLetter]:
        """Newest first, after ``after``, at most ``limit``."""
        texts = (where.reason, where.message_type)
        if any(text is not None and "\x00" in text for text in texts):
            return []  # Postgres text cannot hold it: no row has it
        saga_id = None
        if where.saga_id is not None and (saga_id := as_uuid(where.saga_id)) is None:
            return []
        with postgres_errors:
            rows = await self._pool.fetch(
                self._sql.dead_page,
                None if where.status is None else where.status.value,
                where.reason,
                where.message_type,
                saga_id,
                None if after is None else after.dead_lettered_at,
                None if after is None else after.id,
                limit,
            )
        return [_row(r) for r in rows]

    async def get(self, dead_letter_id: str) -> StoredDeadLetter | None:
        """The whole row, or ``None``."""
        key = as_uuid(dead_letter_id)
        if key is None:
            return None
        with postgres_errors:
            row = await self._pool.fetchrow(self._sql.dead_get, key)
        return None if row is None else _row(row)

    @asynccontextmanager
    async def replaying(self, dead_letter_id: str) -> AsyncIterator[Replaying]:
        """The row, locked until the block ends; the block's ``mark`` is committed with
        it, and undone if the block raises."""
        key = as_uuid(dead_letter_id)
        with postgres_errors:
            async with self._pool.acquire() as conn, conn.transaction():
                row = None if key is None else await conn.fetchrow(self._sql.dead_lock, key)
                yield Replaying(conn, self._sql, None if row is None else _row(row))

    async def purge(self, dead_letter_id: str, by: str, reason: str) -> StoredDeadLetter | None:
        """Mark it purged and drop its body; ``None`` when there is no such row, or it is
        purged already (``get`` tells which)."""
        key = as_uuid(dead_letter_id)
        if key is None:
            return None
        with postgres_errors:
            row = await self._pool.fetchrow(self._sql.dead_purge, key, by, reason)
        return None if row is None else _row(row)


class Replaying:
    """A dead letter locked for a replay (``PostgresDeadLetters.replaying``)."""

    def __init__(
        self,
        conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        sql: _Sql,
        row: StoredDeadLetter | None,
    ) -> None:
        self._conn = conn
        self._sql = sql
        self.row = row

    async def mark(self, by: str, reason: str, replayed_as: str | None) -> StoredDeadLetter:
        """Record that it was replayed, and as which message id."""
        assert self.row is not None  # noqa: S101 - only a found row is replayed
        with postgres_errors:
            row = await self._conn.fetchrow(
                self._sql.dead_replayed, self.row.id, by, reason, replayed_as
            )
        assert row is not None  # noqa: S101 - locked: it cannot have gone
        return _row(row)
