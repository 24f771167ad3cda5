"""The Postgres adapter of ``SagaStore`` and ``Outbox`` (asyncpg).

The message path costs two round trips: ``load`` is one query and ``commit`` one
data-modifying statement, atomic on its own in autocommit, with no BEGIN or COMMIT.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaInstance, SagaStatus, saga_id_for
from bus_orchestrator.errors import AppConflictError
from bus_orchestrator.ports import (
    AppScope,
    AwaitedLock,
    ByCorrelation,
    ByPendingCommand,
    Change,
    CommitResult,
    Committed,
    Direction,
    DueTimer,
    HeldLock,
    HistoryEntry,
    Loaded,
    LockGrant,
    OldestRunning,
    OutboxMessage,
    PageAfter,
    Parked,
    ParkedMessage,
    PendingPublish,
    SagaCount,
    SagaFilter,
    SagaKey,
    SagaLocks,
    SagaStats,
)
from bus_orchestrator.store.driver_errors import postgres_errors
from bus_orchestrator.store.queries import Queries

_INBOX_KEY = "saga_inbox_pkey"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool reset that sends nothing.

    asyncpg's default reset (``RESET ALL``, ``UNLISTEN *``, advisory unlock, ...) costs a
    round trip on every release. The store never leaves session state behind: the search
    path is a startup parameter, and it uses no ``SET``, ``LISTEN``, session advisory locks,
    temporary tables or cursors. An open transaction is still rolled back by the pool
    itself before this is called.
    """
    return


async def create_pool(settings: Settings, *, min_size: int | None = None) -> asyncpg.Pool:
    """A connection pool whose connections all look in ``settings.database_schema``.

    ``min_size`` 0 opens no connection up front (a pool that may start while Postgres is
    down, and connects when first used): the HTTP API's."""
    with postgres_errors:
        return await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.db_pool_size if min_size is None else min_size,
            max_size=settings.db_pool_size,
            timeout=settings.db_connect_timeout_seconds,
            command_timeout=settings.db_command_timeout_seconds,
            server_settings={"search_path": settings.database_schema},
            reset=_keep_session,
        )


async def register_app(pool: asyncpg.Pool, app: str, saga_types: Sequence[str]) -> AppScope:
    """Record that ``app`` runs ``saga_types`` on this database, and return its scope: every
    saga type it ever ran here (one it no longer defines stays its own, so its timers are
    still claimed, and fail, rather than wait forever).

    Raises ``AppConflictError`` when another app holds one of the types.
    """
    with postgres_errors:
        rows = await pool.fetch(Queries.load().register_app, app, list(saga_types))
    taken = sorted((r["saga_type"], r["app"]) for r in rows if r["app"] != app)
    if taken:
        held = ", ".join(f"{saga_type!r} by app {other!r}" for saga_type, other in taken)
        raise AppConflictError(
            f"app {app!r} defines saga types another app on this database runs ({held}): "
            "saga names must differ between apps (an app renamed: change its name in "
            "the table saga_type_app)"
        )
    return AppScope(app, tuple(sorted({r["saga_type"] for r in rows} | set(saga_types))))


@dataclass(frozen=True, slots=True)
class RunningVersion:
    """How many running sagas of one type started on one version of its definition."""

    saga_type: str
    definition_version: int
    running: int
    saga_ids: tuple[str, ...]
    """The oldest few of them."""


async def running_versions(pool: asyncpg.Pool, saga_types: Sequence[str]) -> list[RunningVersion]:
    """The (saga type, definition version) pairs running sagas of ``saga_types`` need: one
    query, at start-up, so a coordinator can refuse to run without a version they need."""
    with postgres_errors:
        rows = await pool.fetch(Queries.load().running_versions, list(saga_types))
    return [
        RunningVersion(r["saga_type"], r["definition_version"], r["running"], tuple(r["saga_ids"]))
        for r in rows
    ]


def _as_uuid(value: str) -> str | None:
    """The id if it is a UUID, else ``None`` (which matches no row)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return None
    return value


_UNFINISHED = [status.value for status in SagaStatus if not status.terminal]
"""The statuses of a saga not yet ended (``oldest_running.sql`` takes them)."""


def _instance(state: str) -> SagaInstance:
    return SagaInstance.model_validate_json(state)


def _single(row: asyncpg.Record | None) -> asyncpg.Record:
    if row is None:  # pragma: no cover - the statements always return one row
        raise RuntimeError("statement returned no row")
    return row


class PostgresSagaStore:
    """Saga state, inbox, history and outbox in one Postgres schema."""

    def __init__(
        self, pool: asyncpg.Pool, outbox_lease: timedelta, scope: AppScope | None = None
    ) -> None:
        self._pool = pool
        self._outbox_lease = outbox_lease
        self._sql = Queries.load()
        # With a scope, the rows written carry the app's name, and the background work
        # (timers, park sweep, relay sweep, purges) takes only the app's rows; NULL: all.
        self._app = scope.app if scope is not None else None
        self._types = list(scope.saga_types) if scope is not None else None

    # -- the message path --------------------------------------------------------------

    async def load(self, consumer: str, message_id: str, key: SagaKey, source: str = "") -> Loaded:
        args: tuple[str | None, ...]
        if isinstance(key, ByCorrelation):
            query, args = self._sql.load_by_correlation, (key.saga_type, key.correlation_id)
        elif isinstance(key, ByPendingCommand):
            query, args = self._sql.load_by_pending_command, (key.command_id,)
        else:
            query, args = self._sql.load_by_saga_id, (_as_uuid(key.saga_id),)
        with postgres_errors:
            row = _single(await self._pool.fetchrow(query, consumer, message_id, *args, source))
        state = row["state"]
        return Loaded(
            seen=row["seen"],
            instance=None if state is None else _instance(state),
            parked=isinstance(key, ByCorrelation) and row["parked"],
        )

    async def commit(self, change: Change) -> Committed:
        instance = change.instance
        history_saga_id = change.saga_id
        saga_args: tuple[object, ...]
        if instance is None:
            query, saga_args = self._sql.commit_record_only, ()
        elif change.expected_version is None:
            # Only a saga that takes entity locks pays for them: its commit queues it.
            waits = instance.waiting_for_locks and bool(instance.locks)
            query = self._sql.commit_insert_waiting if waits else self._sql.commit_insert_saga
            saga_args = (
                instance.saga_id,
                instance.saga_type,
                instance.correlation_id,
                instance.status.value,
                instance.version,
                instance.model_dump_json(),
                instance.pending_command_id,
                instance.deadline,
                instance.created_at,
                instance.updated_at,
                *([list(instance.locks)] if waits else []),
            )
        else:
            # A final status releases the saga's keys, and its place in any queue.
            releases = instance.status.terminal and bool(instance.locks)
            query = self._sql.commit_update_release if releases else self._sql.commit_update_saga
            saga_args = (
                instance.saga_id,
                change.expected_version,
                instance.status.value,
                instance.version,
                instance.model_dump_json(),
                instance.pending_command_id,
                instance.deadline,
                instance.updated_at,
            )
        if history_saga_id is None and instance is not None:
            history_saga_id = instance.saga_id
        args = (
            change.consumer,
            change.message_id,
            history_saga_id,
            *_history_columns(change.history),
            self._outbox_lease,
            *_outbox_columns(change.outbox),
            change.source,
            change.unparked,
            self._app,
            change.trace_id,
            *saga_args,
        )
        try:
            with postgres_errors:
                row = _single(await self._pool.fetchrow(query, *args))
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _INBOX_KEY:
                raise
            return Committed(CommitResult.DUPLICATE)
        if not row["written"]:
            return Committed(CommitResult.CONFLICT)
        pending = zip(row["outbox_ids"], change.outbox, strict=True)
        return Committed(CommitResult.COMMITTED, tuple(PendingPublish(i, m) for i, m in pending))

    # -- the park: events that arrived before their saga ----------------------------------

    async def park(self, consumer: str, message: ParkedMessage, entry: HistoryEntry) -> bool:
        try:
            with postgres_errors:
                await self._pool.execute(
                    self._sql.park,
                    consumer,
                    message.source,
                    message.message_id,
                    saga_id_for(message.saga_type, message.correlation_id),
                    entry.at,
                    message.message_type,
                    message.correlation_id,
                    entry.causation_id,
                    entry.outcome,
                    entry.note,
                    json.dumps(entry.payload),
                    message.saga_type,
                    message.exchange,
                    message.routing_key,
                    message.content_type,
                    json.dumps(dict(message.headers)),
                    message.body,
                    message.expires_at,
                    self._app,
                )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _INBOX_KEY:
                raise
            return False
        return True

    async def parked(self, saga_type: str, correlation_id: str) -> list[Parked]:
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.parked, saga_type, correlation_id)
        return [_parked(row) for row in rows]

    async def parked_ready(self, now: datetime, limit: int) -> list[Parked]:
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.parked_ready, now, limit, self._types)
        return [_parked(row) for row in rows]

    async def unpark(self, parked_id: int) -> None:
        with postgres_errors:
            await self._pool.execute(self._sql.unpark, parked_id)

    # -- timers and queries --------------------------------------------------------------

    async def claim_timers(self, now: datetime, lease: timedelta, limit: int) -> list[DueTimer]:
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.claim_timers, now, lease, limit, self._types)
        rows.sort(key=lambda row: (row["deadline"], row["saga_id"]))  # RETURNING is unordered
        return [DueTimer(_instance(row["state"]), row["timer_attempts"]) for row in rows]

    async def back_off_timer(
        self, saga_id: str, deadline: datetime, attempts: int, next_try: datetime
    ) -> None:
        with postgres_errors:
            await self._pool.execute(
                self._sql.back_off_timer, _as_uuid(saga_id), deadline, attempts, next_try
            )

    # -- entity locks ---------------------------------------------------------------------

    async def grant_locks(self, keys: Sequence[str]) -> list[LockGrant]:
        # Cheap when nothing can be granted (one read); otherwise the keys of the sagas
        # that could be are locked, in a fixed order, and the grant checks again under
        # those locks, since the read above ran without them.
        if not keys:
            return []
        with postgres_errors:
            ready = await self._pool.fetch(self._sql.lock_ready, sorted(set(keys)), len(keys))
            if not ready:
                return []
            locked = sorted(row["lock_key"] for row in ready)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(self._sql.lock_keys, locked)
                rows = await conn.fetch(self._sql.grant_locks, locked)
        return [LockGrant(r["saga_id"], r["saga_type"], r["correlation_id"]) for r in rows]

    async def grantable_keys(self, limit: int) -> list[str]:
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.lock_ready, None, limit)
        return sorted(row["lock_key"] for row in rows)

    async def untold_grants(self, limit: int) -> list[LockGrant]:
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.locks_untold, limit, self._types)
        return [LockGrant(r["saga_id"], r["saga_type"], r["correlation_id"]) for r in rows]

    async def saga_locks(self, saga_id: str) -> SagaLocks:
        saga_uuid = _as_uuid(saga_id)
        if saga_uuid is None:
            return SagaLocks()
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.saga_locks, saga_uuid)
        return SagaLocks(
            held=tuple(HeldLock(r["lock_key"], r["granted_at"]) for r in rows if r["granted_at"]),
            awaited=tuple(
                AwaitedLock(r["lock_key"], r["place"], r["holder"], r["enqueued_at"])
                for r in rows
                if r["granted_at"] is None
            ),
        )

    async def find(self, id_or_correlation: str) -> list[SagaInstance]:
        if "\x00" in id_or_correlation:  # Postgres text cannot hold it: no saga has it
            return []
        return await self._sagas(self._sql.find, _as_uuid(id_or_correlation), id_or_correlation)

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        limit: int = 50,
    ) -> list[SagaInstance]:
        status_text = None if status is None else status.value
        return await self._sagas(self._sql.list_sagas, status_text, saga_type, limit)

    async def page_sagas(
        self, where: SagaFilter, after: PageAfter | None, limit: int
    ) -> list[SagaInstance]:
        texts = (where.saga_type, where.correlation_id, *(where.saga_types or ()))
        if any(text is not None and "\x00" in text for text in texts):
            return []  # Postgres text cannot hold it: no saga has it
        return await self._sagas(
            self._sql.page_sagas,
            None if where.status is None else where.status.value,
            where.saga_type,
            None if where.saga_types is None else list(where.saga_types),
            where.correlation_id,
            where.created_after,
            where.created_before,
            where.updated_before,
            None if after is None else after.created_at,
            None if after is None else _as_uuid(after.saga_id),
            limit,
        )

    async def saga_stats(self, saga_types: Sequence[str] | None = None) -> SagaStats:
        types = None if saga_types is None else list(saga_types)
        with postgres_errors:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(self._sql.count_fold_lock)
                counts = await conn.fetch(self._sql.saga_counts, types)
            oldest = await self._pool.fetch(self._sql.oldest_running, types, _UNFINISHED)
        # Sorted here, by code point as the in-memory twin does, not by the collation.
        return SagaStats(
            counts=tuple(
                sorted(
                    (SagaCount(r["saga_type"], SagaStatus(r["status"]), r["n"]) for r in counts),
                    key=lambda c: (c.saga_type, c.status.value),
                )
            ),
            oldest_running=tuple(
                sorted(
                    (
                        OldestRunning(
                            r["saga_type"],
                            r["saga_id"],
                            r["correlation_id"],
                            SagaStatus(r["status"]),
                            r["created_at"],
                        )
                        for r in oldest
                    ),
                    key=lambda o: o.saga_type,
                )
            ),
        )

    async def history(self, saga_id: str) -> list[HistoryEntry]:
        saga_uuid = _as_uuid(saga_id)
        if saga_uuid is None:
            return []
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.history, saga_uuid)
        return [
            HistoryEntry(
                direction=Direction(row["direction"]),
                message_id=row["message_id"],
                message_type=row["message_type"],
                correlation_id=row["correlation_id"],
                causation_id=row["causation_id"],
                outcome=row["outcome"],
                note=row["note"],
                payload=json.loads(row["payload"]),
                at=row["at"],
                trace_id=row["trace_id"],
            )
            for row in rows
        ]

    async def _sagas(self, query: str, *args: Any) -> list[SagaInstance]:
        with postgres_errors:
            rows = await self._pool.fetch(query, *args)
        return [_instance(row["state"]) for row in rows]

    # -- the outbox ---------------------------------------------------------------------

    async def claim_unsent(self, lease: timedelta, limit: int) -> list[PendingPublish]:
        with postgres_errors:
            rows = await self._pool.fetch(self._sql.claim_unsent, lease, limit, self._app)
        rows.sort(key=lambda row: row["id"])  # UPDATE ... RETURNING promises no order
        return [
            PendingPublish(
                outbox_id=row["id"],
                message=OutboxMessage(
                    message_id=row["message_id"],
                    message_type=row["message_type"],
                    exchange=row["exchange"],
                    routing_key=row["routing_key"],
                    body=row["body"],
                    content_type=row["content_type"],
                    headers=json.loads(row["headers"]),
                    correlation_id=row["correlation_id"],
                ),
            )
            for row in rows
        ]

    async def mark_sent(self, outbox_ids: Sequence[int]) -> None:
        if not outbox_ids:
            return
        with postgres_errors:
            await self._pool.execute(self._sql.mark_sent, list(outbox_ids))

    async def purge_inbox(self, older_than: timedelta) -> int:
        """Forget a batch of message ids received longer than ``older_than`` ago."""
        return await self._count(self._sql.purge_inbox, older_than, self._app)

    async def purge_finished(self, older_than: timedelta) -> int:
        """Delete sagas finished longer than ``older_than`` ago, with their history."""
        return await self._count(self._sql.purge_finished, older_than, self._types)

    async def fold_counts(self) -> int:
        with postgres_errors:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(self._sql.count_fold_lock)
                return int(await conn.fetchval(self._sql.fold_counts))

    async def purge_orphan_history(self, older_than: timedelta) -> int:
        """Delete history rows of no saga recorded longer than ``older_than`` ago."""
        return await self._count(self._sql.purge_orphan_history, older_than, self._app)

    async def purge_sent(self, older_than: timedelta) -> int:
        """Delete rows confirmed longer than ``older_than`` ago; return how many."""
        return await self._count(self._sql.purge_sent, older_than, self._app)

    async def _count(self, query: str, *args: Any) -> int:
        """A statement that returns one count (the purges: how many rows went)."""
        with postgres_errors:
            count: int = await self._pool.fetchval(query, *args)
        return count

    async def outbox_backlog(self) -> tuple[int, float | None]:
        """How many rows await a confirm, and the age in seconds of the oldest of them."""
        with postgres_errors:
            row = _single(await self._pool.fetchrow(self._sql.outbox_backlog, self._app))
        return row["unsent"], row["oldest_age"]


def _parked(row: asyncpg.Record) -> Parked:
    return Parked(
        parked_id=row["id"],
        message=ParkedMessage(
            saga_type=row["saga_type"],
            correlation_id=row["correlation_id"],
            message_id=row["message_id"],
            source=row["source"],
            message_type=row["message_type"],
            exchange=row["exchange"],
            routing_key=row["routing_key"],
            content_type=row["content_type"],
            headers=json.loads(row["headers"]),
            body=row["body"],
            expires_at=row["expires_at"],
        ),
    )


def _history_columns(entries: Sequence[HistoryEntry]) -> tuple[list[Any], ...]:
    return (
        [e.at for e in entries],
        [e.direction.value for e in entries],
        [e.message_id for e in entries],
        [e.message_type for e in entries],
        [e.correlation_id for e in entries],
        [e.causation_id for e in entries],
        [e.outcome for e in entries],
        [e.note for e in entries],
        [json.dumps(e.payload) for e in entries],
    )


def _outbox_columns(messages: Sequence[OutboxMessage]) -> tuple[list[Any], ...]:
    return (
        [m.message_id for m in messages],
        [m.message_type for m in messages],
        [m.exchange for m in messages],
        [m.routing_key for m in messages],
        [m.content_type for m in messages],
        [m.correlation_id for m in messages],
        [json.dumps(dict(m.headers)) for m in messages],
        [m.body for m in messages],
    )
