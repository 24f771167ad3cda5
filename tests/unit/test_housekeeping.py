"""Housekeeping over the in-memory store: old inbox ids, confirmed outbox rows, finished
sagas and their history go."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bus_orchestrator.ports import Change, Direction, HistoryEntry, OutboxMessage
from bus_orchestrator.runtime.housekeeping import Housekeeping
from bus_orchestrator.store.memory import InMemorySagaStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def test_a_sweep_purges_by_age_in_batches_until_done() -> None:
    clock = Clock()
    store = InMemorySagaStore(outbox_lease=timedelta(seconds=1), clock=clock)
    for n in range(3):
        entry = HistoryEntry(Direction.IN, f"m{n}", "t", None, None, "", "", {}, T0)
        message = OutboxMessage(f"o{n}", "t.x.v1", "ex", "t.x.v1", b"{}", "application/json")
        committed = await store.commit(Change("c", f"m{n}", None, None, None, (entry,), (message,)))
        await store.mark_sent([committed.outbox[0].outbox_id])
    housekeeping = Housekeeping(
        store,
        store,
        inbox_retention=timedelta(days=7),
        outbox_retention=timedelta(days=1),
        saga_retention=timedelta(days=30),
        interval=60,
    )
    nothing = {"inbox": 0, "outbox": 0, "sagas": 0, "history": 0, "counts": 0}
    assert await housekeeping.sweep() == nothing
    clock.now += timedelta(days=2)
    assert await housekeeping.sweep() == {**nothing, "outbox": 3}
    clock.now += timedelta(days=6)
    assert await housekeeping.sweep() == {**nothing, "inbox": 3}
    clock.now += timedelta(days=30)
    assert await housekeeping.sweep() == {**nothing, "history": 3}  # the messages of no saga
