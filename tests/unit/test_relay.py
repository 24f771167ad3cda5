"""The outbox relay over the in-memory outbox: publish, mark, sweep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bus_orchestrator.errors import BrokerUnavailableError
from bus_orchestrator.ports import Change, Direction, HistoryEntry, OutboxMessage
from bus_orchestrator.runtime.relay import OutboxRelay
from bus_orchestrator.store.memory import InMemorySagaStore


class Publisher:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[str] = []

    async def publish(self, message: OutboxMessage) -> None:
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailableError("no confirm")
        self.sent.append(message.message_id)


def message(n: int) -> OutboxMessage:
    return OutboxMessage(f"m{n}", "t.x.v1", "ex", "t.x.v1", b"{}", "application/json")


async def commit(store: InMemorySagaStore, *ids: int):  # type: ignore[no-untyped-def]
    entry = HistoryEntry(Direction.IN, "in", "t", None, None, "", "", {}, datetime.now(UTC))
    change = Change("c", f"in-{ids}", None, None, None, (entry,), tuple(message(i) for i in ids))
    return (await store.commit(change)).outbox


async def wait_until(predicate, within: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(within / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_submitted_rows_are_published_and_marked_sent() -> None:
    store = InMemorySagaStore(outbox_lease=timedelta(seconds=30))
    publisher = Publisher()
    relay = OutboxRelay(store, publisher, lease=timedelta(seconds=30), sweep_interval=0.05)
    relay.start()
    try:
        relay.submit(await commit(store, 1, 2, 3))
        await wait_until(lambda: len(publisher.sent) == 3)
    finally:
        await relay.stop()
    assert publisher.sent == ["m1", "m2", "m3"]
    assert await store.claim_unsent(timedelta(seconds=1), 10) == []  # all marked sent


async def test_an_unconfirmed_row_is_published_again_after_its_lease() -> None:
    store = InMemorySagaStore(outbox_lease=timedelta(seconds=0.1))
    publisher = Publisher(failures=1)
    relay = OutboxRelay(store, publisher, lease=timedelta(seconds=0.1), sweep_interval=0.05)
    relay.start()
    try:
        relay.submit(await commit(store, 1))
        await wait_until(lambda: publisher.sent == ["m1"])
    finally:
        await relay.stop()


async def test_rows_nobody_submitted_are_found_by_the_sweep() -> None:
    store = InMemorySagaStore(outbox_lease=timedelta(seconds=0.05))
    await commit(store, 7)  # committed by a process that died before publishing
    publisher = Publisher()
    relay = OutboxRelay(store, publisher, lease=timedelta(seconds=5), sweep_interval=0.05)
    relay.start()
    try:
        await wait_until(lambda: publisher.sent == ["m7"])
    finally:
        await relay.stop()
