"""The in-memory twin of the dead-letter archive (``PostgresDeadLetters``), for tests and
for an API given an in-memory saga store. The same contract suite runs against both."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from bus_orchestrator.ports import (
    DeadAfter,
    DeadFilter,
    DeadLetterRecord,
    DeadStatus,
    StoredDeadLetter,
)
from bus_orchestrator.store.dead_letters import as_uuid


class InMemoryDeadLetters:
    """``ports.DeadLetterArchive`` in a dict."""

    def __init__(self) -> None:
        self._rows: dict[str, StoredDeadLetter] = {}
        self._fingerprints: set[bytes] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def archive(self, record: DeadLetterRecord, saga_id: str | None) -> bool:
        if record.fingerprint in self._fingerprints:
            return False
        self._fingerprints.add(record.fingerprint)
        self._rows[record.id] = StoredDeadLetter(
            id=record.id,
            message_id=record.message_id,
            message_type=record.message_type,
            source=record.source,
            correlation_id=record.correlation_id,
            reason=record.reason,
            detail=record.detail,
            dead_lettered_by=record.dead_lettered_by,
            original_exchange=record.original_exchange,
            original_routing_key=record.original_routing_key,
            saga_id=saga_id,
            content_type=record.content_type,
            body_bytes=len(record.body),
            dead_lettered_at=record.dead_lettered_at,
            archived_at=datetime.now(UTC),
            status=DeadStatus.DEAD,
            replayed_at=None,
            replayed_by=None,
            replay_reason=None,
            replayed_as=None,
            purged_at=None,
            purged_by=None,
            purge_reason=None,
            properties=dict(record.properties),
            headers=dict(record.headers),
            body=record.body,
        )
        return True

    async def page(
        self, where: DeadFilter, after: DeadAfter | None, limit: int
    ) -> list[StoredDeadLetter]:
        saga_id = None if where.saga_id is None else as_uuid(where.saga_id)
        if where.saga_id is not None and saga_id is None:
            return []  # not a uuid: no dead letter has it

        def matches(row: StoredDeadLetter) -> bool:
            return (
                (where.status is None or row.status is where.status)
                and (where.reason is None or row.reason == where.reason)
                and (where.message_type is None or row.message_type == where.message_type)
                and (saga_id is None or row.saga_id == saga_id)
                and (
                    after is None
                    or row.dead_lettered_at < after.dead_lettered_at
                    or (row.dead_lettered_at == after.dead_lettered_at and row.id > after.id)
                )
            )

        # Newest first, then by id ascending: the order of the Postgres index.
        found = sorted(
            (r for r in self._rows.values() if matches(r)),
            key=lambda r: (-r.dead_lettered_at.timestamp(), r.id),
        )
        return [
            dataclasses.replace(r, properties=None, headers=None, body=None) for r in found[:limit]
        ]

    async def get(self, dead_letter_id: str) -> StoredDeadLetter | None:
        key = as_uuid(dead_letter_id)
        return None if key is None else self._rows.get(key)

    @asynccontextmanager
    async def replaying(self, dead_letter_id: str) -> AsyncIterator[_Locked]:
        key = as_uuid(dead_letter_id) or ""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            locked = _Locked(self._rows.get(key))
            yield locked
            if locked.marked is not None:
                self._rows[key] = locked.marked

    async def purge(self, dead_letter_id: str, by: str, reason: str) -> StoredDeadLetter | None:
        row = await self.get(dead_letter_id)
        if row is None or row.status is DeadStatus.PURGED:
            return None
        purged = dataclasses.replace(
            row,
            status=DeadStatus.PURGED,
            body=None,
            purged_at=datetime.now(UTC),
            purged_by=by,
            purge_reason=reason,
        )
        self._rows[row.id] = purged
        return purged


class _Locked:
    def __init__(self, row: StoredDeadLetter | None) -> None:
        self.row = row
        self.marked: StoredDeadLetter | None = None

    async def mark(self, by: str, reason: str, replayed_as: str | None) -> StoredDeadLetter:
        assert self.row is not None  # noqa: S101 - only a found row is replayed
        self.marked = dataclasses.replace(
            self.row,
            status=DeadStatus.REPLAYED,
            replayed_at=datetime.now(UTC),
            replayed_by=by,
            replay_reason=reason,
            replayed_as=replayed_as,
        )
        return self.marked
