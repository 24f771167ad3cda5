"""Repairs racing each other on the real Postgres store, from two coordinators (as two
processes would): each is applied to the state the other left, or refused, never both to
the same version; what each applied is in the history once, with its commands."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core import Inbound, Repair, RepairRefusedError, SagaStatus, decide
from bus_orchestrator.core.repair import RepairRequest
from bus_orchestrator.ports import Change, CommitResult, PendingPublish
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.runtime.history import entry_in
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool, register_app
from bus_orchestrator.transport.topology import Topology
from example import create_app
from sagas import order_to_cash
from tests.integration.harness import migrated, order

pytestmark = pytest.mark.integration


class Rows:
    def __init__(self) -> None:
        self.rows: list[PendingPublish] = []

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        self.rows.extend(rows)


async def test_two_coordinators_repairing_one_saga_apply_each_once_in_turn(
    settings: Settings, db_schema: str
) -> None:
    await migrated(settings)
    app = create_app()
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 4}))
    try:
        scope = await register_app(pool, app.name, sorted({d.name for d in app.sagas}))
        store = PostgresSagaStore(pool, timedelta(seconds=30), scope)
        topology = Topology(settings.exchange_prefix, settings.delivery_limit)
        relays = (Rows(), Rows())
        coordinators = [
            Coordinator(
                app.sagas,
                app.registry,
                store,
                relay,
                topology,
                lambda: datetime.now(UTC),
                source="urn:test",
                max_message_bytes=settings.max_message_bytes,
                app=app.name,
            )
            for relay in relays
        ]
        ids = []
        for n in range(12):
            inbound = Inbound(str(uuid.uuid4()), order(f"race-{n}"), f"race-{n}", source="t")
            decision = decide(order_to_cash.build(), None, inbound, datetime.now(UTC))
            assert decision.instance is not None
            committed = await store.commit(
                Change(
                    "test",
                    inbound.message_id,
                    decision.instance.saga_id,
                    decision.instance,
                    None,
                    (entry_in(inbound, "started", "", datetime.now(UTC)),),
                )
            )
            assert committed.result is CommitResult.COMMITTED
            ids.append(decision.instance.saga_id)

        async def attempt(coordinator: Coordinator, repair: Repair, saga_id: str) -> bool:
            ask = RepairRequest(repair, saga_id, str(uuid.uuid4()), "ops", f"{repair} race")
            try:
                await coordinator.repair(ask)
            except RepairRefusedError:
                return False
            return True

        results = await asyncio.gather(
            *(
                asyncio.gather(
                    attempt(coordinators[0], Repair.ABORT, saga_id),
                    attempt(coordinators[1], Repair.RETRY, saga_id),
                )
                for saga_id in ids
            )
        )
        for saga_id, (aborted, retried) in zip(ids, results, strict=True):
            # abort applies whatever the order (a retry leaves the saga running); a retry
            # after the abort is refused (the saga is stopping)
            assert aborted
            [saga] = await store.find(saga_id)
            history = [h.message_type for h in await store.history(saga_id)]
            applied = history.count("bus.operator.abort") + history.count("bus.operator.retry")
            assert history.count("bus.operator.abort") == 1
            assert history.count("bus.operator.retry") == (1 if retried else 0)
            assert saga.version == 1 + applied
            assert saga.status is SagaStatus.RUNNING and saga.cancel_reason is not None
        resent = [r for relay in relays for r in relay.rows]
        retried_count = sum(1 for _, r in results if r)
        # each applied retry resent the stock reservation once, with its command id
        assert len(resent) == retried_count
        assert {r.message.message_type for r in resent} <= {"inventory.reserve_stock.v1"}
    finally:
        await pool.close()
