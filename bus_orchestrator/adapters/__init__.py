"""The kit for writing adapters: command handlers that talk to legacy and SaaS systems.

- ``Adapter`` declares the handler of each command type (``@adapter.handles(Model)``);
- ``CommandProcessor`` runs one delivery: dedup by command id, retries, confirmed reply;
- ``CommandLog`` remembers processed commands (``PostgresCommandLog``, ``InMemoryCommandLog``);
- ``run_adapters`` (in ``bus_orchestrator.adapters.runner``) wires them to the broker.
"""

from bus_orchestrator.adapters.adapter import (
    Adapter,
    CommandContext,
    CommandHandler,
    RetryPolicy,
)
from bus_orchestrator.adapters.command_log import (
    CommandLog,
    CommandRecord,
    InMemoryCommandLog,
    Recorded,
)
from bus_orchestrator.adapters.postgres import PostgresCommandLog
from bus_orchestrator.adapters.processor import CommandProcessor, reply_id_for

__all__ = [
    "Adapter",
    "CommandContext",
    "CommandHandler",
    "CommandLog",
    "CommandProcessor",
    "CommandRecord",
    "InMemoryCommandLog",
    "PostgresCommandLog",
    "Recorded",
    "RetryPolicy",
    "reply_id_for",
]
