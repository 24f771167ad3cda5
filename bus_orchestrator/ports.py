"""The engine's ports: what the runtime needs from storage and from the broker.

Each port has a real adapter (``store.postgres``, ``transport.publisher``) and an in-memory
twin for tests. The runtime depends on these protocols only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from bus_orchestrator.core.state import SagaInstance, SagaStatus

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware (UTC)."""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message encoded for AMQP, ready to publish as it is."""

    message_id: str
    message_type: str
    exchange: str
    routing_key: str
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class PendingPublish:
    """An outbox row: a committed message the relay has yet to see confirmed."""

    outbox_id: int
    message: OutboxMessage


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a saga's audit log: a message in or out, and what came of it."""

    direction: Direction
    message_id: str
    message_type: str
    correlation_id: str | None
    causation_id: str | None
    outcome: str
    note: str
    payload: Mapping[str, Any]
    at: datetime
    trace_id: str | None = None
    """The trace of the work that wrote it (32 hex digits), when tracing was on."""


@dataclass(frozen=True, slots=True)
class ByCorrelation:
    saga_type: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class ByPendingCommand:
    """The saga awaiting a reply to this command id."""

    command_id: str


@dataclass(frozen=True, slots=True)
class BySagaId:
    saga_id: str


SagaKey = ByCorrelation | ByPendingCommand | BySagaId


@dataclass(frozen=True, slots=True)
class Loaded:
    """What one message finds: whether its id was processed already, and its saga."""

    seen: bool
    instance: SagaInstance | None
    parked: bool = False
    """Events that arrived before this saga wait for it (looked up ``ByCorrelation`` only)."""


@dataclass(frozen=True, slots=True)
class ParkedMessage:
    """An event that arrived before the saga it correlates to, kept as it was delivered.

    It waits in the store until that saga starts (then it is applied) or ``expires_at``
    passes (then it is dead-lettered).
    """

    saga_type: str
    correlation_id: str
    message_id: str
    source: str
    message_type: str
    exchange: str
    routing_key: str
    content_type: str | None
    headers: Mapping[str, str]
    body: bytes
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Parked:
    parked_id: int
    message: ParkedMessage


class CommitResult(StrEnum):
    COMMITTED = "committed"
    CONFLICT = "conflict"
    """The saga's version moved on (or it was created) since it was loaded."""
    DUPLICATE = "duplicate"
    """This consumer already processed this message id."""


@dataclass(frozen=True, slots=True)
class Committed:
    result: CommitResult
    outbox: tuple[PendingPublish, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """Everything one message does to the store, applied atomically by ``commit``.

    ``instance`` is the saga's new state (``None`` when the message changes no saga, e.g. it
    was ignored); ``expected_version`` is the version it was decided from (``None`` for a
    new saga). ``saga_id`` ties the history to a saga even when nothing else changes.
    """

    consumer: str
    message_id: str
    saga_id: str | None
    instance: SagaInstance | None
    expected_version: int | None
    history: tuple[HistoryEntry, ...]
    outbox: tuple[OutboxMessage, ...] = ()
    source: str = ""
    """The message's CloudEvents source: the inbox knows a message by source and id."""
    unparked: int | None = None
    """The parked event this message was; removed from the park when the change commits."""
    trace_id: str | None = None
    """The trace of the work that made the change, recorded with its history rows."""


@dataclass(frozen=True, slots=True)
class AppScope:
    """One application's share of a store that several apps use.

    Its sagas (and their timers and parked events) are those of its saga types, which no
    other app on the database defines; its inbox, history and outbox rows carry its name.
    A store given a scope writes the name and lets its relay, timers, park sweep and
    housekeeping take only these rows; one without a scope takes every row.
    """

    app: str
    saga_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DueTimer:
    """A saga whose deadline has passed, claimed by one process for a lease."""

    instance: SagaInstance
    failed_attempts: int
    """Tries of this very deadline that failed so far (0 the first time it is claimed)."""


@dataclass(frozen=True, slots=True)
class LockGrant:
    """A saga that now holds all its entity lock keys, to be told (``LocksGranted``)."""

    saga_id: str
    saga_type: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class HeldLock:
    key: str
    since: datetime


@dataclass(frozen=True, slots=True)
class AwaitedLock:
    key: str
    place: int
    """The saga's place in the key's queue: 1 when it is next."""
    holder: str | None
    """The saga id holding the key now, if any."""
    since: datetime


@dataclass(frozen=True, slots=True)
class SagaLocks:
    """The entity locks one saga holds and those it waits for."""

    held: tuple[HeldLock, ...] = ()
    awaited: tuple[AwaitedLock, ...] = ()


@dataclass(frozen=True, slots=True)
class SagaFilter:
    """Which sagas a query of the read side (the HTTP API) takes; ``None``: any.

    ``saga_types`` is a scope (the types of the app that asks), ``saga_type`` a filter
    within it. Times are exclusive bounds."""

    status: SagaStatus | None = None
    saga_type: str | None = None
    saga_types: tuple[str, ...] | None = None
    correlation_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class PageAfter:
    """Where a page of sagas (newest first) ends: the next page starts after this saga."""

    created_at: datetime
    saga_id: str


@dataclass(frozen=True, slots=True)
class SagaCount:
    saga_type: str
    status: SagaStatus
    count: int


@dataclass(frozen=True, slots=True)
class OldestRunning:
    """The unfinished (running or compensating) saga of a type that started first."""

    saga_type: str
    saga_id: str
    correlation_id: str
    status: SagaStatus
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SagaStats:
    counts: tuple[SagaCount, ...] = ()
    """By saga type, then status."""
    oldest_running: tuple[OldestRunning, ...] = ()
    """One per saga type that has an unfinished saga, by type."""


class SagaReader(Protocol):
    """The read side's queries (the HTTP API), beyond those of ``SagaStore``."""

    async def page_sagas(
        self, where: SagaFilter, after: PageAfter | None, limit: int
    ) -> list[SagaInstance]:
        """Up to ``limit`` sagas matching ``where``, newest first (created_at descending,
        then saga id), starting after ``after``: a keyset page, stable while sagas are
        inserted (new sagas come before the first page, never within later ones)."""
        ...

    async def saga_stats(self, saga_types: Sequence[str] | None = None) -> SagaStats:
        """Counts by type and status, and the oldest unfinished saga of each type (of
        ``saga_types`` only, when given)."""
        ...

    async def find(self, id_or_correlation: str) -> list[SagaInstance]: ...

    async def saga_locks(self, saga_id: str) -> SagaLocks: ...

    async def history(self, saga_id: str) -> list[HistoryEntry]: ...


class SagaStore(Protocol):
    """Saga state, inbox, audit history and outbox, changed together or not at all."""

    async def load(self, consumer: str, message_id: str, key: SagaKey, source: str = "") -> Loaded:
        """Find the saga for a message and whether ``consumer`` has seen the message
        (known by its ``source`` and id)."""
        ...

    async def commit(self, change: Change) -> Committed:
        """Apply a change in one transaction, guarded by the inbox and the saga version."""
        ...

    async def park(self, consumer: str, message: ParkedMessage, entry: HistoryEntry) -> bool:
        """Keep an event for a saga that does not exist yet; record it in the inbox of
        ``consumer`` and in the (future) saga's history. ``False`` if it was parked before."""
        ...

    async def parked(self, saga_type: str, correlation_id: str) -> list[Parked]:
        """The events parked for this saga, in the order they arrived."""
        ...

    async def parked_ready(self, now: datetime, limit: int) -> list[Parked]:
        """Parked events whose saga exists by now, or whose time ran out; oldest first."""
        ...

    async def unpark(self, parked_id: int) -> None:
        """Forget a parked event (it was applied or dead-lettered)."""
        ...

    async def claim_timers(self, now: datetime, lease: timedelta, limit: int) -> list[DueTimer]:
        """Claim up to ``limit`` sagas whose deadline is at or before ``now``, earliest first.

        A claimed saga is not claimed again, by any process, until ``now + lease`` or until
        its deadline moves; nor while it backs off after a failed try (``back_off_timer``).
        """
        ...

    async def back_off_timer(
        self, saga_id: str, deadline: datetime, attempts: int, next_try: datetime
    ) -> None:
        """Record that ``attempts`` tries of the saga's timer for ``deadline`` failed: it is
        not claimed again before ``next_try``. Does nothing once the deadline has moved on."""
        ...

    async def grant_locks(self, keys: Sequence[str]) -> list[LockGrant]:
        """Give the sagas waiting for one of ``keys`` all their lock keys, those that can
        take them now: each of their keys free, and none waiting for one of them ahead
        of them. Atomic and safe with several processes; returns the sagas granted.

        A saga waits from the commit that starts it with ``waiting_for_locks`` and holds
        its keys until the commit that gives it a final status: those commits write and
        delete its place in the queues, this only grants."""
        ...

    async def grantable_keys(self, limit: int) -> list[str]:
        """The lock keys of up to ``limit`` waiting sagas that could take all theirs now:
        what a grant after a commit would have given, had it run (the lock sweep)."""
        ...

    async def untold_grants(self, limit: int) -> list[LockGrant]:
        """Sagas (of this store's scope) that hold their keys but whose state still waits
        for them: the grant committed, the ``LocksGranted`` did not (the lock sweep)."""
        ...

    async def saga_locks(self, saga_id: str) -> SagaLocks:
        """The lock keys a saga holds, and those it waits for with its place in line."""
        ...

    async def find(self, id_or_correlation: str) -> list[SagaInstance]:
        """Sagas whose id or correlation id is the given string."""
        ...

    async def list_sagas(
        self,
        *,
        status: SagaStatus | None = None,
        saga_type: str | None = None,
        limit: int = 50,
    ) -> list[SagaInstance]:
        """Sagas, newest first."""
        ...

    async def history(self, saga_id: str) -> list[HistoryEntry]:
        """A saga's audit log, oldest first."""
        ...

    async def purge_inbox(self, older_than: timedelta) -> int:
        """Forget a batch of message ids received longer than ``older_than`` ago."""
        ...

    async def purge_finished(self, older_than: timedelta) -> int:
        """Delete a batch of sagas finished (completed, compensated, failed) longer than
        ``older_than`` ago, with their history; return how many sagas."""
        ...

    async def purge_orphan_history(self, older_than: timedelta) -> int:
        """Delete a batch of history rows of no saga recorded longer than ``older_than`` ago;
        return how many."""
        ...

    async def fold_counts(self) -> int:
        """Fold a batch of the changes to the saga counts (by type and status) recorded
        since the last fold into the counts, if the store keeps them; return how many."""
        ...


class Outbox(Protocol):
    """The relay's view of the outbox."""

    async def claim_unsent(self, lease: timedelta, limit: int) -> list[PendingPublish]:
        """Rows not yet confirmed whose lease has run out; claims them for ``lease``."""
        ...

    async def mark_sent(self, outbox_ids: Sequence[int]) -> None:
        """Record the broker's confirm for these rows, and drop their bodies and headers."""
        ...

    async def purge_sent(self, older_than: timedelta) -> int:
        """Delete a batch of rows confirmed longer than ``older_than`` ago; return how many."""
        ...

    async def outbox_backlog(self) -> tuple[int, float | None]:
        """Rows not yet confirmed, and the age in seconds of the oldest (``None`` if none)."""
        ...


class Publisher(Protocol):
    """Publishes encoded messages; returns only once the broker has confirmed."""

    async def publish(self, message: OutboxMessage) -> None:
        """Raises ``BrokerUnavailableError`` when the broker did not confirm."""
        ...


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the store knows of one schedule of an app: since when it is known, and the
    newest slot fired (``None`` until one has)."""

    schedule: str
    registered_at: datetime
    last_slot: datetime | None = None
    last_fired_at: datetime | None = None
    """When the coordinator that fired ``last_slot`` fired it (later than the slot when it
    was caught up)."""
    last_event_id: str | None = None
    next_slot: datetime | None = None
    """The slot the coordinators planned next when they last fired or started."""


class ScheduleStore(Protocol):
    """Which slots of an app's schedules fired; a slot fires once, with its event's outbox
    row in the same transaction."""

    async def register_schedules(
        self, app: str, next_slots: Mapping[str, datetime], now: datetime
    ) -> list[ScheduleState]:
        """Record the app's schedules (by name, with the slot each plans next), those new
        with ``now`` as the time they became known; return the state of each."""
        ...

    async def fire(
        self,
        app: str,
        schedule: str,
        slot: datetime,
        next_slot: datetime | None,
        message: OutboxMessage,
        now: datetime,
    ) -> PendingPublish | None:
        """Claim ``slot`` of ``schedule`` and write ``message`` to the outbox, atomically;
        ``None`` (and nothing written) when the slot, or a newer one, fired already."""
        ...

    async def schedule_states(self, app: str) -> list[ScheduleState]:
        """The state of each schedule of ``app`` known to the store, by name."""
        ...

    async def purge_firings(self, app: str, older_than: timedelta) -> int:
        """Forget a batch of the app's firings done longer than ``older_than`` ago (the
        newest of each schedule stays in its state); return how many."""


# -- the dead-letter archive (migration 0009) ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One message of ``bus.dead``, as the archive keeps it."""

    id: str
    fingerprint: bytes
    message_id: str | None
    message_type: str | None
    source: str | None
    correlation_id: str | None
    reason: str
    detail: str
    dead_lettered_by: str | None
    original_exchange: str | None
    original_routing_key: str | None
    content_type: str | None
    properties: dict[str, Any]
    headers: dict[str, Any]
    body: bytes
    dead_lettered_at: datetime
    saga_id: str | None = None
    """From ``x-saga-id``; the archive derives it otherwise where it can."""


class DeadStatus(StrEnum):
    """The fate of an archived dead letter."""

    DEAD = "dead"
    """In the archive, not acted on."""
    REPLAYED = "replayed"
    """Published again to its original exchange and routing key."""
    PURGED = "purged"
    """Given up on: its body is dropped, what it was is kept."""


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A row of ``dead_letter``; ``properties``, ``headers`` and ``body`` only when read
    whole (``get``), not in a page."""

    id: str
    message_id: str | None
    message_type: str | None
    source: str | None
    correlation_id: str | None
    reason: str
    detail: str
    dead_lettered_by: str | None
    original_exchange: str | None
    original_routing_key: str | None
    saga_id: str | None
    content_type: str | None
    body_bytes: int
    dead_lettered_at: datetime
    archived_at: datetime
    status: DeadStatus
    replayed_at: datetime | None
    replayed_by: str | None
    replay_reason: str | None
    replayed_as: str | None
    purged_at: datetime | None
    purged_by: str | None
    purge_reason: str | None
    properties: dict[str, Any] | None = None
    headers: dict[str, Any] | None = None
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeadFilter:
    """What ``GET /dead`` and ``dead list`` select; ``None`` is any."""

    status: DeadStatus | None = DeadStatus.DEAD
    reason: str | None = None
    message_type: str | None = None
    saga_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeadAfter:
    """Where a page ends: the last row's time and id."""

    dead_lettered_at: datetime
    id: str


class LockedDeadLetter(Protocol):
    """A dead letter held for a replay: ``row`` (``None``: no such dead letter), and
    ``mark``, committed with the lock's end unless the block raised."""

    row: StoredDeadLetter | None

    async def mark(self, by: str, reason: str, replayed_as: str | None) -> StoredDeadLetter:
        """Record that it was replayed, and as which message id."""
        ...


class DeadLetterArchive(Protocol):
    """The archive of ``bus.dead``: what the archive consumer writes, and the dead-letter
    routes and commands read and change."""

    async def archive(self, record: DeadLetterRecord, saga_id: str | None) -> bool:
        """Keep ``record``; ``False`` when it is there already (a redelivery)."""
        ...

    async def page(
        self, where: DeadFilter, after: DeadAfter | None, limit: int
    ) -> list[StoredDeadLetter]:
        """Newest first (time, then id), after ``after``, at most ``limit``; without the
        properties, headers and body."""
        ...

    async def get(self, dead_letter_id: str) -> StoredDeadLetter | None:
        """The whole dead letter, or ``None`` (an id that is not a uuid included)."""
        ...

    def replaying(self, dead_letter_id: str) -> AbstractAsyncContextManager[LockedDeadLetter]:
        """The dead letter, held until the block ends so that two replays of it cannot
        both publish."""
        ...

    async def purge(self, dead_letter_id: str, by: str, reason: str) -> StoredDeadLetter | None:
        """Mark it purged and drop its body; ``None`` when there is no such dead letter or
        it is purged already."""
        ...


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    """What an idempotency key stands for: the request that used it first."""

    request_hash: str
    event_id: str


class RequestKeys(Protocol):
    """The HTTP API's idempotency keys (``Idempotency-Key``), per app."""

    async def remember(
        self,
        app: str,
        key: str,
        request: KeyedRequest,
        *,
        window: timedelta,
        fresh_event_id: str,
    ) -> KeyedRequest:
        """Record ``key`` for ``request`` unless it stands for a request already (one made
        less than ``window`` ago); return what it stands for now. A key whose request is
        older than ``window`` is taken anew, with ``fresh_event_id`` as its event id."""
        ...
