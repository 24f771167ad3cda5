"""The command log: which commands an adapter has processed, and the exact reply it sent.

It is what makes an adapter idempotent. A command whose id is in the log is answered by
re-publishing the stored reply (same message id, same bytes) without calling the external
system again.

It also keeps a compensation from overtaking the command it undoes. Before calling the
external system, a command **claims** its id (``claim``); a compensating command, which
names the command it undoes (CloudEvents ``compensates``), lays a **tombstone** on that id
instead (``tombstone``), atomically against the claim:

- no claim yet: the tombstone is laid; should the command arrive later, it is refused and
  never reaches the external system;
- a claim whose outcome is recorded: the compensation goes ahead;
- a claim whose call is under way: the compensation waits until its outcome is recorded
  (the claim survives a crash, and the redelivered command takes it over), or until its
  lease runs out with no delivery renewing it (a live call renews it), when the tombstone
  replaces it.

Claims and tombstones are keyed by the command id alone, since the compensation may be
handled by another adapter or process than the command. ``PostgresCommandLog`` is the real
log; ``InMemoryCommandLog`` its twin.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from bus_orchestrator.ports import Clock, OutboxMessage


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One processed command and its encoded reply."""

    adapter: str
    command_id: str
    command_type: str
    correlation_id: str | None
    reply: OutboxMessage


@dataclass(frozen=True, slots=True)
class Recorded:
    """The outcome of ``CommandLog.record``.

    ``reply`` is the reply stored for the command: the one just given when ``inserted``,
    else the one a concurrent delivery of the same command recorded first, which is the one
    to publish. ``tombstoned`` says a tombstone stands in the command's id: expected when
    the reply is a refusal, and a sign that its claim lapsed during the call otherwise.
    """

    reply: OutboxMessage
    inserted: bool
    tombstoned: bool = False


class Standing(StrEnum):
    """Where a command stands, as ``claim`` and ``tombstone`` find it."""

    CLAIMED = "claimed"
    """A command, now claimed (first delivery, or a redelivery taking the claim over): call."""
    COMPENSATED = "compensated"
    """A command whose compensation came first: refuse it, never call."""
    FORWARD_UNSEEN = "forward-unseen"
    """A compensation whose command was never processed: tombstone laid; call."""
    FORWARD_SETTLED = "forward-settled"
    """A compensation whose command's outcome is recorded: call."""
    FORWARD_UNDER_WAY = "forward-under-way"
    """A compensation whose command is being processed: wait, then ask again."""
    FORWARD_LAPSED = "forward-lapsed"
    """A compensation whose command's claim ran out unsettled: tombstone laid over it; call."""


@dataclass(frozen=True, slots=True)
class Admission:
    """What ``claim`` and ``tombstone`` return: the standing, and any reply recorded.

    ``reply`` is the reply already recorded for the command itself (publish it again and do
    nothing else); ``compensated_by`` is, for ``COMPENSATED``, the id of the compensating
    command that laid the tombstone.
    """

    standing: Standing
    reply: OutboxMessage | None = None
    compensated_by: str | None = None


class CommandLog(Protocol):
    """Processed commands keyed by adapter and command id; claims and tombstones by id.

    Every method raises ``StoreUnavailableError`` when the log cannot be reached.
    """

    async def find(self, adapter: str, command_id: str) -> OutboxMessage | None:
        """The reply stored for this command, or ``None`` when it was never processed."""
        ...

    async def claim(self, adapter: str, command_id: str, lease: timedelta) -> Admission:
        """Claim a command's id for ``lease`` before calling the external system.

        ``CLAIMED``: go ahead (a live or lapsed claim of an earlier delivery is taken over
        and its lease renewed); ``COMPENSATED``: a tombstone stands there, refuse the
        command. The reply already recorded for it, if any, comes along.
        """
        ...

    async def renew(self, command_id: str, lease: timedelta) -> bool:
        """Renew the lease of a command's unsettled claim while its call lasts.

        ``False`` when there is no such claim any more (settled, released, or lapsed and
        replaced by a tombstone).
        """
        ...

    async def tombstone(self, adapter: str, command_id: str, compensates: str) -> Admission:
        """Before running compensation ``command_id``, lay a tombstone on ``compensates``.

        One atomic step against the command's claim; ``FORWARD_UNDER_WAY`` means the
        command's call may be under way: call again later. The reply already recorded for
        the compensation itself, if any, comes along.
        """
        ...

    async def record(self, record: CommandRecord) -> Recorded:
        """Store the command's reply unless one is stored already; first writer wins.

        In the same step, the command's claim is settled: its outcome is known, and a
        compensation waiting for it may go ahead.
        """
        ...

    async def release(self, command_id: str) -> None:
        """Drop the unsettled claim of a command that was dead-lettered.

        A compensation waiting for it goes ahead at once, and its tombstone keeps the
        command from running should it be sent again.
        """
        ...

    async def purge(self, older_than: timedelta) -> int:
        """Forget a bounded batch of commands, claims and tombstones older than this.

        Returns how many rows went; call again until it returns 0.
        """
        ...


PURGE_BATCH = 5000
"""Rows of each kind one ``purge`` call removes at most."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Claim:
    """A claim on a command id, or a tombstone in its place (``InMemoryCommandLog``)."""

    adapter: str
    created_at: datetime
    lease_until: datetime | None = None
    compensated_by: str | None = None
    lapsed: bool = False
    settled_at: datetime | None = None
    refused_at: datetime | None = None

    @property
    def tombstone(self) -> bool:
        return self.compensated_by is not None


@dataclass
class _Stored:
    record: CommandRecord
    processed_at: datetime


@dataclass
class InMemoryCommandLog:
    """``CommandLog`` in dicts, for unit tests; ``clock`` stands in for Postgres' ``now()``."""

    clock: Clock = _utc_now
    commands: dict[tuple[str, str], _Stored] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)

    @property
    def records(self) -> dict[tuple[str, str], CommandRecord]:
        """The recorded commands, by ``(adapter, command_id)``."""
        return {key: stored.record for key, stored in self.commands.items()}

    async def find(self, adapter: str, command_id: str) -> OutboxMessage | None:
        stored = self.commands.get((adapter, command_id))
        return None if stored is None else stored.record.reply

    async def claim(self, adapter: str, command_id: str, lease: timedelta) -> Admission:
        now = self.clock()
        reply = await self.find(adapter, command_id)
        settled_at = None if reply is None else now
        claim = self.claims.get(command_id)
        if claim is None:
            self.claims[command_id] = Claim(
                adapter, created_at=now, lease_until=now + lease, settled_at=settled_at
            )
        elif claim.tombstone:
            claim.refused_at = claim.refused_at or now
        elif claim.settled_at is None:
            claim.lease_until, claim.settled_at = now + lease, settled_at
        if claim is not None and claim.tombstone:
            return Admission(Standing.COMPENSATED, reply, claim.compensated_by)
        return Admission(Standing.CLAIMED, reply)

    async def renew(self, command_id: str, lease: timedelta) -> bool:
        claim = self.claims.get(command_id)
        if claim is None or claim.tombstone or claim.settled_at is not None:
            return False
        claim.lease_until = self.clock() + lease
        return True

    async def tombstone(self, adapter: str, command_id: str, compensates: str) -> Admission:
        now = self.clock()
        reply = await self.find(adapter, command_id)
        claim = self.claims.get(compensates)
        if claim is None:
            self.claims[compensates] = Claim(adapter, created_at=now, compensated_by=command_id)
            return Admission(Standing.FORWARD_UNSEEN, reply)
        if not claim.tombstone and claim.settled_at is None:
            assert claim.lease_until is not None  # noqa: S101 - a claim always has a lease
            if claim.lease_until > now:
                return Admission(Standing.FORWARD_UNDER_WAY, reply)
            claim.compensated_by, claim.lapsed = command_id, True
        if not claim.tombstone:
            return Admission(Standing.FORWARD_SETTLED, reply)
        standing = Standing.FORWARD_LAPSED if claim.lapsed else Standing.FORWARD_UNSEEN
        return Admission(standing, reply)

    async def record(self, record: CommandRecord) -> Recorded:
        now = self.clock()
        key = (record.adapter, record.command_id)
        stored = self.commands.setdefault(key, _Stored(record, processed_at=now))
        claim = self.claims.get(record.command_id)
        if claim is not None and not claim.tombstone and claim.settled_at is None:
            claim.settled_at = now
        tombstoned = claim is not None and claim.tombstone
        inserted = stored.record is record
        return Recorded(stored.record.reply, inserted=inserted, tombstoned=tombstoned)

    async def release(self, command_id: str) -> None:
        claim = self.claims.get(command_id)
        if claim is not None and not claim.tombstone and claim.settled_at is None:
            del self.claims[command_id]

    async def purge(self, older_than: timedelta) -> int:
        cutoff = self.clock() - older_than
        commands = [k for k, s in self.commands.items() if s.processed_at < cutoff]
        claims = [k for k, c in self.claims.items() if c.created_at < cutoff]
        for key in commands[:PURGE_BATCH]:
            del self.commands[key]
        for command_id in claims[:PURGE_BATCH]:
            del self.claims[command_id]
        return min(len(commands), PURGE_BATCH) + min(len(claims), PURGE_BATCH)


def reply_document(message: OutboxMessage) -> dict[str, Any]:
    """An encoded reply as JSON, enough to publish it again byte for byte."""
    try:
        body, encoding = message.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = "", "base64"
    if encoding == "base64" or "\x00" in body:  # jsonb cannot hold a NUL character
        body, encoding = base64.b64encode(message.body).decode("ascii"), "base64"
    return {
        "message_id": message.message_id,
        "message_type": message.message_type,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "content_type": message.content_type,
        "correlation_id": message.correlation_id,
        "headers": dict(message.headers),
        "body": body,
        "body_encoding": encoding,
    }


def reply_from_document(document: Mapping[str, Any]) -> OutboxMessage:
    """The inverse of ``reply_document``."""
    body = str(document["body"])
    raw = base64.b64decode(body) if document["body_encoding"] == "base64" else body.encode()
    return OutboxMessage(
        message_id=str(document["message_id"]),
        message_type=str(document["message_type"]),
        exchange=str(document["exchange"]),
        routing_key=str(document["routing_key"]),
        body=raw,
        content_type=str(document["content_type"]),
        headers={str(k): str(v) for k, v in document["headers"].items()},
        correlation_id=document["correlation_id"],
    )
