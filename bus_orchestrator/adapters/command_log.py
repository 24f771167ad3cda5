"""The command log: which commands an adapter has processed, and the exact reply it sent.

It is what makes an adapter idempotent. A command whose id is in the log is answered by
re-publishing the stored reply (same message id, same bytes) without calling the external
system again. ``PostgresCommandLog`` is the real one; ``InMemoryCommandLog`` its twin.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bus_orchestrator.ports import OutboxMessage


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
    to publish.
    """

    reply: OutboxMessage
    inserted: bool


class CommandLog(Protocol):
    """Processed commands, keyed by adapter and command id."""

    async def find(self, adapter: str, command_id: str) -> OutboxMessage | None:
        """The reply stored for this command, or ``None`` when it was never processed.

        Raises ``StoreUnavailableError`` when the log cannot be reached.
        """
        ...

    async def record(self, record: CommandRecord) -> Recorded:
        """Store the command's reply unless one is stored already; first writer wins.

        Raises ``StoreUnavailableError`` when the log cannot be reached.
        """
        ...


class InMemoryCommandLog:
    """``CommandLog`` in a dict, for unit tests."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], CommandRecord] = {}

    async def find(self, adapter: str, command_id: str) -> OutboxMessage | None:
        record = self.records.get((adapter, command_id))
        return None if record is None else record.reply

    async def record(self, record: CommandRecord) -> Recorded:
        stored = self.records.setdefault((record.adapter, record.command_id), record)
        return Recorded(stored.reply, inserted=stored is record)


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
