"""``Child`` steps, through ``decide``: the child's start event goes out, its end event
settles the step; compensating the parent while the child runs asks the child to cancel,
and the parent waits for the child's end."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import pytest

from bus_orchestrator.core import Event, Outcome, SagaStatus, StepStatus
from bus_orchestrator.core.definition import Child, Parallel, Stage
from bus_orchestrator.core.lifecycle import CancelRequested
from tests.unit.constructs import (
    KEY,
    T0,
    Data,
    Done,
    Driver,
    Halted,
    Refused,
    UndoC,
    Undone,
    saga,
    step,
)

CHILD_TIMEOUT = timedelta(minutes=5)
UNDO_A = "tests.constructs.undo_a.v1"
UNDO_C = "tests.constructs.undo_c.v1"
CANCEL = "saga.kid.cancel_requested.v1"


class KidBegun(Event):
    message_type: ClassVar[str] = "tests.constructs.kid_begun.v1"
    key: str


def _child(undo: bool = True) -> Child[Data]:
    return Child(
        name="kid",
        saga="kid",
        start=lambda d: KidBegun(key=d.key),
        starts=KidBegun,
        correlation=lambda d: d.key,
        timeout=CHILD_TIMEOUT,
        compensation=(lambda d: UndoC(key=d.key)) if undo else None,
        compensated_on=(Undone,) if undo else (),
    )


def _driver(undo: bool = True, grouped: bool = False) -> Driver:
    """``a``, the child ``kid`` (with ``b`` in a group, when ``grouped``), then ``b``/``c``."""
    stages: list[Stage[Data]]
    if grouped:
        stages = [step("a"), Parallel[Data]("kid_and_b", [_child(undo), step("b")]), step("c")]
    else:
        stages = [step("a"), _child(undo), step("b")]
    driver = Driver(saga("parent", stages))
    driver.start()
    driver.reply("a", Done())
    return driver


def _compensate_all(driver: Driver) -> list[str]:
    """Confirm each compensation as it goes out; the types sent, end event left out."""
    sent = [t for t in driver.types() if not t.startswith("saga.parent.")]
    while driver.saga.status is SagaStatus.COMPENSATING:
        driver.reply(driver.saga.steps[driver.saga.current or 0].name, Undone(), compensation=True)
        sent += [t for t in driver.types() if not t.startswith("saga.parent.")]
    return sent


def test_the_child_start_event_carries_the_parents_correlation() -> None:
    driver = _driver()
    out = driver.decisions[-1].send
    assert [o.payload.message_type for o in out] == [KidBegun.message_type]
    record = driver.record("kid")
    assert out[0].message_id == record.command_id
    assert out[0].correlation_id == KEY
    assert (record.status, record.command_type) == (StepStatus.RUNNING, KidBegun.message_type)
    assert driver.saga.deadline == T0 + CHILD_TIMEOUT


def test_a_child_that_completes_settles_the_step() -> None:
    driver = _driver()
    decision = driver.child_ended("kid", "kid", "completed")
    assert driver.statuses()["kid"] is StepStatus.SUCCEEDED
    assert driver.types(decision) == ["tests.constructs.do_b.v1"]


@pytest.mark.parametrize("status", ["compensated", "failed"])
def test_a_child_that_did_not_complete_fails_the_step(status: str) -> None:
    driver = _driver()
    driver.child_ended("kid", "kid", status, reason="out of stock")
    assert driver.statuses()["kid"] is StepStatus.FAILED
    expected = f"step kid failed: child saga kid {status}: out of stock"
    assert driver.saga.failure == expected
    # the child undid itself: only a is compensated
    assert _compensate_all(driver) == [UNDO_A]
    assert driver.saga.status is SagaStatus.COMPENSATED


def test_the_end_of_another_saga_type_or_step_is_ignored() -> None:
    driver = _driver()
    other_type = driver.child_ended("kid", "stranger", "completed")
    assert other_type.outcome is Outcome.IGNORED
    driver.child_ended("kid", "kid", "completed")
    again = driver.child_ended("kid", "kid", "failed")  # a second end: the step is settled
    assert again.outcome is Outcome.IGNORED
    assert driver.statuses()["kid"] is StepStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("child_ends", "undone"),
    [
        ("compensated", [UNDO_A]),  # it cancelled: undid itself
        ("completed", [UNDO_C, UNDO_A]),  # it finished first: the Child's compensation
    ],
)
def test_a_parent_cancelled_while_the_child_runs(child_ends: str, undone: list[str]) -> None:
    driver = _driver()
    decision = driver.event(Halted(key=KEY))
    assert driver.types(decision) == [CANCEL]
    cancel = decision.send[0].payload
    assert isinstance(cancel, CancelRequested)
    assert (cancel.correlation_id, cancel.reason) == (KEY, "halted")
    assert driver.record("kid").cancel_requested_at == T0
    # the parent waits for the child's end before it compensates anything
    assert driver.saga.status is SagaStatus.RUNNING
    assert driver.statuses()["kid"] is StepStatus.RUNNING
    driver.child_ended("kid", "kid", child_ends, reason="halted")
    assert _compensate_all(driver) == undone
    assert driver.saga.status is SagaStatus.COMPENSATED
    assert driver.saga.failure == "halted"


def test_every_message_a_parent_sends_has_its_own_id() -> None:
    """A cancelled child that completed anyway is undone by a command of its own id."""
    driver = _driver()
    driver.event(Halted(key=KEY))
    driver.child_ended("kid", "kid", "completed")
    _compensate_all(driver)
    ids = [o.message_id for o in driver.sent]
    assert len(ids) == len(set(ids)), [o.payload.message_type for o in driver.sent]


def test_a_member_failing_cancels_the_child_in_the_group() -> None:
    driver = _driver(grouped=True)
    decision = driver.reply("b", Refused())
    assert driver.types(decision) == [CANCEL]
    driver.child_ended("kid", "kid", "compensated")
    assert _compensate_all(driver) == [UNDO_A]


@pytest.mark.parametrize(
    ("then", "undone"),
    [
        ("compensated", [UNDO_A]),  # it cancelled and undid itself: not undone twice
        ("completed", [UNDO_C, UNDO_A]),  # it had finished: the Child's compensation
        ("silence", [UNDO_C, UNDO_A]),  # no end within another timeout: maybe done
    ],
)
def test_a_child_that_times_out_is_asked_to_cancel_and_its_end_awaited(
    then: str, undone: list[str]
) -> None:
    driver = _driver()
    decision = driver.fire()
    assert driver.types(decision) == [CANCEL]
    cancel = decision.send[0].payload
    assert isinstance(cancel, CancelRequested) and cancel.reason == "step kid timed out"
    record = driver.record("kid")
    assert (record.status, record.cancel_requested_at) == (StepStatus.RUNNING, driver.now)
    assert record.error == "the kid saga did not end within 300s"
    assert driver.saga.cancel_reason == "step kid timed out"
    assert driver.saga.deadline == driver.now + CHILD_TIMEOUT
    if then == "silence":
        assert driver.types(driver.fire()) == [UNDO_C]  # no second cancel
        assert driver.saga.steps[1].error == "the kid saga did not end within 300s"
    else:
        driver.child_ended("kid", "kid", then, reason="step kid timed out")
    assert _compensate_all(driver) == undone
    assert (driver.saga.status, driver.saga.failure) == (
        SagaStatus.COMPENSATED,
        "step kid timed out",
    )
    ids = [o.message_id for o in driver.sent]
    assert len(ids) == len(set(ids))
    # a late end changes nothing
    assert driver.child_ended("kid", "kid", "completed").outcome is Outcome.IGNORED
