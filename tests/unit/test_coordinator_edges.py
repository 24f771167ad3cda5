"""The coordinator at the edges of the message path, over the in-memory store: events
that overtake their saga, ids reused by other sources, commands over the size limit, and
saga code that raises."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import BaseModel

from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import (
    Command,
    Event,
    Reaction,
    Reply,
    SagaDefinition,
    SagaStatus,
    Step,
)
from bus_orchestrator.ports import ByCorrelation, Loaded, SagaKey
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.testing import SagaHarness
from bus_orchestrator.testing.bus import raw_message
from bus_orchestrator.transport.codec import RawMessage
from bus_orchestrator.transport.consumer import Verdict
from contracts import OrderCancelled, StockReserved
from sagas import all_sagas
from tests.integration.harness import order

APP = App("order-to-cash", sagas=all_sagas())


def on(store: InMemorySagaStore | None = None, app: App = APP, **settings: Any) -> SagaHarness:
    return SagaHarness(app, adapters=False, store=store, settings=Settings(**settings))


def delivery(harness: SagaHarness, payload: Any, message_id: str, **attributes: Any) -> RawMessage:
    return raw_message(harness.message(payload, message_id=message_id, **attributes))


# -- ordering and the park ----------------------------------------------------------------


class SlowFirstLoad(InMemorySagaStore):
    """The first load waits, as a slow query would: later deliveries could overtake it."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    async def load(self, consumer: str, message_id: str, key: SagaKey, source: str = "") -> Loaded:
        self.loads += 1
        await asyncio.sleep(0.05 if self.loads == 1 else 0)
        return await super().load(consumer, message_id, key, source)


async def test_a_cancel_right_behind_its_order_is_applied_after_it() -> None:
    harness = on(SlowFirstLoad())
    subject = harness.coordinator
    # delivered in this order, handled concurrently (as prefetched deliveries are)
    placed = asyncio.create_task(subject.handle(delivery(harness, order("o-1"), "e-1")))
    cancel = delivery(harness, OrderCancelled(order_id="o-1"), "e-2")
    cancelled = asyncio.create_task(subject.handle(cancel))
    assert await asyncio.gather(placed, cancelled) == [Verdict.ACK, Verdict.ACK]
    saga = await harness.saga("o-1")
    assert saga.cancel_reason is not None  # waits for the reservation, then compensates
    notes = [h.outcome for h in await harness.history("o-1") if h.direction == "in"]
    assert notes == ["started", "advanced"]
    assert len(subject._order) == 0  # no lock outlives its messages


async def test_an_event_before_its_saga_is_parked_then_applied_when_it_starts() -> None:
    harness = on()
    await harness.publish(OrderCancelled(order_id="o-2"), message_id="e-1")
    await harness.run_until_idle()
    assert await harness.store.find("o-2") == [] and harness.commands == []
    # a redelivery of the parked event is recognised, not parked twice
    await harness.publish(OrderCancelled(order_id="o-2"), message_id="e-1")
    await harness.run_until_idle()
    assert len(await harness.store.parked("order_to_cash", "o-2")) == 1

    await harness.publish(order("o-2"), message_id="e-2")
    await harness.run_until_idle()
    saga = await harness.saga("o-2")
    assert saga.cancel_reason is not None
    assert await harness.store.parked("order_to_cash", "o-2") == []
    history = [(h.message_id, h.outcome) for h in await harness.history("o-2")]
    assert history[0] == ("e-1", "parked")
    assert [h for h in history if h[0] == "e-1"][-1] == ("e-1", "advanced")
    # the reservation comes back: the saga undoes it instead of charging
    await harness.answer(harness.commands[0], StockReserved(order_id="o-2", reservation_id="r-1"))
    await harness.run_until_idle()
    assert harness.command_types() == ["inventory.reserve_stock.v1", "inventory.release_stock.v1"]
    assert harness.dead_letters == []


class ParkedFlagLost(InMemorySagaStore):
    """The start's load misses the parked event: it was parked by another coordinator
    between that load and the start's commit."""

    async def load(self, consumer: str, message_id: str, key: SagaKey, source: str = "") -> Loaded:
        loaded = await super().load(consumer, message_id, key, source)
        return Loaded(loaded.seen, loaded.instance, parked=False)


async def test_the_sweep_applies_what_the_message_path_left_parked() -> None:
    harness = on(ParkedFlagLost())
    subject, store = harness.coordinator, harness.store
    await subject.handle(delivery(harness, OrderCancelled(order_id="o-3"), "e-1"))
    await subject.handle(delivery(harness, order("o-3"), "e-2"))
    saga = await harness.saga("o-3")
    assert saga.cancel_reason is None and len(await store.parked("order_to_cash", "o-3")) == 1
    assert await subject.sweep_parked() == 1
    saga = await harness.saga("o-3")
    assert saga.cancel_reason is not None
    assert await store.parked("order_to_cash", "o-3") == []
    assert await subject.sweep_parked() == 0


async def test_a_parked_event_whose_saga_never_starts_is_dead_lettered_with_the_reason() -> None:
    harness = on(park_ttl_seconds=30)
    await harness.publish(OrderCancelled(order_id="o-4"), message_id="e-1")
    await harness.advance(timedelta(seconds=29))
    assert harness.dead_letters == []  # not yet
    await harness.advance(timedelta(seconds=2))
    [dead] = harness.dead_letters
    assert (dead.reason, dead.by) == ("expired", "coordinator")
    assert "no order_to_cash saga for 'o-4'" in dead.detail
    assert dead.message.exchange == harness.topology.dead
    assert dead.message.routing_key == "orders.order_cancelled.v1"
    assert dead.message.headers["ce-id"] == "e-1"  # the original message, as it came
    assert await harness.store.parked("order_to_cash", "o-4") == []
    assert [h.outcome for h in await harness.history("o-4")] == ["parked", "dead-lettered"]
    # an order arriving later starts its saga as usual
    await harness.publish(order("o-4"), message_id="e-2")
    await harness.run_until_idle()
    saga = await harness.saga("o-4")
    assert saga.status is SagaStatus.RUNNING and saga.cancel_reason is None


# -- duplicates are per source ---------------------------------------------------------


async def test_the_same_id_from_two_sources_is_two_messages() -> None:
    harness = on()
    await harness.publish(order("web-1"), message_id="42", source="urn:shop:web")
    await harness.publish(order("mobile-1"), message_id="42", source="urn:shop:mobile")
    await harness.run_until_idle()
    assert {s.correlation_id for s in await harness.store.list_sagas()} == {"web-1", "mobile-1"}
    # a cancel that reuses its order's id, from another source, is applied
    cancel = OrderCancelled(order_id="web-1")
    await harness.publish(cancel, message_id="42", source="urn:shop:backoffice")
    await harness.run_until_idle()
    assert (await harness.saga("web-1")).cancel_reason is not None
    # the same id from the same source again is a duplicate
    await harness.publish(order("web-1"), message_id="42", source="urn:shop:web")
    await harness.run_until_idle()
    assert len(harness.commands) == 2
    seen = await harness.store.load("order_to_cash", "42", ByCorrelation("x", "y"), "urn:shop:web")
    assert seen.seen


# -- a custom saga: commands over the limit, code that raises -------------------------------


class Asked(Event):
    message_type: ClassVar[str] = "tests.asked.v1"
    key: str
    text: str


class Poked(Event):
    message_type: ClassVar[str] = "tests.poked.v1"
    key: str


class Echo(Command):
    message_type: ClassVar[str] = "tests.echo.v1"
    text: str


class Echoed(Reply):
    message_type: ClassVar[str] = "tests.echoed.v1"


class Undo(Command):
    message_type: ClassVar[str] = "tests.undo.v1"


class Undone(Reply):
    message_type: ClassVar[str] = "tests.undone.v1"


class Data(BaseModel):
    key: str
    text: str


def poke(data: Data, event: Poked) -> Data:
    raise RuntimeError(f"cannot handle a poke of {event.key}")


def echo_saga(repeat: int) -> SagaDefinition[Data, Asked]:
    return SagaDefinition(
        name="echo",
        data_model=Data,
        started_by=Asked,
        correlate=lambda e: e.key,
        initial_data=lambda e: Data(key=e.key, text=e.text),
        steps=(
            Step(
                name="first",
                command=lambda d: Echo(text=d.text),
                succeeds_on=(Echoed,),
                compensation=lambda d: Undo(),
                compensated_on=(Undone,),
            ),
            Step(
                name="second", command=lambda d: Echo(text=d.text * repeat), succeeds_on=(Echoed,)
            ),
        ),
        reactions=(Reaction(Poked, correlate=lambda e: e.key, react=poke),),
    )


def echo_app(repeat: int) -> App:
    # The steps build their commands without declaring them (no sends=): the app does.
    return App("echo", sagas=[echo_saga(repeat)], contracts=[Echo, Echoed, Undo, Undone])


async def test_a_command_over_the_size_limit_fails_its_step_at_once() -> None:
    harness = on(app=echo_app(10), max_message_bytes=2000)
    await harness.publish(Asked(key="k", text="ü" * 300), message_id="a-1")
    await harness.run_until_idle()
    [first] = [m for m in harness.bus.published if m.exchange == harness.topology.commands]
    # UTF-8 as it is: 600 bytes of text, not 1800 of \\u escapes
    assert len(first.body) < 700 and "ü".encode() in first.body
    await harness.answer(harness.commands[0], Echoed())
    await harness.run_until_idle()
    # the second command would be 6,000 bytes: the step fails, the first is undone
    assert harness.command_types() == ["tests.echo.v1", "tests.undo.v1"]
    saga = await harness.saga("k")
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.steps[1].status == "failed"
    assert saga.failure is not None and "over the limit of 2000" in saga.failure


async def test_saga_code_that_raises_fails_the_saga_and_keeps_the_message() -> None:
    harness = on(app=echo_app(1))
    await harness.publish(Asked(key="k", text="hi"), message_id="a-1")
    await harness.publish(Poked(key="k"), message_id="p-1")
    await harness.run_until_idle()
    assert harness.dead_letters == []  # not dead-lettered: recorded with the saga
    saga = await harness.saga("k")
    assert saga.status is SagaStatus.FAILED
    assert saga.failure == (
        "saga code raised on tests.poked.v1: RuntimeError: cannot handle a poke of k"
    )
    history = await harness.history("k")
    assert [(h.message_id, h.outcome) for h in history if h.direction == "in"] == [
        ("a-1", "started"),
        ("p-1", "failed"),
    ]
