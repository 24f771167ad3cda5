"""Entity locks in the harness: sagas needing one key wait in line and start in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pytest
from pydantic import BaseModel

from bus_orchestrator.app import App
from bus_orchestrator.core import (
    Command,
    Compensate,
    Event,
    Reaction,
    Reply,
    SagaDefinition,
    SagaStatus,
    Step,
)
from bus_orchestrator.core.decision import LOCKS_GRANTED_TYPE
from bus_orchestrator.core.lifecycle import cancel_event
from bus_orchestrator.ports import LockGrant, SagaLocks
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.testing import SagaHarness
from bus_orchestrator.testing.harness import SentCommand
from bus_orchestrator.views import saga_view


class OrderPlaced(Event):
    message_type: ClassVar[str] = "tests.locks.order_placed.v1"
    order_id: str
    customer_id: str


class OrderWithdrawn(Event):
    message_type: ClassVar[str] = "tests.locks.order_withdrawn.v1"
    order_id: str


class Bill(Command):
    message_type: ClassVar[str] = "tests.locks.bill.v1"
    order_id: str


class Billed(Reply):
    message_type: ClassVar[str] = "tests.locks.billed.v1"


class Order(BaseModel):
    order_id: str
    customer_id: str


class TransferAsked(Event):
    message_type: ClassVar[str] = "tests.locks.transfer_asked.v1"
    transfer_id: str
    source: str
    target: str


class Move(Command):
    message_type: ClassVar[str] = "tests.locks.move.v1"
    transfer_id: str


class Moved(Reply):
    message_type: ClassVar[str] = "tests.locks.moved.v1"


class Transfer(BaseModel):
    transfer_id: str
    source: str
    target: str


BILLING = SagaDefinition(
    name="billing",
    data_model=Order,
    started_by=OrderPlaced,
    correlate=lambda e: e.order_id,
    initial_data=lambda e: Order(order_id=e.order_id, customer_id=e.customer_id),
    steps=(
        Step(
            name="bill",
            command=lambda d: Bill(order_id=d.order_id),
            sends=Bill,
            succeeds_on=(Billed,),
        ),
    ),
    reactions=(
        Reaction(
            OrderWithdrawn,
            correlate=lambda e: e.order_id,
            react=lambda d, e: Compensate("withdrawn"),
        ),
    ),
    locks=("customer:{customer_id}",),
)

TRANSFER = SagaDefinition(
    name="transfer",
    data_model=Transfer,
    started_by=TransferAsked,
    correlate=lambda e: e.transfer_id,
    initial_data=lambda e: Transfer(transfer_id=e.transfer_id, source=e.source, target=e.target),
    steps=(
        Step(
            name="move",
            command=lambda d: Move(transfer_id=d.transfer_id),
            sends=Move,
            succeeds_on=(Moved,),
        ),
    ),
    locks=("account:{source}", "account:{target}"),
)


def _harness(store: InMemorySagaStore | None = None) -> SagaHarness:
    harness = SagaHarness(App("locks", sagas=[BILLING, TRANSFER]), store=store)
    harness.reply(Bill)  # left unanswered: each saga holds its key until the test answers
    harness.reply(Move)
    return harness


def _sent(harness: SagaHarness, correlation_id: str) -> SentCommand:
    """The one command the saga ``correlation_id`` sent."""
    (command,) = [c for c in harness.commands if c.correlation_id == correlation_id]
    return command


def _started(harness: SagaHarness) -> list[str | None]:
    """The sagas whose first command went out, in the order they went."""
    return [c.correlation_id for c in harness.commands]


async def _place(harness: SagaHarness, correlation_id: str) -> int:
    """The saga's place in the line for customer c-1's key."""
    locks = await harness.store.saga_locks((await harness.saga(correlation_id)).saga_id)
    (awaited,) = locks.awaited
    assert awaited.key == "customer:c-1" and not locks.held
    return awaited.place


async def test_sagas_on_one_key_wait_in_line_and_start_as_each_holder_ends() -> None:
    harness = _harness()
    for order in ("o-1", "o-2", "o-3"):
        await harness.publish(OrderPlaced(order_id=order, customer_id="c-1"))
    await harness.run_until_idle()

    first = await harness.saga("o-1")
    assert _started(harness) == ["o-1"]
    assert not first.waiting_for_locks and first.locks == ("customer:c-1",)
    held = await harness.store.saga_locks(first.saga_id)
    assert [h.key for h in held.held] == ["customer:c-1"] and not held.awaited
    for order, place in (("o-2", 1), ("o-3", 2)):
        waiting = await harness.saga(order)
        assert waiting.waiting_for_locks and waiting.steps == ()
        assert await _place(harness, order) == place
        locks = await harness.store.saga_locks(waiting.saga_id)
        assert locks.awaited[0].holder == first.saga_id and not locks.held

    await harness.answer(_sent(harness, "o-1"), Billed())
    await harness.run_until_idle()
    assert (await harness.saga("o-1")).status is SagaStatus.COMPLETED
    assert _started(harness) == ["o-1", "o-2"]
    assert await _place(harness, "o-3") == 1

    await harness.answer(_sent(harness, "o-2"), Billed())
    await harness.run_until_idle()
    assert _started(harness) == ["o-1", "o-2", "o-3"]
    await harness.answer(_sent(harness, "o-3"), Billed())
    await harness.run_until_idle()
    for order in ("o-1", "o-2", "o-3"):
        saga = await harness.saga(order)
        assert saga.status is SagaStatus.COMPLETED
        assert await harness.store.saga_locks(saga.saga_id) == SagaLocks()
    history = await harness.history("o-2")
    assert [e.message_type for e in history].count(LOCKS_GRANTED_TYPE) == 1


async def test_sagas_on_different_keys_do_not_wait_for_each_other() -> None:
    harness = _harness()
    await harness.publish(OrderPlaced(order_id="o-1", customer_id="c-1"))
    await harness.publish(OrderPlaced(order_id="o-2", customer_id="c-2"))
    await harness.run_until_idle()
    assert _started(harness) == ["o-1", "o-2"]
    for order in ("o-1", "o-2"):
        assert not (await harness.saga(order)).waiting_for_locks


async def test_a_waiting_saga_cancelled_leaves_the_line_without_blocking_others() -> None:
    harness = _harness()
    for order in ("o-1", "o-2", "o-3"):
        await harness.publish(OrderPlaced(order_id=order, customer_id="c-1"))
    await harness.run_until_idle()

    cancel = cancel_event("billing")(correlation_id="o-2", reason="customer asked")
    await harness.publish(cancel)
    await harness.run_until_idle()
    cancelled = await harness.saga("o-2")
    assert cancelled.status is SagaStatus.COMPENSATED and cancelled.steps == ()
    assert cancelled.failure == "customer asked"
    assert await _place(harness, "o-3") == 1  # moved up: o-2 left the line

    await harness.answer(_sent(harness, "o-1"), Billed())
    await harness.run_until_idle()
    assert _started(harness) == ["o-1", "o-3"]
    granted = [e for e in await harness.history("o-2") if e.message_type == LOCKS_GRANTED_TYPE]
    assert granted == []


async def test_a_waiting_saga_compensated_by_a_reaction_leaves_the_line() -> None:
    harness = _harness()
    for order in ("o-1", "o-2", "o-3"):
        await harness.publish(OrderPlaced(order_id=order, customer_id="c-1"))
    await harness.run_until_idle()

    await harness.publish(OrderWithdrawn(order_id="o-2"))
    await harness.publish(OrderWithdrawn(order_id="o-1"))  # the holder: undone once answered
    await harness.run_until_idle()
    assert (await harness.saga("o-2")).status is SagaStatus.COMPENSATED
    assert _started(harness) == ["o-1"]  # o-1 still holds the key while its step is out

    await harness.answer(_sent(harness, "o-1"), Billed())
    await harness.run_until_idle()
    assert (await harness.saga("o-1")).status is SagaStatus.COMPENSATED
    assert _started(harness) == ["o-1", "o-3"]


async def test_a_saga_takes_all_its_keys_at_once_and_never_jumps_the_line() -> None:
    harness = _harness()
    for transfer, source, target in (("t-1", "a", "b"), ("t-2", "b", "c"), ("t-3", "c", "d")):
        await harness.publish(TransferAsked(transfer_id=transfer, source=source, target=target))
    await harness.run_until_idle()
    # t-3 could take c and d, but t-2 waits for c ahead of it: it waits too.
    assert _started(harness) == ["t-1"]
    t3 = await harness.store.saga_locks((await harness.saga("t-3")).saga_id)
    assert [(a.key, a.place, a.holder) for a in t3.awaited] == [
        ("account:c", 2, None),
        ("account:d", 1, None),
    ]

    await harness.answer(_sent(harness, "t-1"), Moved())
    await harness.run_until_idle()
    assert _started(harness) == ["t-1", "t-2"]
    await harness.answer(_sent(harness, "t-2"), Moved())
    await harness.run_until_idle()
    assert _started(harness) == ["t-1", "t-2", "t-3"]


class CrashAfterGrant(InMemorySagaStore):
    """Grants, then fails as a coordinator would that died before telling the saga."""

    crashes = 0

    async def grant_locks(self, keys: Sequence[str]) -> list[LockGrant]:
        granted = await super().grant_locks(keys)
        if granted and not self.crashes:
            self.crashes += 1
            raise ConnectionResetError("the coordinator died here")
        return granted


class CrashBeforeGrant(InMemorySagaStore):
    """Never grants after a commit: only the lock sweep does (it asks for grantable keys)."""

    sweeps = 0

    async def grantable_keys(self, limit: int) -> list[str]:
        self.sweeps += 1
        return await super().grantable_keys(limit)

    async def grant_locks(self, keys: Sequence[str]) -> list[LockGrant]:
        if not self.sweeps:
            raise ConnectionResetError("the coordinator died here")
        return await super().grant_locks(keys)


async def test_the_lock_sweep_tells_a_saga_granted_by_a_coordinator_that_died() -> None:
    store = CrashAfterGrant()
    harness = _harness(store)
    await harness.publish(OrderPlaced(order_id="o-1", customer_id="c-1"))
    await harness.run_until_idle()
    assert store.crashes == 1
    assert _started(harness) == ["o-1"]
    assert not (await harness.saga("o-1")).waiting_for_locks


async def test_the_lock_sweep_grants_what_a_crash_before_the_grant_left() -> None:
    store = CrashBeforeGrant()
    harness = _harness(store)
    await harness.publish(OrderPlaced(order_id="o-1", customer_id="c-1"))
    await harness.run_until_idle()
    assert store.sweeps >= 1
    assert _started(harness) == ["o-1"]


async def test_sagas_show_prints_the_locks_held_and_the_place_in_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bus_orchestrator import cli

    harness = _harness()
    for order in ("o-1", "o-2", "o-3"):
        await harness.publish(OrderPlaced(order_id=order, customer_id="c-1"))
    await harness.run_until_idle()
    holder, last = await harness.saga("o-1"), await harness.saga("o-3")
    views = [
        saga_view(saga, locks=await harness.store.saga_locks(saga.saga_id))
        for saga in (holder, last)
    ]
    assert views[0]["locks"]["held"] == [
        {"key": "customer:c-1", "since": harness.clock.now.isoformat()}
    ]
    assert views[1]["locks"]["waiting"] is True
    assert [(a["key"], a["place"], a["holder"]) for a in views[1]["locks"]["awaited"]] == [
        ("customer:c-1", 2, holder.saga_id)
    ]
    assert "locks" not in saga_view(holder)  # shown only when asked for

    for view in views:
        cli._print_saga(view)
    text = capsys.readouterr().out
    assert f"holds lock customer:c-1 since {harness.clock.now.isoformat()}" in text
    assert f"waits for lock customer:c-1: number 2 in line, held by saga {holder.saga_id}" in text
