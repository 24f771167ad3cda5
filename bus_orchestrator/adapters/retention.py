"""Retention of the command log: old commands, claims and tombstones are purged.

The adapters process runs ``CommandLogRetention`` next to its consumers. Every ``interval``
seconds it deletes what is older than ``retention`` in bounded batches (each one short
statement, see ``CommandLog.purge``) until a batch comes back empty. The retention must
outlast any redelivery or resend of a command: one seen again after its row is gone is
handled anew, and a command whose tombstone is gone is no longer refused.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from bus_orchestrator.adapters.command_log import CommandLog
from bus_orchestrator.periodic import Periodic, until_empty

log = logging.getLogger(__name__)


class CommandLogRetention:
    """A loop purging ``command_log`` of rows older than ``retention``."""

    def __init__(self, command_log: CommandLog, *, retention: timedelta, interval: float) -> None:
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        self._log = command_log
        self._retention = retention
        self.loop = Periodic("command log purge", self._round, interval)

    def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()

    async def sweep(self) -> int:
        """One round: purge batch after batch until one comes back empty; how many went."""
        return await until_empty(lambda: self._log.purge(self._retention))

    async def _round(self) -> None:
        if removed := await self.sweep():
            log.info("command log purge removed %d rows", removed)
