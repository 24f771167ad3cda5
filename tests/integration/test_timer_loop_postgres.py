"""The timer loop on Postgres: bad timers neither freeze it nor fire forever, and with two
coordinators on one database each due timer is fired once."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core import TIMER_MESSAGE_TYPE, Inbound, SagaInstance, SagaStatus, decide
from bus_orchestrator.core.state import saga_id_for
from bus_orchestrator.ports import Change, DueTimer, PendingPublish
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.runtime.timers import TimerLoop, TimerPolicy
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.transport.topology import Topology
from contracts import REGISTRY
from sagas import order_to_cash
from tests.integration.harness import RESERVE, migrated, order, rows_when, sql

pytestmark = pytest.mark.integration

TIMEOUT = timedelta(seconds=30)
POLICY = TimerPolicy(
    interval=0.05,
    lease=timedelta(seconds=30),
    attempts=3,
    retry=timedelta(milliseconds=50),
    retry_max=timedelta(milliseconds=200),
    batch=100,
)
ORDER_TO_CASH = order_to_cash.build(TIMEOUT)


def _on_fire(data: Any) -> Any:
    raise RuntimeError("the inventory system is on fire")


FRAGILE = dataclasses.replace(
    ORDER_TO_CASH,
    name="fragile",
    steps=(dataclasses.replace(ORDER_TO_CASH.steps[0], command=_on_fire), *ORDER_TO_CASH.steps[1:]),
)
"""Order-to-cash whose first command cannot be built again: its resend on timeout raises."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Relay:
    def __init__(self) -> None:
        self.rows: list[PendingPublish] = []

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        self.rows.extend(rows)


class CountingStore(PostgresSagaStore):
    """Remembers what each claim returned; ``claimed`` is set after the first one."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, timedelta(seconds=10))
        self.claims: list[list[str]] = []
        self.polls: list[int | None] = []
        """How many each claim returned, in order; the test adds ``None`` for each sleep."""
        self.claimed = asyncio.Event()

    async def claim_timers(self, now: datetime, lease: timedelta, limit: int) -> list[DueTimer]:
        due = await super().claim_timers(now, lease, limit)
        self.claims.append([t.instance.saga_id for t in due])
        self.polls.append(len(due))
        self.claimed.set()
        return due


class CountingCoordinator(Coordinator):
    """Fires only once ``wait_for`` is set, and remembers what it fired."""

    def __init__(self, store: PostgresSagaStore, wait_for: asyncio.Event | None = None) -> None:
        super().__init__(
            [ORDER_TO_CASH, FRAGILE],
            REGISTRY,
            store,
            Relay(),
            Topology("t."),
            utc_now,
            source="urn:test",
            max_message_bytes=1_000_000,
        )
        self.wait_for = wait_for
        self.fired: list[str] = []

    async def fire(self, instance: SagaInstance) -> None:
        if self.wait_for is not None:
            await self.wait_for.wait()
        self.fired.append(instance.saga_id)
        await super().fire(instance)


def awaiting_stock(correlation_id: str, due: datetime, saga_type: str) -> SagaInstance:
    """An order-to-cash saga awaiting its stock reservation since ``due``, relabelled."""
    start = Inbound(f"placed-{correlation_id}", order(correlation_id), correlation_id)
    instance = decide(ORDER_TO_CASH, None, start, due - TIMEOUT).instance
    assert instance is not None and instance.deadline == due
    return instance.model_copy(
        update={"saga_type": saga_type, "saga_id": saga_id_for(saga_type, correlation_id)}
    )


async def store_all(store: PostgresSagaStore, sagas: list[SagaInstance]) -> None:
    for first in range(0, len(sagas), 50):
        await asyncio.gather(
            *(
                store.commit(Change(s.saga_type, f"start-{s.saga_id}", s.saga_id, s, None, ()))
                for s in sagas[first : first + 50]
            )
        )


@pytest.fixture
async def pools(settings: Settings, db_schema: str) -> AsyncIterator[list[asyncpg.Pool]]:
    """Two pools, as two coordinator processes would have."""
    await migrated(settings)
    opened = [await create_pool(settings.model_copy(update={"db_pool_size": 2})) for _ in "ab"]
    try:
        yield opened
    finally:
        for pool in opened:
            await pool.close()


async def test_bad_timers_back_off_and_fail_while_good_ones_fire(
    settings: Settings, pools: list[asyncpg.Pool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bus_orchestrator.runtime.timers")
    now = utc_now()
    vanished = [awaiting_stock(f"v-{n}", now - timedelta(hours=2), "vanished") for n in range(100)]
    fragile = [awaiting_stock(f"f-{n}", now - timedelta(hours=2), "fragile") for n in range(100)]
    good = [awaiting_stock(f"g-{n}", now - timedelta(hours=1), "order_to_cash") for n in range(20)]
    store = CountingStore(pools[0])
    await store_all(store, vanished + fragile + good)

    async def sleep(seconds: float) -> None:
        store.polls.append(None)
        await asyncio.sleep(seconds)

    loop = TimerLoop(store, CountingCoordinator(store), utc_now, POLICY, sleep=sleep)
    loop.start()
    try:
        rows = await rows_when(
            settings,
            "SELECT status, count(*) AS n FROM saga GROUP BY status",
            lambda rows: {r["status"]: r["n"] for r in rows} == {"failed": 200, "running": 20},
            within=60,
        )
    finally:
        await loop.stop()
    assert {r["status"]: r["n"] for r in rows} == {"failed": 200, "running": 20}

    # the good timers fired, once each: the command was resent; each failed saga sent its
    # one end event, whether its code raised or its timer was given up on
    outbox = await sql(settings, "SELECT message_type, correlation_id FROM outbox")
    by_type: dict[str, list[str]] = {}
    for row in outbox:
        by_type.setdefault(row["message_type"], []).append(row["correlation_id"])
    assert sorted(by_type) == [RESERVE, "saga.fragile.failed.v1", "saga.vanished.failed.v1"]
    assert sorted(by_type[RESERVE]) == sorted(s.correlation_id for s in good)
    assert sorted(by_type["saga.fragile.failed.v1"]) == sorted(s.correlation_id for s in fragile)
    assert sorted(by_type["saga.vanished.failed.v1"]) == sorted(s.correlation_id for s in vanished)
    for saga in await store.list_sagas(status=SagaStatus.RUNNING, limit=100):
        assert saga.steps[0].attempts == 2
        assert saga.deadline is not None and saga.deadline > now

    # the loop slept after every poll that claimed less than a full batch: it never spins,
    # and it polled without a pause only while full batches of tries were due
    for claimed_now, then in itertools.pairwise(store.polls):
        assert claimed_now is None or claimed_now == POLICY.batch or then is None, store.polls
    assert sum(len(claim) for claim in store.claims) <= 200 * POLICY.attempts + len(good)
    # each unknown-type timer was tried its 3 attempts, logged once per try, then failed
    claimed = Counter(saga_id for claim in store.claims for saga_id in claim)
    assert {claimed[s.saga_id] for s in vanished} == {3}
    assert {claimed[s.saga_id] for s in fragile} <= {1, 2, 3}
    logged = Counter(
        saga.saga_id
        for saga in vanished
        for record in caplog.records
        if record.name == "bus_orchestrator.runtime.timers" and saga.saga_id in record.message
    )
    assert set(logged.values()) == {3}

    reason = "timer failed 3 times: saga type 'vanished' has no definition here"
    for saga in vanished:
        [failed] = await store.find(saga.saga_id)
        assert (failed.status, failed.failure, failed.deadline) == ("failed", reason, None)
        entry, ended = await store.history(saga.saga_id)
        assert (entry.message_type, entry.outcome, entry.note) == (
            TIMER_MESSAGE_TYPE,
            "failed",
            reason,
        )
        assert (ended.message_type, ended.outcome) == ("saga.vanished.failed.v1", "queued")
    for saga in fragile:
        [failed] = await store.find(saga.saga_id)
        assert failed.status is SagaStatus.FAILED
        assert failed.failure is not None and "the inventory system is on fire" in failed.failure
        *_, timer, ended = await store.history(saga.saga_id)
        assert timer.message_type == TIMER_MESSAGE_TYPE
        assert "the inventory system is on fire" in timer.note
        assert (ended.message_type, ended.outcome) == ("saga.fragile.failed.v1", "queued")


async def test_two_coordinators_fire_each_due_timer_once(
    settings: Settings, pools: list[asyncpg.Pool]
) -> None:
    now = utc_now()
    sagas = [
        awaiting_stock(f"o-{n}", now - timedelta(minutes=1), "order_to_cash") for n in range(50)
    ]
    stores = [CountingStore(pool) for pool in pools]
    await store_all(stores[0], sagas)
    # each fires only once the other has polled too, so both see the timers due together
    coordinators = [
        CountingCoordinator(stores[0], wait_for=stores[1].claimed),
        CountingCoordinator(stores[1], wait_for=stores[0].claimed),
    ]
    loops = [
        TimerLoop(store, coordinator, utc_now, POLICY)
        for store, coordinator in zip(stores, coordinators, strict=True)
    ]
    for loop in loops:
        loop.start()
    try:
        await rows_when(
            settings,
            "SELECT count(*) AS n FROM outbox",
            lambda rows: rows[0]["n"] >= len(sagas),
            within=30,
        )
        # both loops poll twice more, so a second firing would have happened by now
        polls = [len(store.claims) for store in stores]
        loop_time = asyncio.get_running_loop().time
        deadline = loop_time() + 30
        while any(len(s.claims) < n + 2 for s, n in zip(stores, polls, strict=True)):
            assert loop_time() < deadline, "the timer loops stopped polling"
            await asyncio.sleep(0.02)
    finally:
        for loop in loops:
            await loop.stop()

    fired = coordinators[0].fired + coordinators[1].fired
    assert sorted(fired) == sorted(s.saga_id for s in sagas)
    claimed = [saga_id for store in stores for claim in store.claims for saga_id in claim]
    assert sorted(claimed) == sorted(fired)
    outbox = await sql(settings, "SELECT message_type, correlation_id FROM outbox")
    assert sorted(r["correlation_id"] for r in outbox) == sorted(s.correlation_id for s in sagas)
    timers = await sql(
        settings, "SELECT saga_id FROM saga_history WHERE message_type = $1", TIMER_MESSAGE_TYPE
    )
    assert len(timers) == len(sagas)
