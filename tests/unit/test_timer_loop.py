"""The timer loop over the in-memory store: claims, backoff, giving up, and never spinning."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bus_orchestrator.core import TIMER_MESSAGE_TYPE, Inbound, SagaInstance, SagaStatus, decide
from bus_orchestrator.core.state import saga_id_for
from bus_orchestrator.errors import StoreUnavailableError
from bus_orchestrator.ports import Change, DueTimer, PendingPublish
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.runtime.timers import TimerLoop, TimerPolicy
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.transport.topology import Topology
from contracts import REGISTRY
from sagas import all_sagas, order_to_cash
from tests.integration.harness import RESERVE, order

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUT = timedelta(seconds=30)
POLICY = TimerPolicy(
    interval=0.5,
    lease=timedelta(seconds=30),
    attempts=3,
    retry=timedelta(seconds=1),
    retry_max=timedelta(seconds=60),
    batch=100,
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Relay:
    def __init__(self) -> None:
        self.rows: list[PendingPublish] = []

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        self.rows.extend(rows)


class CountingStore(InMemorySagaStore):
    """Remembers how many timers each claim returned."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.claims: list[int] = []

    async def claim_timers(self, now: datetime, lease: timedelta, limit: int) -> list[DueTimer]:
        claimed = await super().claim_timers(now, lease, limit)
        self.claims.append(len(claimed))
        return claimed


def awaiting_stock(correlation_id: str, saga_type: str = "order_to_cash") -> SagaInstance:
    """An order-to-cash saga awaiting its stock reservation, due at T0; relabelled if asked."""
    start = Inbound(f"placed-{correlation_id}", order(correlation_id), correlation_id)
    instance = decide(order_to_cash.build(TIMEOUT), None, start, T0 - TIMEOUT).instance
    assert instance is not None and instance.deadline == T0
    if saga_type == instance.saga_type:
        return instance
    return instance.model_copy(
        update={"saga_type": saga_type, "saga_id": saga_id_for(saga_type, correlation_id)}
    )


async def stored(store: InMemorySagaStore, *sagas: SagaInstance) -> None:
    for saga in sagas:
        change = Change(saga.saga_type, f"start-{saga.saga_id}", saga.saga_id, saga, None, ())
        await store.commit(change)


def timer_loop(store: InMemorySagaStore, clock: Clock, relay: Relay, **sleep: object) -> TimerLoop:
    coordinator = Coordinator(
        all_sagas(TIMEOUT),
        REGISTRY,
        store,
        relay,
        Topology("t."),
        clock,
        source="urn:test",
        max_message_bytes=100_000,
    )
    return TimerLoop(store, coordinator, clock, POLICY, **sleep)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = TimerPolicy(0.5, timedelta(seconds=30), 9, timedelta(seconds=2), timedelta(seconds=10))
    assert [policy.backoff(n).total_seconds() for n in (1, 2, 3, 4, 100)] == [2, 4, 8, 10, 10]


async def test_a_good_timer_fires_once_and_its_claim_ends_with_the_deadline() -> None:
    clock, relay = Clock(), Relay()
    store = CountingStore(clock)
    await stored(store, awaiting_stock("o-1"))
    loop = timer_loop(store, clock, relay)

    assert await loop.tick() == 1
    assert [row.message.message_type for row in relay.rows] == [RESERVE]  # resent
    assert await loop.tick() == 0
    [saga] = await store.find("o-1")
    assert saga.steps[0].attempts == 2
    assert saga.deadline == T0 + TIMEOUT
    clock.now = T0 + TIMEOUT  # the new deadline is due at once, lease or not
    assert await loop.tick() == 1


async def test_an_unknown_saga_type_backs_off_then_fails_with_the_reason() -> None:
    clock, relay = Clock(), Relay()
    store = CountingStore(clock)
    vanished = awaiting_stock("o-1", "vanished")
    await stored(store, vanished)
    loop = timer_loop(store, clock, relay)

    assert await loop.tick() == 1  # try 1 fails: next try after 1 s
    assert await loop.tick() == 0
    clock.now = T0 + timedelta(seconds=1) - timedelta(microseconds=1)
    assert await loop.tick() == 0
    clock.now = T0 + timedelta(seconds=1)
    assert await loop.tick() == 1  # try 2 fails: next try after 2 s more
    clock.now = T0 + timedelta(seconds=3) - timedelta(microseconds=1)
    assert await loop.tick() == 0
    [still] = await store.find("o-1")
    assert still.status is SagaStatus.RUNNING
    assert await store.history(vanished.saga_id) == []

    clock.now = T0 + timedelta(seconds=3)
    assert await loop.tick() == 1  # try 3 fails: the saga is failed
    [failed] = await store.find("o-1")
    reason = "timer failed 3 times: saga type 'vanished' has no definition here"
    assert failed.status is SagaStatus.FAILED
    assert failed.failure == reason
    assert (failed.deadline, failed.pending_command_id, failed.version) == (None, None, 2)
    entry, out = await store.history(vanished.saga_id)
    assert (entry.message_type, entry.outcome, entry.note) == (TIMER_MESSAGE_TYPE, "failed", reason)
    assert entry.causation_id == vanished.pending_command_id
    # it ends on the bus as any saga does, though its type has no definition here
    [row] = relay.rows
    assert row.message.message_type == out.message_type == "saga.vanished.failed.v1"
    assert (row.message.exchange, row.message.correlation_id) == ("t.bus.events", "o-1")
    assert out.payload is not None and out.payload["reason"] == reason
    clock.now = T0 + timedelta(days=1)
    assert await loop.tick() == 0
    assert len(relay.rows) == 1


async def test_a_claim_held_by_another_process_is_not_fired() -> None:
    clock, relay = Clock(), Relay()
    store = CountingStore(clock)
    await stored(store, awaiting_stock("o-1"))
    await store.claim_timers(T0, POLICY.lease, 10)  # another coordinator holds it

    loop = timer_loop(store, clock, relay)
    assert await loop.tick() == 0
    clock.now = T0 + POLICY.lease  # that process died: its lease runs out
    assert await loop.tick() == 1
    assert len(relay.rows) == 1


async def test_the_loop_sleeps_when_only_failing_timers_are_due() -> None:
    clock, relay = Clock(), Relay()
    store = CountingStore(clock)
    await stored(store, *(awaiting_stock(f"o-{n}", "vanished") for n in range(250)))
    polls_per_sleep: list[int] = []
    enough = asyncio.Event()

    async def sleep(seconds: float) -> None:
        assert seconds == POLICY.interval
        polls_per_sleep.append(len(store.claims) - sum(polls_per_sleep))
        if len(polls_per_sleep) == 4:
            enough.set()
        await asyncio.sleep(0)

    loop = timer_loop(store, clock, relay, sleep=sleep)
    loop.start()
    try:
        await asyncio.wait_for(enough.wait(), timeout=30)
    finally:
        await loop.stop()
    # two full batches, the rest, then one empty poll per interval: all are backing off
    assert store.claims[:6] == [100, 100, 50, 0, 0, 0]
    assert polls_per_sleep[:4] == [3, 1, 1, 1]


async def test_a_timer_awaiting_no_command_fails_its_saga_in_the_end() -> None:
    clock, relay = Clock(), Relay()
    store = CountingStore(clock)
    broken = awaiting_stock("o-1").model_copy(update={"pending_command_id": None, "current": None})
    await stored(store, broken)
    loop = timer_loop(store, clock, relay)

    for at in (0, 1, 3):
        clock.now = T0 + timedelta(seconds=at)
        assert await loop.tick() == 1

    [failed] = await store.find("o-1")
    assert failed.status is SagaStatus.FAILED
    assert (
        failed.failure
        == f"timer failed 3 times: saga {broken.saga_id} has a timer but awaits no command"
    )
    assert [e.outcome for e in await store.history(broken.saga_id)] == ["failed", "queued"]
    assert [row.message.message_type for row in relay.rows] == ["saga.order_to_cash.failed.v1"]


class StoreFailingBackOff(CountingStore):
    async def back_off_timer(self, *args: Any) -> None:
        raise StoreUnavailableError("connection reset")


async def test_a_failed_try_that_cannot_be_recorded_holds_up_no_other_timer() -> None:
    clock, relay = Clock(), Relay()
    store = StoreFailingBackOff(clock)
    first = awaiting_stock("a", "vanished").model_copy(update={"deadline": T0 - TIMEOUT})
    await stored(store, first, awaiting_stock("b"))

    assert await timer_loop(store, clock, relay).tick() == 2

    assert [row.message.correlation_id for row in relay.rows] == ["b"]
