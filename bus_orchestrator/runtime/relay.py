"""The outbox relay: publishes committed outbox rows, with confirms, and marks them sent.

Rows reach it two ways. The fast path: the coordinator hands over the rows it has just
committed, which carry a short lease so no other relay touches them meanwhile. The recovery
path: a sweep claims rows whose lease ran out unsent (their process died between commit and
confirm, or the broker was away) and publishes them again. A row is marked sent only after
the broker's confirm, in batches; a crash before the mark means a second publish of the
same message id, which every consumer here deduplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import timedelta

from bus_orchestrator.errors import BusOrchestratorError
from bus_orchestrator.ports import Outbox, PendingPublish, Publisher
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.telemetry.tracing import extract, send_traced

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        *,
        lease: timedelta,
        sweep_interval: float,
        workers: int = 32,
        mark_batch: int = 256,
        mark_interval: float = 0.02,
        backlog_interval: float = 5.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._outbox = outbox
        self._publisher = publisher
        self._lease = lease
        self._sweep_interval = sweep_interval
        self._workers = workers
        self._mark_batch = mark_batch
        self._mark_interval = mark_interval
        self._backlog_interval = backlog_interval
        self._telemetry = telemetry or Telemetry.disabled()
        self._queue: asyncio.Queue[PendingPublish] = asyncio.Queue()
        self._inflight: set[int] = set()
        self._confirmed: list[int] = []
        self._mark_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.published = 0

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        """Publish rows the caller has just committed."""
        for row in rows:
            if row.outbox_id not in self._inflight:
                self._inflight.add(row.outbox_id)
                self._queue.put_nowait(row)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._publish_loop()) for _ in range(self._workers)]
        self._tasks.append(asyncio.create_task(self._mark_loop()))
        self._tasks.append(asyncio.create_task(self._sweep_loop()))

    async def stop(self, grace: float = 10.0) -> None:
        """Publish what was handed over (up to ``grace`` seconds), record confirms, stop.

        Rows still unpublished stay in the outbox; the next relay's sweep takes them.
        """
        try:
            await asyncio.wait_for(self._queue.join(), grace)
        except TimeoutError:
            log.warning("relay stopping with %d rows unpublished", self._queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._flush_marks()

    async def _publish_loop(self) -> None:
        while True:
            row = await self._queue.get()
            try:
                await self._publish(row)
            except BusOrchestratorError as exc:
                # Left under its lease; the sweep retries it once the lease runs out.
                log.warning("outbox row %d not published: %s", row.outbox_id, exc)
                self._inflight.discard(row.outbox_id)
                await asyncio.sleep(0.2)
            except Exception:
                log.exception("outbox row %d: unexpected publish failure", row.outbox_id)
                self._inflight.discard(row.outbox_id)
            else:
                self.published += 1
                self._confirmed.append(row.outbox_id)
                if len(self._confirmed) >= self._mark_batch:
                    self._mark_now.set()
            finally:
                self._queue.task_done()

    async def _publish(self, row: PendingPublish) -> None:
        """Publish under a PRODUCER span, child of the work that committed the row."""
        parent = extract(row.message.headers)
        await send_traced(self._telemetry.tracer, self._publisher, row.message, parent)

    async def _flush_marks(self) -> None:
        if not self._confirmed:
            return
        batch, self._confirmed = self._confirmed, []
        try:
            await self._outbox.mark_sent(batch)
        except BusOrchestratorError as exc:
            log.warning("could not mark %d outbox rows sent, will retry: %s", len(batch), exc)
            self._confirmed[:0] = batch
            return
        self._inflight.difference_update(batch)

    async def _mark_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._mark_now.wait(), self._mark_interval)
            except TimeoutError:
                pass
            self._mark_now.clear()
            await self._flush_marks()

    async def _sweep_loop(self) -> None:
        next_backlog = 0.0
        while True:
            await asyncio.sleep(self._sweep_interval)
            if time.monotonic() >= next_backlog:
                next_backlog = time.monotonic() + self._backlog_interval
                try:
                    count, oldest = await self._outbox.outbox_backlog()
                    self._telemetry.metrics.set_outbox_backlog(count, oldest)
                except BusOrchestratorError as exc:
                    log.warning("outbox backlog not measured: %s", exc)
            try:
                rows = await self._outbox.claim_unsent(self._lease, limit=500)
            except BusOrchestratorError as exc:
                log.warning("outbox sweep failed: %s", exc)
                continue
            if rows:
                log.info("outbox sweep picked up %d unsent rows", len(rows))
                self.submit(rows)
