"""The coordinator over the in-memory store: outages, duplicates and races, without I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.errors import StoreUnavailableError
from bus_orchestrator.ports import Change, Committed, PendingPublish
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.transport.codec import RawMessage, encode
from bus_orchestrator.transport.consumer import DeadLetter, Verdict
from bus_orchestrator.transport.topology import Topology
from contracts import REGISTRY, StockReserved
from sagas import all_sagas
from tests.integration.harness import order

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TOPOLOGY = Topology("t.")


class Relay:
    def __init__(self) -> None:
        self.rows: list[PendingPublish] = []

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        self.rows.extend(rows)


class FlakyStore(InMemorySagaStore):
    """Fails the next ``outages`` calls, as a Postgres restart would."""

    def __init__(self, outages: int = 0) -> None:
        super().__init__(outbox_lease=timedelta(seconds=10))
        self.outages = outages
        self.commits = 0
        self.race: Any = None

    def _maybe_fail(self) -> None:
        if self.outages:
            self.outages -= 1
            raise StoreUnavailableError("connection refused")

    async def load(self, *args: Any) -> Any:
        self._maybe_fail()
        return await super().load(*args)

    async def commit(self, change: Change) -> Committed:
        self._maybe_fail()
        self.commits += 1
        if self.race is not None:  # another coordinator commits first, once
            race, self.race = self.race, None
            await race()
        return await super().commit(change)


def coordinator(store: InMemorySagaStore, relay: Relay) -> Coordinator:
    return Coordinator(
        all_sagas(),
        REGISTRY,
        store,
        relay,
        TOPOLOGY,
        lambda: NOW,
        source="urn:test",
        max_message_bytes=100_000,
    )


def raw(
    payload: Any, message_id: str, correlation: str | None = None, causation: str | None = None
) -> RawMessage:
    out = encode(
        message_id=message_id,
        payload=payload,
        exchange=TOPOLOGY.exchange_for(payload.kind),
        source="urn:test",
        time=NOW,
        correlation_id=correlation,
        causation_id=causation,
    )
    return RawMessage(out.body, out.headers, out.content_type, routing_key=out.routing_key)


async def test_a_store_outage_holds_the_message_and_retries_it() -> None:
    store, relay = FlakyStore(outages=3), Relay()
    verdict = await coordinator(store, relay).handle(raw(order("o-1"), "e-1"))
    assert verdict is Verdict.ACK
    [saga] = await store.find("o-1")
    assert saga.status is SagaStatus.RUNNING
    assert [r.message.message_type for r in relay.rows] == ["inventory.reserve_stock.v1"]


async def test_shutdown_during_an_outage_requeues_the_message() -> None:
    store, relay = FlakyStore(outages=10_000), Relay()
    subject = coordinator(store, relay)
    handling = asyncio.create_task(subject.handle(raw(order("o-2"), "e-2")))
    await asyncio.sleep(0.3)
    subject.stop()
    assert await asyncio.wait_for(handling, 10) is Verdict.REQUEUE
    assert await store.find("o-2") == []


async def test_a_redelivered_message_is_acknowledged_and_changes_nothing() -> None:
    store, relay = FlakyStore(), Relay()
    subject = coordinator(store, relay)
    for _ in range(3):
        assert await subject.handle(raw(order("o-3"), "e-3")) is Verdict.ACK
    assert len(relay.rows) == 1 and store.commits == 1


async def test_a_concurrent_change_is_reloaded_and_decided_again() -> None:
    store, relay = FlakyStore(), Relay()
    subject = coordinator(store, relay)
    await subject.handle(raw(order("o-4"), "e-4"))
    [saga] = await store.find("o-4")
    command_id = relay.rows[0].message.message_id
    reply = StockReserved(order_id="o-4", reservation_id="r")
    # Between our load and our commit, another coordinator handles the same reply under
    # another delivery: our commit conflicts, we reload, and find the reply is now stale.
    other = coordinator(store, Relay())
    store.race = lambda: other.handle(raw(reply, "rep-a", "o-4", command_id))
    assert await subject.handle(raw(reply, "rep-b", "o-4", command_id)) is Verdict.ACK
    [after] = await store.find("o-4")
    assert after.version == saga.version + 1
    assert after.steps[0].status == "succeeded"
    history = await store.history(saga.saga_id)
    assert [h.outcome for h in history if h.message_id == "rep-b"] == ["ignored"]


async def test_bad_input_is_a_dead_letter_verdict_not_an_exception() -> None:
    store, relay = FlakyStore(), Relay()
    verdict = await coordinator(store, relay).handle(RawMessage(b"{}", {}, "application/json"))
    assert isinstance(verdict, DeadLetter) and verdict.reason == "not-a-cloudevent"


class HangingStore(FlakyStore):
    """Each load hangs until released, then fails: a query cut off by an outage."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def load(self, *args: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        raise StoreUnavailableError("timeout")


async def test_stopping_while_an_attempt_is_under_way_requeues_not_dead_letters() -> None:
    store = HangingStore()
    subject = coordinator(store, Relay())
    handling = asyncio.create_task(subject.handle(raw(order("o-6"), "e-6")))
    # the first attempt fails at once; wait for a retry to be under way, then stop
    await asyncio.wait_for(store.entered.wait(), 5)
    store.release.set()
    await asyncio.sleep(0)
    store.release.clear()
    store.entered.clear()
    await asyncio.wait_for(store.entered.wait(), 10)
    subject.stop()
    store.release.set()
    assert await asyncio.wait_for(handling, 10) is Verdict.REQUEUE


def test_a_saga_using_an_unregistered_message_is_refused_at_start() -> None:
    import pytest

    from bus_orchestrator.core.messages import ContractRegistry
    from bus_orchestrator.errors import DefinitionError
    from contracts import OrderPlaced

    partial = ContractRegistry([OrderPlaced])
    with pytest.raises(DefinitionError, match="does not hold"):
        Coordinator(
            all_sagas(),
            partial,
            FlakyStore(),
            Relay(),
            TOPOLOGY,
            lambda: NOW,
            source="urn:test",
            max_message_bytes=1000,
        )
