"""Retention of the command log: old commands, claims and tombstones are purged.

The adapters process runs ``CommandLogRetention`` next to its consumers. Every ``interval``
seconds it deletes what is older than ``retention`` in bounded batches (each one short
statement, see ``CommandLog.purge``) until a batch comes back empty. The retention must
outlast any redelivery or resend of a command: one seen again after its row is gone is
handled anew, and a command whose tombstone is gone is no longer refused.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from bus_orchestrator.adapters.command_log import CommandLog
from bus_orchestrator.errors import BusOrchestratorError

log = logging.getLogger(__name__)


class CommandLogRetention:
    """A loop purging ``command_log`` of rows older than ``retention``."""

    def __init__(self, command_log: CommandLog, *, retention: timedelta, interval: float) -> None:
        if retention <= timedelta(0):
            raise ValueError("retention must be positive")
        if interval <= 0:
            raise ValueError("interval must be positive")
        self._log = command_log
        self._retention = retention
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="command-log-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sweep(self) -> int:
        """One round: purge batch after batch until one comes back empty; how many went."""
        total = batch = await self._log.purge(self._retention)
        while batch:
            batch = await self._log.purge(self._retention)
            total += batch
        return total

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                removed = await self.sweep()
            except BusOrchestratorError as exc:
                log.warning("command log purge failed, will retry: %s", exc)
                continue
            if removed:
                log.info("command log purge removed %d rows", removed)
