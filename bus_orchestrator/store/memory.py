"""The in-memory twin of ``PostgresSagaStore``, for tests of the runtime.

It keeps the Postgres adapter's semantics: the inbox catches duplicates, the saga version
and the uniqueness of (saga type, correlation id) catch conflicts, a failed commit writes
nothing, outbox rows are leased on commit and claimed in id order, a confirmed row loses its
message, timers are leased and backed off per deadline, entity lock keys are queued by the
commit that starts a saga, granted all at once in line order, and released by the commit
that ends it. Values go through JSON on the way
in, as they do in Postgres, so callers never share state with the store.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import count

from bus_orchestrator.core.state import SagaInstance, SagaStatus, saga_id_for
from bus_orchestrator.ports import (
    AwaitedLock,
    ByCorrelation,
    ByPendingCommand,
    Change,
    Clock,
    CommitResult,
    Committed,
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


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _copy(instance: SagaInstance) -> SagaInstance:
    return SagaInstance.model_validate_json(instance.model_dump_json())


@dataclass(slots=True)
class _OutboxRow:
    message: OutboxMessage | None
    """``None`` once confirmed: the body and headers are dropped (they may hold secrets)."""
    created_at: datetime
    claimed_until: datetime
    sent_at: datetime | None = None


@dataclass(slots=True)
class _TimerClaim:
    """The timer loop's view of one saga's deadline: see migration 0005."""

    deadline: datetime
    attempts: int
    next_try: datetime


@dataclass(slots=True)
class _LockRow:
    """One saga's place at one lock key: see migration 0008."""

    saga_id: uuid.UUID
    seq: int
    enqueued_at: datetime
    granted_at: datetime | None = None


class InMemorySagaStore:
    """``SagaStore`` and ``Outbox`` in dictionaries. ``clock`` drives leases and purges."""

    def __init__(
        self, *, outbox_lease: timedelta = timedelta(seconds=10), clock: Clock = _utc_now
    ) -> None:
        self._outbox_lease = outbox_lease
        self._clock = clock
        self._sagas: dict[uuid.UUID, SagaInstance] = {}
        self._by_correlation: dict[tuple[str, str], uuid.UUID] = {}
        self._inbox: dict[tuple[str, str, str], datetime] = {}
        self._parked: dict[int, ParkedMessage] = {}
        self._last_parked_id = 0
        self._history: list[tuple[uuid.UUID | None, HistoryEntry]] = []
        self._outbox: dict[int, _OutboxRow] = {}
        self._last_outbox_id = 0
        self._timers: dict[uuid.UUID, _TimerClaim] = {}
        self._locks: dict[str, list[_LockRow]] = {}
        """Per lock key, its holder and its waiters, in line order (``seq``)."""
        self._lock_seq = count(1)

    # -- the message path --------------------------------------------------------------

    async def load(self, consumer: str, message_id: str, key: SagaKey, source: str = "") -> Loaded:
        parked = isinstance(key, ByCorrelation) and any(
            (p.saga_type, p.correlation_id) == (key.saga_type, key.correlation_id)
            for p in self._parked.values()
        )
        return Loaded(
            seen=(consumer, source, message_id) in self._inbox,
            instance=self._find_key(key),
            parked=parked,
        )

    def _find_key(self, key: SagaKey) -> SagaInstance | None:
        if isinstance(key, ByCorrelation):
            saga_id = self._by_correlation.get((key.saga_type, key.correlation_id))
            return None if saga_id is None else self._sagas[saga_id]
        if isinstance(key, ByPendingCommand):
            return next(
                (s for s in self._sagas.values() if s.pending_command_id == key.command_id),
                None,
            )
        saga_uuid = _as_uuid(key.saga_id)
        return None if saga_uuid is None else self._sagas.get(saga_uuid)

    async def commit(self, change: Change) -> Committed:
        instance = change.instance
        if instance is not None and not self._may_write(instance, change.expected_version):
            return Committed(CommitResult.CONFLICT)
        inbox_key = (change.consumer, change.source, change.message_id)
        if inbox_key in self._inbox:
            return Committed(CommitResult.DUPLICATE)

        if instance is not None:
            saga_uuid = uuid.UUID(instance.saga_id)
            self._sagas[saga_uuid] = _copy(instance)
            self._by_correlation.setdefault(
                (instance.saga_type, instance.correlation_id), saga_uuid
            )
            if change.expected_version is None and instance.waiting_for_locks:
                now = self._clock()
                for key in instance.locks:
                    row = _LockRow(saga_uuid, next(self._lock_seq), now)
                    self._locks.setdefault(key, []).append(row)
            elif instance.status.terminal and instance.locks:
                self._release(saga_uuid, instance.locks)
        self._inbox[inbox_key] = self._clock()
        if change.unparked is not None:
            self._parked.pop(change.unparked, None)

        history_id = change.saga_id
        if history_id is None and instance is not None:
            history_id = instance.saga_id
        history_uuid = None if history_id is None else uuid.UUID(history_id)
        for entry in change.history:
            payload = json.loads(json.dumps(entry.payload))
            self._history.append(
                (history_uuid, replace(entry, payload=payload, trace_id=change.trace_id))
            )

        now = self._clock()
        published: list[PendingPublish] = []
        for message in change.outbox:
            self._last_outbox_id += 1
            self._outbox[self._last_outbox_id] = _OutboxRow(
                message=replace(message, headers=dict(message.headers)),
                created_at=now,
                claimed_until=now + self._outbox_lease,
            )
            published.append(PendingPublish(self._last_outbox_id, message))
        return Committed(CommitResult.COMMITTED, tuple(published))

    def _may_write(self, instance: SagaInstance, expected_version: int | None) -> bool:
        saga_uuid = uuid.UUID(instance.saga_id)
        if expected_version is None:
            taken = (instance.saga_type, instance.correlation_id) in self._by_correlation
            return saga_uuid not in self._sagas and not taken
        current = self._sagas.get(saga_uuid)
        return current is not None and current.version == expected_version

    # -- the park -----------------------------------------------------------------------

    async def park(self, consumer: str, message: ParkedMessage, entry: HistoryEntry) -> bool:
        inbox_key = (consumer, message.source, message.message_id)
        if inbox_key in self._inbox:
            return False
        self._inbox[inbox_key] = self._clock()
        saga_uuid = uuid.UUID(saga_id_for(message.saga_type, message.correlation_id))
        payload = json.loads(json.dumps(entry.payload))
        self._history.append((saga_uuid, replace(entry, payload=payload)))
        self._last_parked_id += 1
        self._parked[self._last_parked_id] = replace(message, headers=dict(message.headers))
        return True

    async def parked(self, saga_type: str, correlation_id: str) -> list[Parked]:
        return [
            Parked(i, m)
            for i, m in sorted(self._parked.items())
            if (m.saga_type, m.correlation_id) == (saga_type, correlation_id)
        ]

    async def parked_ready(self, now: datetime, limit: int) -> list[Parked]:
        ready = [
            Parked(i, m)
            for i, m in sorted(self._parked.items())
            if m.expires_at <= now or (m.saga_type, m.correlation_id) in self._by_correlation
        ]
        return ready[:limit]

    async def unpark(self, parked_id: int) -> None:
        self._parked.pop(parked_id, None)

    # -- entity locks ---------------------------------------------------------------------

    def _release(self, saga_uuid: uuid.UUID, keys: Iterable[str]) -> None:
        for key in keys:
            rows = [r for r in self._locks.get(key, []) if r.saga_id != saga_uuid]
            if rows:
                self._locks[key] = rows
            else:
                self._locks.pop(key, None)

    def _keys_of(self, saga_uuid: uuid.UUID) -> list[str]:
        return [k for k, rows in self._locks.items() if any(r.saga_id == saga_uuid for r in rows)]

    def _ready(self, saga_uuid: uuid.UUID) -> bool:
        """Whether a waiting saga could take all its keys now: free, nobody ahead."""
        for key in self._keys_of(saga_uuid):
            first = self._locks[key][0]
            if first.saga_id != saga_uuid or first.granted_at is not None:
                return False
        return True

    def _waiting_at(self, keys: Iterable[str]) -> list[uuid.UUID]:
        found: dict[uuid.UUID, None] = {}
        for key in keys:
            for row in self._locks.get(key, []):
                if row.granted_at is None:
                    found.setdefault(row.saga_id)
        return list(found)

    async def grant_locks(self, keys: Sequence[str]) -> list[LockGrant]:
        now = self._clock()
        granted = []
        for saga_uuid in sorted(self._waiting_at(set(keys))):
            if not self._ready(saga_uuid):
                continue
            for key in self._keys_of(saga_uuid):
                self._locks[key][0].granted_at = now
            saga = self._sagas.get(saga_uuid)
            if saga is not None:
                granted.append(LockGrant(saga.saga_id, saga.saga_type, saga.correlation_id))
        return granted

    async def grantable_keys(self, limit: int) -> list[str]:
        ready = [s for s in sorted(self._waiting_at(list(self._locks))) if self._ready(s)]
        return sorted({key for s in ready[:limit] for key in self._keys_of(s)})

    async def untold_grants(self, limit: int) -> list[LockGrant]:
        holders = {rows[0].saga_id for rows in self._locks.values() if rows[0].granted_at}
        untold = [
            LockGrant(saga.saga_id, saga.saga_type, saga.correlation_id)
            for key, saga in sorted(self._sagas.items())
            if key in holders and saga.status is SagaStatus.RUNNING and saga.waiting_for_locks
        ]
        return untold[:limit]

    async def saga_locks(self, saga_id: str) -> SagaLocks:
        saga_uuid = _as_uuid(saga_id)
        held: list[HeldLock] = []
        awaited: list[AwaitedLock] = []
        for key in sorted(self._locks):
            rows = self._locks[key]
            holder = rows[0] if rows[0].granted_at is not None else None
            waiting = [r for r in rows if r.granted_at is None]
            for row in rows:
                if row.saga_id != saga_uuid:
                    continue
                if row.granted_at is not None:
                    held.append(HeldLock(key, row.granted_at))
                else:
                    holder_id = str(holder.saga_id) if holder is not None else None
                    place = waiting.index(row) + 1
                    awaited.append(AwaitedLock(key, place, holder_id, row.enqueued_at))
        return SagaLocks(tuple(held), tuple(awaited))

    # -- timers and queries --------------------------------------------------------------

    async def claim_timers(self, now: datetime, lease: timedelta, limit: int) -> list[DueTimer]:
        due: list[tuple[datetime, uuid.UUID, SagaInstance]] = []
        for key, saga in self._sagas.items():
            if saga.deadline is None or saga.deadline > now:
                continue
            claim = self._timers.get(key)
            if claim is not None and claim.deadline == saga.deadline and claim.next_try > now:
                continue
            due.append((saga.deadline, key, saga))
        due.sort(key=lambda d: (d[0], d[1]))
        claimed = []
        for deadline, key, saga in due[:limit]:
            claim = self._timers.get(key)
            attempts = claim.attempts if claim is not None and claim.deadline == deadline else 0
            self._timers[key] = _TimerClaim(deadline, attempts, now + lease)
            claimed.append(DueTimer(_copy(saga), attempts))
        return claimed

    async def back_off_timer(
        self, saga_id: str, deadline: datetime, attempts: int, next_try: datetime
    ) -> None:
        key = _as_uuid(saga_id)
        saga = None if key is None else self._sagas.get(key)
        claim = None if key is None else self._timers.get(key)
        if saga is None or saga.deadline != deadline or claim is None or claim.deadline != deadline:
            return
        claim.attempts, claim.next_try = attempts, next_try

    async def find(self, id_or_correlation: str) -> list[SagaInstance]:
        wanted = _as_uuid(id_or_correlation)
        return _newest_first(
            s
            for key, s in self._sagas.items()
            if key == wanted or s.correlation_id == id_or_correlation
        )

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        limit: int = 50,
    ) -> list[SagaInstance]:
        matching = _newest_first(
            s
            for s in self._sagas.values()
            if (status is None or s.status == status)
            and (saga_type is None or s.saga_type == saga_type)
        )
        return matching[:limit]

    async def page_sagas(
        self, where: SagaFilter, after: PageAfter | None, limit: int
    ) -> list[SagaInstance]:
        def matches(s: SagaInstance) -> bool:
            return (
                (where.status is None or s.status == where.status)
                and (where.saga_type is None or s.saga_type == where.saga_type)
                and (where.saga_types is None or s.saga_type in where.saga_types)
                and (where.correlation_id is None or s.correlation_id == where.correlation_id)
                and (where.created_after is None or s.created_at > where.created_after)
                and (where.created_before is None or s.created_at < where.created_before)
                and (where.updated_before is None or s.updated_at < where.updated_before)
                and (after is None or _after(s, after))
            )

        return [_copy(s) for s in _newest_first(filter(matches, self._sagas.values()))][:limit]

    async def saga_stats(self, saga_types: Sequence[str] | None = None) -> SagaStats:
        sagas = [s for s in self._sagas.values() if saga_types is None or s.saga_type in saga_types]
        counted: dict[tuple[str, str], int] = {}
        for saga in sagas:
            key = (saga.saga_type, saga.status.value)
            counted[key] = counted.get(key, 0) + 1
        oldest: dict[str, SagaInstance] = {}
        for saga in sorted(sagas, key=lambda s: (s.created_at, uuid.UUID(s.saga_id))):
            if not saga.status.terminal:
                oldest.setdefault(saga.saga_type, saga)
        return SagaStats(
            counts=tuple(
                SagaCount(saga_type, SagaStatus(status), n)
                for (saga_type, status), n in sorted(counted.items())
            ),
            oldest_running=tuple(
                OldestRunning(s.saga_type, s.saga_id, s.correlation_id, s.status, s.created_at)
                for _, s in sorted(oldest.items())
            ),
        )

    async def history(self, saga_id: str) -> list[HistoryEntry]:
        wanted = _as_uuid(saga_id)
        if wanted is None:
            return []
        return [entry for key, entry in self._history if key == wanted]

    # -- the outbox ---------------------------------------------------------------------

    async def claim_unsent(self, lease: timedelta, limit: int) -> list[PendingPublish]:
        now = self._clock()
        claimed: list[PendingPublish] = []
        for outbox_id in sorted(self._outbox):
            if len(claimed) >= limit:
                break
            row = self._outbox[outbox_id]
            if row.message is not None and row.sent_at is None and row.claimed_until < now:
                row.claimed_until = now + lease
                claimed.append(PendingPublish(outbox_id, row.message))
        return claimed

    async def mark_sent(self, outbox_ids: Sequence[int]) -> None:
        now = self._clock()
        for outbox_id in outbox_ids:
            row = self._outbox.get(outbox_id)
            if row is not None and row.sent_at is None:
                row.sent_at, row.message = now, None

    async def purge_inbox(self, older_than: timedelta) -> int:
        """Forget message ids received longer than ``older_than`` ago; return how many."""
        cutoff = self._clock() - older_than
        gone = [key for key, at in self._inbox.items() if at < cutoff]
        for key in gone:
            del self._inbox[key]
        return len(gone)

    async def purge_finished(self, older_than: timedelta) -> int:
        """Delete sagas finished longer than ``older_than`` ago, with their history."""
        cutoff = self._clock() - older_than
        gone = {
            key
            for key, saga in self._sagas.items()
            if saga.status.terminal and saga.updated_at < cutoff
        }
        for key in gone:
            saga = self._sagas.pop(key)
            del self._by_correlation[(saga.saga_type, saga.correlation_id)]
            self._timers.pop(key, None)
        self._history = [(key, entry) for key, entry in self._history if key not in gone]
        return len(gone)

    async def fold_counts(self) -> int:
        return 0  # counts sagas when asked: nothing kept to fold

    async def purge_orphan_history(self, older_than: timedelta) -> int:
        """Delete history rows of no saga recorded longer than ``older_than`` ago: messages
        nobody awaited, and events parked for a saga that never started."""
        cutoff = self._clock() - older_than

        def orphan(key: uuid.UUID | None, entry: HistoryEntry) -> bool:
            if key is None:
                return True
            return entry.outcome in ("parked", "dead-lettered") and key not in self._sagas

        kept = [(k, e) for k, e in self._history if e.at >= cutoff or not orphan(k, e)]
        removed = len(self._history) - len(kept)
        self._history = kept
        return removed

    async def purge_sent(self, older_than: timedelta) -> int:
        """Delete rows confirmed longer than ``older_than`` ago; return how many."""
        cutoff = self._clock() - older_than
        gone = [i for i, row in self._outbox.items() if row.sent_at and row.sent_at < cutoff]
        for outbox_id in gone:
            del self._outbox[outbox_id]
        return len(gone)

    async def outbox_backlog(self) -> tuple[int, float | None]:
        """How many rows await a confirm, and the age in seconds of the oldest of them."""
        unsent = [row.created_at for row in self._outbox.values() if row.sent_at is None]
        if not unsent:
            return 0, None
        return len(unsent), (self._clock() - min(unsent)).total_seconds()


def _after(saga: SagaInstance, after: PageAfter) -> bool:
    """Whether ``saga`` comes after ``after`` newest first (created_at down, then id up)."""
    if saga.created_at != after.created_at:
        return saga.created_at < after.created_at
    wanted = _as_uuid(after.saga_id)
    return wanted is not None and uuid.UUID(saga.saga_id) > wanted


def _newest_first(sagas: Iterable[SagaInstance]) -> list[SagaInstance]:
    ordered = sorted(sagas, key=lambda s: uuid.UUID(s.saga_id))
    ordered.sort(key=lambda s: s.created_at, reverse=True)  # stable: ties stay in id order
    return ordered
