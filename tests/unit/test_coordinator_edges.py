"""The coordinator at the edges of the message path, over the in-memory store: events
that overtake their saga, ids reused by other sources, commands over the size limit, and
saga code that raises."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel

from bus_orchestrator.core import (
    Command,
    ContractRegistry,
    Event,
    Reaction,
    Reply,
    SagaDefinition,
    SagaStatus,
    Step,
)
from bus_orchestrator.ports import ByCorrelation, Loaded, SagaKey
from bus_orchestrator.runtime.coordinator import Coordinator
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.transport.codec import RawMessage, encode
from bus_orchestrator.transport.consumer import Verdict
from contracts import REGISTRY, OrderCancelled, StockReserved
from sagas import all_sagas
from tests.integration.harness import order
from tests.unit.test_coordinator_core import TOPOLOGY, Relay

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def coordinator(
    store: InMemorySagaStore,
    relay: Relay,
    clock: Clock | None = None,
    *,
    definitions: Any = None,
    registry: ContractRegistry = REGISTRY,
    max_bytes: int = 100_000,
    park_ttl: timedelta = timedelta(minutes=5),
) -> Coordinator:
    return Coordinator(
        all_sagas() if definitions is None else definitions,
        registry,
        store,
        relay,
        TOPOLOGY,
        clock or Clock(),
        source="urn:test",
        max_message_bytes=max_bytes,
        park_ttl=park_ttl,
    )


def raw(
    payload: Any,
    message_id: str,
    correlation: str | None = None,
    causation: str | None = None,
    source: str = "urn:test",
) -> RawMessage:
    out = encode(
        message_id=message_id,
        payload=payload,
        exchange=TOPOLOGY.exchange_for(payload.kind),
        source=source,
        time=T0,
        correlation_id=correlation,
        causation_id=causation,
    )
    return RawMessage(
        out.body,
        out.headers,
        out.content_type,
        exchange=out.exchange,
        routing_key=out.routing_key,
    )


def sent(relay: Relay) -> list[str]:
    return [row.message.message_type for row in relay.rows]


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
    store, relay = SlowFirstLoad(), Relay()
    subject = coordinator(store, relay)
    # delivered in this order, handled concurrently (as prefetched deliveries are)
    placed = asyncio.create_task(subject.handle(raw(order("o-1"), "e-1")))
    cancelled = asyncio.create_task(subject.handle(raw(OrderCancelled(order_id="o-1"), "e-2")))
    assert await asyncio.gather(placed, cancelled) == [Verdict.ACK, Verdict.ACK]
    [saga] = await store.find("o-1")
    assert saga.cancel_reason is not None  # waits for the reservation, then compensates
    notes = [h.outcome for h in await store.history(saga.saga_id) if h.direction == "in"]
    assert notes == ["started", "advanced"]
    assert len(subject._order) == 0  # no lock outlives its messages


async def test_an_event_before_its_saga_is_parked_then_applied_when_it_starts() -> None:
    store, relay = InMemorySagaStore(), Relay()
    subject = coordinator(store, relay)
    assert await subject.handle(raw(OrderCancelled(order_id="o-2"), "e-1")) is Verdict.ACK
    assert await store.find("o-2") == [] and relay.rows == []
    # a redelivery of the parked event is recognised, not parked twice
    assert await subject.handle(raw(OrderCancelled(order_id="o-2"), "e-1")) is Verdict.ACK
    assert len(await store.parked("order_to_cash", "o-2")) == 1

    assert await subject.handle(raw(order("o-2"), "e-2")) is Verdict.ACK
    [saga] = await store.find("o-2")
    assert saga.cancel_reason is not None
    assert await store.parked("order_to_cash", "o-2") == []
    history = [(h.message_id, h.outcome) for h in await store.history(saga.saga_id)]
    assert history[0] == ("e-1", "parked")
    assert [h for h in history if h[0] == "e-1"][-1] == ("e-1", "advanced")
    # the reservation comes back: the saga undoes it instead of charging
    reply = StockReserved(order_id="o-2", reservation_id="r-1")
    await subject.handle(raw(reply, "r-1", "o-2", saga.pending_command_id, "urn:inventory"))
    assert sent(relay) == ["inventory.reserve_stock.v1", "inventory.release_stock.v1"]


class ParkedFlagLost(InMemorySagaStore):
    """The start's load misses the parked event: it was parked by another coordinator
    between that load and the start's commit."""

    async def load(self, consumer: str, message_id: str, key: SagaKey, source: str = "") -> Loaded:
        loaded = await super().load(consumer, message_id, key, source)
        return Loaded(loaded.seen, loaded.instance, parked=False)


async def test_the_sweep_applies_what_the_message_path_left_parked() -> None:
    store, relay = ParkedFlagLost(), Relay()
    subject = coordinator(store, relay)
    await subject.handle(raw(OrderCancelled(order_id="o-3"), "e-1"))
    await subject.handle(raw(order("o-3"), "e-2"))
    [saga] = await store.find("o-3")
    assert saga.cancel_reason is None and len(await store.parked("order_to_cash", "o-3")) == 1
    assert await subject.sweep_parked() == 1
    [saga] = await store.find("o-3")
    assert saga.cancel_reason is not None
    assert await store.parked("order_to_cash", "o-3") == []
    assert await subject.sweep_parked() == 0


async def test_a_parked_event_whose_saga_never_starts_is_dead_lettered_with_the_reason() -> None:
    clock = Clock()
    store, relay = InMemorySagaStore(clock=clock), Relay()
    subject = coordinator(store, relay, clock, park_ttl=timedelta(seconds=30))
    await subject.handle(raw(OrderCancelled(order_id="o-4"), "e-1"))
    assert await subject.sweep_parked() == 0  # not yet
    clock.now += timedelta(seconds=31)
    assert await subject.sweep_parked() == 1
    [dead] = [row.message for row in relay.rows]
    assert dead.exchange == TOPOLOGY.dead
    assert dead.routing_key == "orders.order_cancelled.v1"
    assert dead.headers["x-dead-reason"] == "expired"
    assert "no order_to_cash saga for 'o-4'" in dead.headers["x-dead-detail"]
    assert dead.headers["ce-id"] == "e-1"  # the original message, as it came
    assert await store.parked("order_to_cash", "o-4") == []
    history = await store.history(saga_id_of("o-4"))
    assert [h.outcome for h in history] == ["parked", "dead-lettered"]
    # an order arriving later starts its saga as usual
    await subject.handle(raw(order("o-4"), "e-2"))
    [saga] = await store.find("o-4")
    assert saga.status is SagaStatus.RUNNING and saga.cancel_reason is None


def saga_id_of(order_id: str) -> str:
    from bus_orchestrator.core import saga_id_for

    return saga_id_for("order_to_cash", order_id)


# -- duplicates are per source ---------------------------------------------------------


async def test_the_same_id_from_two_sources_is_two_messages() -> None:
    store, relay = InMemorySagaStore(), Relay()
    subject = coordinator(store, relay)
    await subject.handle(raw(order("web-1"), "42", source="urn:shop:web"))
    await subject.handle(raw(order("mobile-1"), "42", source="urn:shop:mobile"))
    assert {s.correlation_id for s in await store.list_sagas()} == {"web-1", "mobile-1"}
    # a cancel that reuses its order's id, from another source, is applied
    cancel = OrderCancelled(order_id="web-1")
    await subject.handle(raw(cancel, "42", source="urn:shop:backoffice"))
    [saga] = await store.find("web-1")
    assert saga.cancel_reason is not None
    # the same id from the same source again is a duplicate
    await subject.handle(raw(order("web-1"), "42", source="urn:shop:web"))
    assert len(relay.rows) == 2
    assert await store.load("order_to_cash", "42", ByCorrelation("x", "y"), "urn:shop:web")


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


ECHO_REGISTRY = ContractRegistry([Asked, Poked, Echo, Echoed, Undo, Undone])


async def test_a_command_over_the_size_limit_fails_its_step_at_once() -> None:
    store, relay = InMemorySagaStore(), Relay()
    subject = coordinator(
        store, relay, definitions=[echo_saga(10)], registry=ECHO_REGISTRY, max_bytes=2000
    )
    await subject.handle(raw(Asked(key="k", text="ü" * 300), "a-1"))
    [first] = [row.message for row in relay.rows]
    # UTF-8 as it is: 600 bytes of text, not 1800 of \\u escapes
    assert len(first.body) < 700 and "ü".encode() in first.body
    [saga] = await store.find("k")
    await subject.handle(raw(Echoed(), "r-1", "k", saga.pending_command_id, "urn:echo"))
    # the second command would be 6,000 bytes: the step fails, the first is undone
    assert [row.message.message_type for row in relay.rows] == ["tests.echo.v1", "tests.undo.v1"]
    [saga] = await store.find("k")
    assert saga.status is SagaStatus.COMPENSATING
    assert saga.steps[1].status == "failed"
    assert saga.failure is not None and "over the limit of 2000" in saga.failure


async def test_saga_code_that_raises_fails_the_saga_and_keeps_the_message() -> None:
    store, relay = InMemorySagaStore(), Relay()
    subject = coordinator(store, relay, definitions=[echo_saga(1)], registry=ECHO_REGISTRY)
    await subject.handle(raw(Asked(key="k", text="hi"), "a-1"))
    verdict = await subject.handle(raw(Poked(key="k"), "p-1"))
    assert verdict is Verdict.ACK  # not dead-lettered: recorded with the saga
    [saga] = await store.find("k")
    assert saga.status is SagaStatus.FAILED
    assert saga.failure == (
        "saga code raised on tests.poked.v1: RuntimeError: cannot handle a poke of k"
    )
    history = await store.history(saga.saga_id)
    assert [(h.message_id, h.outcome) for h in history if h.direction == "in"] == [
        ("a-1", "started"),
        ("p-1", "failed"),
    ]
