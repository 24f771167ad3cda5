"""The coordinator over the in-memory store: outages, duplicates and races, without I/O.

The harness wires it (bus, store, codec); the stores here inject the faults."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bus_orchestrator.app import App
from bus_orchestrator.core.messages import ContractRegistry
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.errors import DefinitionError, StoreUnavailableError
from bus_orchestrator.ports import Change, Committed, PendingPublish
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.testing import SagaHarness
from bus_orchestrator.testing.bus import raw_message
from bus_orchestrator.transport.codec import RawMessage
from bus_orchestrator.transport.consumer import DeadLetter, Verdict
from contracts import OrderPlaced, StockReserved
from sagas import all_sagas
from tests.integration.harness import order

APP = App("order-to-cash", sagas=all_sagas())


class FlakyStore(InMemorySagaStore):
    """Fails the next ``outages`` calls, as a Postgres restart would."""

    def __init__(self, outages: int = 0) -> None:
        super().__init__()
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


def on(store: InMemorySagaStore) -> SagaHarness:
    return SagaHarness(APP, adapters=False, store=store)


def delivery(harness: SagaHarness, payload: Any, message_id: str, **attributes: Any) -> RawMessage:
    return raw_message(harness.message(payload, message_id=message_id, **attributes))


async def test_a_store_outage_holds_the_message_and_retries_it() -> None:
    store = FlakyStore(outages=3)
    harness = on(store)
    verdict = await harness.coordinator.handle(delivery(harness, order("o-1"), "e-1"))
    assert verdict is Verdict.ACK
    await harness.run_until_idle()
    assert (await harness.saga("o-1")).status is SagaStatus.RUNNING
    assert harness.command_types() == ["inventory.reserve_stock.v1"]


async def test_shutdown_during_an_outage_requeues_the_message() -> None:
    store = FlakyStore(outages=10_000)
    harness = on(store)
    handling = asyncio.create_task(
        harness.coordinator.handle(delivery(harness, order("o-2"), "e-2"))
    )
    await asyncio.sleep(0.3)
    harness.coordinator.stop()
    assert await asyncio.wait_for(handling, 10) is Verdict.REQUEUE
    assert await store.find("o-2") == []


async def test_a_redelivered_message_is_acknowledged_and_changes_nothing() -> None:
    store = FlakyStore()
    harness = on(store)
    for _ in range(3):
        await harness.publish(order("o-3"), message_id="e-3")
    await harness.run_until_idle()
    assert len(harness.commands) == 1 and store.commits == 1
    assert harness.dead_letters == []


async def test_a_concurrent_change_is_reloaded_and_decided_again() -> None:
    store = FlakyStore()
    harness, other = on(store), on(store)  # two coordinators on one store
    await harness.publish(order("o-4"))
    await harness.run_until_idle()
    saga = await harness.saga("o-4")
    command_id = harness.commands[0].message_id
    reply = StockReserved(order_id="o-4", reservation_id="r")
    # Between our load and our commit, another coordinator handles the same reply under
    # another delivery: our commit conflicts, we reload, and find the reply is now stale.
    store.race = lambda: other.coordinator.handle(
        delivery(other, reply, "rep-a", correlation_id="o-4", causation_id=command_id)
    )
    mine = delivery(harness, reply, "rep-b", correlation_id="o-4", causation_id=command_id)
    assert await harness.coordinator.handle(mine) is Verdict.ACK
    after = await harness.saga("o-4")
    assert after.version == saga.version + 1
    assert after.steps[0].status == "succeeded"
    history = await harness.history("o-4")
    assert [h.outcome for h in history if h.message_id == "rep-b"] == ["ignored"]


async def test_bad_input_is_a_dead_letter_verdict_not_an_exception() -> None:
    harness = on(FlakyStore())
    verdict = await harness.coordinator.handle(RawMessage(b"{}", {}, "application/json"))
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
    harness = on(store)
    handling = asyncio.create_task(
        harness.coordinator.handle(delivery(harness, order("o-6"), "e-6"))
    )
    # the first attempt fails at once; wait for a retry to be under way, then stop
    await asyncio.wait_for(store.entered.wait(), 5)
    store.release.set()
    await asyncio.sleep(0)
    store.release.clear()
    store.entered.clear()
    await asyncio.wait_for(store.entered.wait(), 10)
    harness.coordinator.stop()
    store.release.set()
    assert await asyncio.wait_for(handling, 10) is Verdict.REQUEUE


class NeverUsed:
    """A relay for a coordinator that must refuse to be built."""

    def submit(self, rows: list[PendingPublish]) -> None:
        raise AssertionError("nothing should be committed")


def test_a_saga_using_an_unregistered_message_is_refused_at_start() -> None:
    harness = on(FlakyStore())
    with pytest.raises(DefinitionError, match="does not hold"):
        Coordinator(
            all_sagas(),
            ContractRegistry([OrderPlaced]),
            harness.store,
            NeverUsed(),
            harness.topology,
            harness.clock,
            source="urn:test",
            max_message_bytes=1000,
        )
