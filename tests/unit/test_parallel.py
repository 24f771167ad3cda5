"""Parallel groups, through ``decide``: the commands go out together, the saga moves on
when all have succeeded; a failure awaits the members still in flight, then compensates
what was done, newest first."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bus_orchestrator.core import Outcome, SagaStatus, StepStatus, TimerFired
from bus_orchestrator.core.definition import Parallel, RetryOn, Wait
from tests.unit.constructs import (
    T0,
    TIMEOUT,
    Busy,
    Data,
    Done,
    Driver,
    Halted,
    Paid,
    Refused,
    Shipped,
    Undone,
    saga,
    step,
)

S = "tests.constructs.do_%s.v1"
U = "tests.constructs.undo_%s.v1"
RETRY = RetryOn((Busy,), attempts=3, backoff=timedelta(seconds=2), jitter=0)


def _driver(**members: dict[str, object]) -> Driver:
    """``a``, then the group ``ab`` of ``b`` and ``c``."""
    group = Parallel[Data](
        "bc",
        [step("b", **members.get("b", {})), step("c", **members.get("c", {}))],  # type: ignore[arg-type]
    )
    driver = Driver(saga("grouped", [step("a"), group]))
    driver.start()
    driver.reply("a", Done())
    return driver


def test_the_group_goes_out_together_and_moves_on_when_all_succeed() -> None:
    driver = _driver()
    assert driver.types(driver.decisions[-1]) == [S % "b", S % "c"]
    saga_ = driver.saga
    assert [r.group for r in saga_.steps] == [None, "bc", "bc"]
    assert saga_.deadline == T0 + TIMEOUT
    driver.reply("c", Done())
    assert driver.saga.status is SagaStatus.RUNNING
    assert driver.statuses() == {"a": "succeeded", "b": "running", "c": "succeeded"}
    # the one still awaited is the saga's pending command
    assert driver.saga.pending_command_id == driver.record("b").command_id
    decision = driver.reply("b", Done())
    assert driver.saga.status is SagaStatus.COMPLETED
    assert driver.saga.data["seen"] == ["a", "c", "b"]
    assert driver.types(decision) == ["saga.grouped.completed.v1"]


@pytest.mark.parametrize(
    ("other", "undo"),
    [
        (Done(), [U % "c", U % "a"]),  # the other succeeded: undone too, newest first
        (Refused(), [U % "a"]),  # the other failed as well: only a
    ],
)
def test_one_fails_while_another_is_in_flight(other: object, undo: list[str]) -> None:
    driver = _driver()
    decision = driver.reply("b", Refused(reason="b says no"))
    # c is awaited: nothing is undone while its outcome is unknown
    assert driver.types(decision) == []
    assert driver.saga.status is SagaStatus.RUNNING
    assert driver.saga.cancel_reason == "step b failed: tests.constructs.refused.v1: b says no"
    assert driver.saga.pending_command_id == driver.record("c").command_id
    driver.reply("c", other)  # type: ignore[arg-type]
    compensations = []
    while driver.saga.status is SagaStatus.COMPENSATING:
        compensations += driver.types()
        name = driver.saga.steps[driver.saga.current or 0].name
        driver.reply(name, Undone(), compensation=True)
    compensations += [t for t in driver.types() if not t.startswith("saga.")]
    assert compensations == undo
    assert driver.saga.status is SagaStatus.COMPENSATED
    assert driver.saga.failure == "step b failed: tests.constructs.refused.v1: b says no"


def test_a_timeout_inside_a_group_awaits_the_rest_then_undoes_it_as_maybe_done() -> None:
    driver = _driver(c={"timeout": timedelta(seconds=60)})
    decision = driver.fire()  # b's 30s pass
    assert driver.types(decision) == []
    assert driver.statuses()["b"] is StepStatus.TIMED_OUT
    assert driver.saga.deadline == T0 + timedelta(seconds=60)
    driver.reply("c", Done())
    assert driver.types() == [U % "c"]
    driver.reply("c", Undone(), compensation=True)
    assert driver.types() == [U % "b"]  # timed out: maybe done, so undone
    driver.reply("b", Undone(), compensation=True)
    assert driver.types()[0] == U % "a"
    assert driver.saga.failure == "step b timed out"


def test_the_timer_fires_each_member_at_its_own_deadline() -> None:
    driver = _driver(b={"timeout": timedelta(seconds=10)}, c={"timeout": timedelta(seconds=40)})
    assert driver.saga.deadline == T0 + timedelta(seconds=10)
    driver.fire()
    assert driver.statuses() == {"a": "succeeded", "b": "timed_out", "c": "running"}
    assert driver.saga.deadline == T0 + timedelta(seconds=40)
    driver.fire()
    assert driver.record("c").error == "no reply to step c within 40s"
    # both timed out, so maybe done: undone, newest first
    assert driver.statuses()["c"] is StepStatus.COMPENSATING
    assert driver.types() == [U % "c"]


def test_an_early_timer_of_one_member_does_not_time_out_the_other() -> None:
    driver = _driver(b={"timeout": timedelta(seconds=10)}, c={"timeout": timedelta(seconds=40)})
    driver.reply("b", Done())
    assert driver.saga.deadline == T0 + timedelta(seconds=40)
    # the old deadline of b is stale now
    pending = driver.saga.pending_command_id or ""
    stale = driver.apply(TimerFired(driver.saga.saga_id, pending, T0 + timedelta(seconds=10)))
    assert stale.outcome is Outcome.IGNORED
    driver.reply("c", Done())
    assert driver.saga.status is SagaStatus.COMPLETED


def test_a_retry_inside_a_group() -> None:
    driver = _driver(b={"retry": RETRY})
    driver.reply("b", Busy())
    record = driver.record("b")
    assert (record.status, record.tries) == (StepStatus.RUNNING, 2)
    assert driver.saga.deadline == record.retry_at
    driver.reply("c", Done())
    assert driver.saga.status is SagaStatus.RUNNING  # b is still to retry
    retried = driver.fire()
    assert driver.types(retried) == [S % "b"]
    assert retried.send[0].message_id == driver.record("b").command_id
    driver.reply("b", Done())
    assert driver.saga.status is SagaStatus.COMPLETED


def test_a_failure_during_a_members_backoff_stops_the_retry() -> None:
    driver = _driver(b={"retry": RETRY})
    driver.reply("b", Busy())
    driver.reply("c", Refused())
    assert driver.statuses()["b"] is StepStatus.FAILED
    assert driver.record("b").retry_at is None
    assert driver.saga.status is SagaStatus.COMPENSATING
    assert driver.types() == [U % "a"]


def test_a_cancellation_while_the_group_is_in_flight_awaits_both() -> None:
    driver = _driver()
    decision = driver.event(Halted(key="k-1"))
    assert decision.outcome is Outcome.ADVANCED and driver.types(decision) == []
    assert driver.saga.cancel_reason == "halted"
    # a second cancellation while the group is awaited changes nothing, and says why
    again = driver.event(Halted(key="k-1"))
    assert again.outcome is Outcome.IGNORED
    assert again.note == "event tests.constructs.halted.v1: saga is already stopping (halted)"
    driver.reply("b", Done())
    assert driver.saga.status is SagaStatus.RUNNING
    driver.reply("c", Refused())
    assert driver.types() == [U % "b"]
    assert driver.saga.failure == "halted"
    # a second cancellation changes nothing
    assert driver.event(Halted(key="k-1")).outcome is Outcome.IGNORED


def test_a_reply_for_a_member_already_settled_is_stale() -> None:
    driver = _driver()
    driver.reply("b", Done())
    again = driver.reply("b", Refused())
    assert again.outcome is Outcome.IGNORED and "stale" in again.note
    assert driver.statuses()["b"] is StepStatus.SUCCEEDED


def test_members_due_at_the_same_time_time_out_together() -> None:
    driver = _driver()
    decision = driver.fire()
    assert driver.statuses() == {"a": "succeeded", "b": "timed_out", "c": "compensating"}
    assert driver.types(decision) == [U % "c"]
    driver.reply("c", Undone(), compensation=True)
    assert driver.types() == [U % "b"]


def test_a_group_whose_waits_were_all_met_early_moves_on_at_once() -> None:
    paid = Wait(name="paid", event=Paid, correlate=lambda e: e.key, timeout=TIMEOUT)
    shipped = Wait(name="shipped", event=Shipped, correlate=lambda e: e.key, timeout=TIMEOUT)
    driver = Driver(saga("early", [step("a"), Parallel[Data]("g", [paid, shipped]), step("b")]))
    driver.start()
    driver.event(Paid(key="k-1"))
    driver.event(Shipped(key="k-1"))
    decision = driver.reply("a", Done())
    assert driver.types(decision) == [S % "b"]
    assert driver.statuses() == {
        "a": "succeeded",
        "paid": "succeeded",
        "shipped": "succeeded",
        "b": "running",
    }
