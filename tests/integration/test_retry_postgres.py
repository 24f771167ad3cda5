"""A step's retry on the real database: the transient failure is stored with the step, the
retry waits on the saga's durable deadline, the timer loop's claim fires it under the new
attempt's command id, and a late reply to the old id finds no saga awaiting it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import Message, Phase, SagaStatus, StepStatus, command_id_for
from bus_orchestrator.ports import PendingPublish
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.testing import ManualClock
from bus_orchestrator.testing.bus import raw_message
from bus_orchestrator.transport.codec import encode
from bus_orchestrator.transport.topology import Topology
from tests.integration.harness import migrated
from tests.unit.test_retry import (
    POLICY,
    SAGA_ID,
    UNAVAILABLE,
    AccountOpened,
    CreditApproved,
    SignedUp,
    _saga,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)


class Relay:
    def __init__(self) -> None:
        self.rows: list[PendingPublish] = []

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        self.rows.extend(rows)

    def take(self) -> list[str]:
        """The ids of the commands sent since the last take."""
        ids = [row.message.message_id for row in self.rows]
        self.rows = []
        return ids


async def test_a_retry_is_stored_armed_and_fired_from_postgres(
    settings: Settings, db_schema: str
) -> None:
    await migrated(settings)
    pool = await create_pool(settings)
    try:
        store = PostgresSagaStore(pool, timedelta(seconds=10))
        clock = ManualClock(T0)
        topology = Topology(settings.exchange_prefix)
        relay = Relay()
        app = App("retry-pg", sagas=[_saga()])
        coordinator = Coordinator(
            app.sagas,
            app.registry,
            store,
            relay,
            topology,
            clock,
            source="urn:test",
            max_message_bytes=1_000_000,
            app=app.name,
        )
        ids = itertools.count()

        async def deliver(payload: Message, causation_id: str | None = None) -> None:
            message = encode(
                message_id=f"in-{next(ids)}",
                payload=payload,
                exchange=topology.exchange_for(payload.kind),
                source="urn:test:bureau",
                time=clock(),
                correlation_id="c-1",
                causation_id=causation_id,
            )
            await coordinator.handle(raw_message(message))

        await deliver(SignedUp(customer="c-1"))
        [open_account] = relay.take()
        await deliver(AccountOpened(), open_account)
        [attempt_1] = relay.take()
        assert attempt_1 == command_id_for(SAGA_ID, 1, Phase.FORWARD)
        await deliver(UNAVAILABLE, attempt_1)
        assert relay.take() == []

        [waiting] = await store.list_sagas(limit=10)
        due = clock.now + POLICY.delay(SAGA_ID, 1, 2)
        attempt_2 = command_id_for(SAGA_ID, 1, Phase.FORWARD, 2)
        credit = waiting.steps[1]
        assert (credit.status, credit.tries, credit.retry_at) == (StepStatus.RUNNING, 2, due)
        assert (waiting.deadline, waiting.pending_command_id) == (due, attempt_2)

        # the timer loop's claim: nothing before the retry is due, the saga at its time
        clock.advance(due - clock.now - timedelta(milliseconds=1))
        assert await store.claim_timers(clock.now, LEASE, 10) == []
        clock.advance(timedelta(milliseconds=1))
        [timer] = await store.claim_timers(clock.now, LEASE, 10)
        await coordinator.fire(timer.instance)
        assert relay.take() == [attempt_2]

        # a late success to attempt 1 is not taken for attempt 2's
        await deliver(CreditApproved(), attempt_1)
        [still] = await store.list_sagas(limit=10)
        assert (still.status, still.pending_command_id) == (SagaStatus.RUNNING, attempt_2)

        await deliver(CreditApproved(), attempt_2)
        [done] = await store.list_sagas(limit=10)
        assert done.status is SagaStatus.COMPLETED
        assert (done.steps[1].status, done.steps[1].tries) == (StepStatus.SUCCEEDED, 2)
    finally:
        await pool.close()
