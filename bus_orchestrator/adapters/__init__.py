"""The kit for writing adapters: command handlers that talk to legacy and SaaS systems.

- ``Adapter`` declares the handler of each command type (``@adapter.handles(Model)``), and
  the failure reply of a command its compensation overtook (``refuse=``);
- ``CommandProcessor`` runs one delivery: dedup by command id, claim or tombstone, retries,
  confirmed reply;
- ``CommandLog`` remembers processed commands, claims and tombstones (``PostgresCommandLog``,
  ``InMemoryCommandLog``); ``CommandLogRetention`` purges what is old;
- ``run_adapters`` (in ``bus_orchestrator.adapters.runner``) wires them to the broker.
"""

from bus_orchestrator.adapters.adapter import (
    Adapter,
    CommandContext,
    CommandHandler,
    Refusal,
    RetryPolicy,
)
from bus_orchestrator.adapters.command_log import (
    Admission,
    CommandLog,
    CommandRecord,
    InMemoryCommandLog,
    Recorded,
    Standing,
)
from bus_orchestrator.adapters.postgres import PostgresCommandLog
from bus_orchestrator.adapters.processor import CommandProcessor, reply_id_for
from bus_orchestrator.adapters.retention import CommandLogRetention

__all__ = [
    "Adapter",
    "Admission",
    "CommandContext",
    "CommandHandler",
    "CommandLog",
    "CommandLogRetention",
    "CommandProcessor",
    "CommandRecord",
    "InMemoryCommandLog",
    "PostgresCommandLog",
    "Recorded",
    "Refusal",
    "RetryPolicy",
    "Standing",
    "reply_id_for",
]
