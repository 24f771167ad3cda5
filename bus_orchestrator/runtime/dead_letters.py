"""Listing, replaying and purging archived dead letters: one service for the HTTP API
(``api/dead.py``) and the command line (``cli_dead.py``).

A replay publishes the dead letter to its original exchange and routing key, confirmed,
while its row is locked, and records who replayed it, why, and as which message id; it is
refused unless the dead letter is ``dead``. A corrected message (new ``data``, or a whole
new body) is first checked as its consumer would check it, when the app knows its type.

**Which message id.** A consumer deduplicates by CloudEvents ``source`` and ``id``, but only
a message it *handled* is in its inbox: the inbox row is written by the same statement that
applies the message, and every refusal (malformed, not a CloudEvent, missing attributes,
unknown type, schema violation, oversized, handler error, delivery limit) writes nothing.
So a replay keeps the message's id, corrected or not, and is processed; and a consumer
that did handle the original (another app bound to the same routing key) deduplicates it,
rather than handling it twice. The exception is ``expired``: the park recorded the event's
id when it kept it, so the same id would be dropped as a duplicate of the parked one while
its saga still does not exist. It is replayed under a new id by default (``new_id``
overrides either way), derived from the dead letter, so a retried replay sends the very
same message. A command keeps its id unless told otherwise: the saga awaits the reply to
that id.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bus_orchestrator.core.messages import ContractRegistry
from bus_orchestrator.errors import BusOrchestratorError, DeadLetterReason, InvalidMessageError
from bus_orchestrator.ports import (
    DeadAfter,
    DeadFilter,
    DeadLetterArchive,
    DeadStatus,
    StoredDeadLetter,
)
from bus_orchestrator.transport.codec import RawMessage, decode
from bus_orchestrator.transport.dead_letters import (
    amqp_message,
    replay_headers,
    replay_id,
    with_data,
    with_id,
)
from bus_orchestrator.transport.publisher import AmqpPublisher


class DeadLetterNotFoundError(BusOrchestratorError):
    """No archived dead letter has that id."""


class DeadLetterStateError(BusOrchestratorError):
    """The dead letter's fate does not allow this (replayed or purged already)."""

    def __init__(self, detail: str, status: DeadStatus) -> None:
        super().__init__(detail)
        self.status = status


class ReplayRefusedError(BusOrchestratorError):
    """The corrected message is refused (its contract, or it cannot be built): ``field``
    names what to fix (``data`` or ``body``)."""

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True)
class Correction:
    """What a replay changes: nothing, the CloudEvents ``data``, or the whole body."""

    data: Any = None
    has_data: bool = False
    body: bytes | None = None

    @property
    def changed(self) -> bool:
        return self.has_data or self.body is not None


@dataclass(frozen=True, slots=True)
class Replayed:
    """A replay done: the row after it, and the message as published."""

    dead_letter: StoredDeadLetter
    message_id: str | None
    exchange: str
    routing_key: str


def body_view(body: bytes | None) -> tuple[str | None, Any, str | None]:
    """``(encoding, json, base64)`` of a body: ``json`` and its value when it is JSON,
    else ``base64``; ``None`` when it was purged."""
    if body is None:
        return None, None, None
    try:
        return "json", json.loads(body), None
    except (ValueError, RecursionError):
        return "base64", None, base64.b64encode(body).decode()


SUMMARY = (
    "id",
    "message_id",
    "message_type",
    "source",
    "correlation_id",
    "reason",
    "detail",
    "dead_lettered_by",
    "original_exchange",
    "original_routing_key",
    "saga_id",
    "content_type",
    "body_bytes",
    "dead_lettered_at",
    "archived_at",
    "status",
    "replayed_at",
    "replayed_by",
    "replay_reason",
    "replayed_as",
    "purged_at",
    "purged_by",
    "purge_reason",
)
"""What a listing shows of each dead letter (``GET /dead``, ``dead list --output json``)."""


def dead_letter_view(row: StoredDeadLetter, *, whole: bool = False) -> dict[str, Any]:
    """A dead letter as JSON: ``SUMMARY``, and when ``whole`` its properties, headers and
    body (see ``body_view``). Times are ISO 8601 strings."""
    found: dict[str, Any] = {}
    for name in SUMMARY:
        value = getattr(row, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, DeadStatus):
            value = value.value
        found[name] = value
    if whole:
        encoding, data, encoded = body_view(row.body)
        found.update(
            properties=row.properties or {},
            headers=row.headers or {},
            body_encoding=encoding,
            body=data,
            body_base64=encoded,
        )
    return found


class DeadLetters:
    """The archive's verbs. ``publisher`` is called only by a replay (the API's comes from
    its archive's connection, the command line's from one of its own)."""

    def __init__(
        self,
        store: DeadLetterArchive,
        publisher: Callable[[], Awaitable[AmqpPublisher]],
        registry: ContractRegistry | None,
        max_bytes: int,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._registry = registry
        self._max_bytes = max_bytes

    async def page(
        self, where: DeadFilter, after: DeadAfter | None, limit: int
    ) -> list[StoredDeadLetter]:
        return await self._store.page(where, after, limit)

    async def get(self, dead_letter_id: str) -> StoredDeadLetter:
        found = await self._store.get(dead_letter_id)
        if found is None:
            raise DeadLetterNotFoundError(f"no dead letter has id {dead_letter_id!r}")
        return found

    async def replay(
        self,
        dead_letter_id: str,
        *,
        by: str,
        reason: str,
        correction: Correction | None = None,
        new_id: bool | None = None,
    ) -> Replayed:
        """Publish it again (corrected, if ``correction`` says so) and record it.

        Raises ``DeadLetterNotFoundError``, ``DeadLetterStateError`` (not ``dead``, or no
        original exchange known), ``ReplayRefusedError`` (the correction is refused) and
        ``BrokerUnavailableError`` (not confirmed: nothing is recorded)."""
        correction = correction or Correction()
        async with self._store.replaying(dead_letter_id) as locked:
            row = locked.row
            if row is None:
                raise DeadLetterNotFoundError(f"no dead letter has id {dead_letter_id!r}")
            if correction.has_data and correction.body is not None:
                raise ReplayRefusedError("give the corrected data or body, not both", "body")
            if row.status is not DeadStatus.DEAD:
                raise DeadLetterStateError(
                    f"dead letter {row.id} is {row.status} already: only a dead one is replayed",
                    row.status,
                )
            if row.original_exchange is None or row.original_routing_key is None:
                raise DeadLetterStateError(
                    f"dead letter {row.id} does not say where it came from (no original "
                    "exchange and routing key): it cannot be replayed",
                    row.status,
                )
            assert row.body is not None and row.headers is not None  # noqa: S101 - dead
            assert row.properties is not None  # noqa: S101 - read whole
            body, headers, fresh_id = self._rebuild(row, correction, new_id)
            message_id = fresh_id or row.message_id
            if correction.changed:
                self._check(row, body, headers, message_id)
            message = amqp_message(body, headers, row.properties, fresh_id, row.id)
            publisher = await self._publisher()
            await publisher.send(row.original_exchange, row.original_routing_key, message)
            after = await locked.mark(by, reason, message_id)
        return Replayed(after, message_id, row.original_exchange, row.original_routing_key)

    def _rebuild(
        self, row: StoredDeadLetter, correction: Correction, new_id: bool | None
    ) -> tuple[bytes, dict[str, Any], str | None]:
        """The body and headers to publish, and the new message id if it takes one."""
        assert row.body is not None and row.headers is not None  # noqa: S101
        headers = replay_headers(row.headers)
        body = row.body
        if correction.body is not None:
            body = correction.body
        elif correction.has_data:
            try:
                body = with_data(body, row.content_type, correction.data)
            except ValueError as exc:
                raise ReplayRefusedError(str(exc), "data") from exc
        if new_id if new_id is not None else row.reason == DeadLetterReason.EXPIRED:
            fresh_id = replay_id(row.id)
            return with_id(body, row.content_type, headers, fresh_id), headers, fresh_id
        return body, headers, None

    def _check(
        self, row: StoredDeadLetter, body: bytes, headers: dict[str, Any], message_id: str | None
    ) -> None:
        """Refuse a corrected message its consumer would refuse, when the app knows its
        type (a type it does not know is another app's business)."""
        if self._registry is None:
            return
        properties = row.properties or {}
        raw = RawMessage(
            body=body,
            headers=headers,
            content_type=row.content_type,
            message_id=message_id,
            correlation_id=properties.get("correlation_id"),
            type=row.message_type,
            exchange=row.original_exchange or "",
            routing_key=row.original_routing_key or "",
        )
        try:
            decode(raw, self._registry, self._max_bytes)
        except InvalidMessageError as exc:
            if exc.reason is DeadLetterReason.UNKNOWN_TYPE:
                return
            field = "data" if exc.reason is DeadLetterReason.SCHEMA else "body"
            raise ReplayRefusedError(f"{exc.reason}: {exc.detail}", field) from exc

    async def purge(self, dead_letter_id: str, *, by: str, reason: str) -> StoredDeadLetter:
        """Mark it purged and drop its body. Raises ``DeadLetterNotFoundError``, and
        ``DeadLetterStateError`` when it is purged already."""
        purged = await self._store.purge(dead_letter_id, by, reason)
        if purged is not None:
            return purged
        found = await self.get(dead_letter_id)
        raise DeadLetterStateError(f"dead letter {found.id} is purged already", found.status)
