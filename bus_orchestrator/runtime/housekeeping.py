"""Housekeeping: keeps the inbox, the outbox and the sagas from growing without bound.

Confirmed outbox rows (their bodies dropped at the confirm) are kept ``outbox_retention``;
the saga history keeps the audit of what was sent. Processed message ids are kept
``inbox_retention``, long enough to catch any redelivery. Finished sagas (completed,
compensated, failed) and their history are kept ``saga_retention`` after they finished,
and so are history rows of no saga (messages nobody awaited). All are deleted in bounded
batches, each its own short statement. The changes to the saga counts of ``GET /stats``
are folded into them (Postgres keeps them by trigger, migration 0012).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bus_orchestrator.periodic import Periodic, until_empty
from bus_orchestrator.ports import Outbox, SagaStore

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(
        self,
        store: SagaStore,
        outbox: Outbox,
        *,
        inbox_retention: timedelta,
        outbox_retention: timedelta,
        saga_retention: timedelta,
        interval: float,
    ) -> None:
        self._purges: list[tuple[str, Callable[[], Awaitable[int]]]] = [
            ("inbox", lambda: store.purge_inbox(inbox_retention)),
            ("outbox", lambda: outbox.purge_sent(outbox_retention)),
            ("sagas", lambda: store.purge_finished(saga_retention)),
            ("history", lambda: store.purge_orphan_history(saga_retention)),
            ("counts", store.fold_counts),
        ]
        self.loop = Periodic("housekeeping", self._round, interval)

    def start(self) -> None:
        self.loop.start()

    async def stop(self) -> None:
        await self.loop.stop()

    async def sweep(self) -> dict[str, int]:
        """One round: purge each table until a batch comes back empty."""
        return {name: await until_empty(purge) for name, purge in self._purges}

    async def _round(self) -> None:
        removed = await self.sweep()
        if any(removed.values()):
            log.info("housekeeping removed %s", removed)
