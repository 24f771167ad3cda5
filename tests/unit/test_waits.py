"""``Wait`` steps, through ``decide``: a business event ends the wait (even one that came
before the wait began); no event in time fails the step and the saga compensates."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

import pytest
from pydantic import SecretStr

from bus_orchestrator.app import App
from bus_orchestrator.core import Command, Event, Outcome, SagaStatus, Secret, StepStatus
from bus_orchestrator.core.definition import Parallel, Wait
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.testing import SagaHarness
from tests.unit.constructs import (
    T0,
    Begun,
    Data,
    DoA,
    DoB,
    Done,
    Driver,
    Halted,
    Paid,
    Refused,
    UndoA,
    Undone,
    noted,
    saga,
    step,
)

WAIT = timedelta(minutes=10)


def _paid(timeout: timedelta = WAIT) -> Wait[Data, Paid]:
    return Wait(
        name="paid",
        event=Paid,
        correlate=lambda e: e.key,
        timeout=timeout,
        on_event=lambda d, e: noted(d, f"paid {e.amount}"),
    )


def _driver() -> Driver:
    """``a``, wait for ``Paid``, ``b``."""
    return Driver(saga("waiting", [step("a"), _paid(), step("b")]))


def test_the_event_ends_the_wait_and_the_saga_moves_on() -> None:
    driver = _driver()
    driver.start()
    decision = driver.reply("a", Done())
    assert driver.types(decision) == []  # a wait sends nothing
    record = driver.record("paid")
    assert (record.status, record.command_type) == (StepStatus.RUNNING, Paid.message_type)
    assert driver.saga.deadline == T0 + WAIT
    decision = driver.event(Paid(key="k-1", amount=5))
    assert driver.types(decision) == ["tests.constructs.do_b.v1"]
    assert driver.statuses()["paid"] is StepStatus.SUCCEEDED
    assert driver.saga.data["seen"] == ["a", "paid 5"]
    assert driver.saga.deadline == T0 + timedelta(seconds=30)


def test_an_event_before_the_wait_began_is_kept_and_ends_the_wait_at_once() -> None:
    driver = _driver()
    driver.start()
    kept = driver.event(Paid(key="k-1", amount=7))
    assert kept.outcome is Outcome.ADVANCED
    assert Paid.message_type in driver.saga.early_events
    assert "paid" not in driver.statuses()
    # a second early copy does not replace the first
    assert driver.event(Paid(key="k-1", amount=8)).outcome is Outcome.IGNORED
    decision = driver.reply("a", Done())
    assert driver.types(decision) == ["tests.constructs.do_b.v1"]
    assert driver.statuses()["paid"] is StepStatus.SUCCEEDED
    assert driver.saga.data["seen"] == ["a", "paid 7"]
    assert driver.saga.early_events == {}


def test_no_event_in_time_fails_the_wait_and_compensates() -> None:
    driver = _driver()
    driver.start()
    driver.reply("a", Done())
    decision = driver.fire()
    assert driver.statuses()["paid"] is StepStatus.FAILED
    assert driver.record("paid").error == "no tests.constructs.paid.v1 within 600s"
    assert driver.types(decision) == ["tests.constructs.undo_a.v1"]
    assert driver.saga.failure == "step paid timed out"
    driver.reply("a", Undone(), compensation=True)
    assert driver.saga.status is SagaStatus.COMPENSATED


@pytest.mark.parametrize("after", ["timed out", "succeeded"])
def test_an_event_for_a_finished_wait_is_ignored(after: str) -> None:
    driver = _driver()
    driver.start()
    driver.reply("a", Done())
    if after == "timed out":
        driver.fire()
    else:
        driver.event(Paid(key="k-1"))
    before = driver.saga
    late = driver.event(Paid(key="k-1", amount=9))
    assert late.outcome is Outcome.IGNORED and late.instance is None
    assert driver.saga == before


def test_a_cancellation_ends_a_wait_at_once() -> None:
    driver = _driver()
    driver.start()
    driver.reply("a", Done())
    decision = driver.event(Halted(key="k-1"))
    assert driver.statuses()["paid"] is StepStatus.FAILED
    assert driver.record("paid").error == "stopped: halted"
    assert driver.types(decision) == ["tests.constructs.undo_a.v1"]


def test_a_wait_in_a_group_ends_at_once_when_a_member_fails() -> None:
    group = Parallel[Data]("pay_and_b", [_paid(), step("b")])
    driver = Driver(saga("waiting_group", [step("a"), group]))
    driver.start()
    driver.reply("a", Done())
    decision = driver.reply("b", Refused())
    assert driver.statuses() == {"a": "compensating", "paid": "failed", "b": "failed"}
    assert driver.types(decision) == ["tests.constructs.undo_a.v1"]


def test_an_event_handled_twice_is_refused() -> None:
    with pytest.raises(DefinitionError, match="handled twice"):
        saga(
            "twice",
            [_paid(), Wait(name="again", event=Paid, correlate=lambda e: e.key, timeout=WAIT)],
        )
    with pytest.raises(DefinitionError, match="handled twice"):
        saga("start", [Wait(name="w", event=Begun, correlate=lambda e: e.key, timeout=WAIT)])


class Signed(Event):
    message_type: ClassVar[str] = "tests.constructs.signed.v1"
    key: str
    token: Secret


def test_an_early_event_the_saga_never_used_is_not_kept_once_it_ends() -> None:
    """Kept as it came, secrets and all, while the saga may still need it; a finished saga
    keeps its data masked, and nothing of that event."""
    signed = Wait(name="signed", event=Signed, correlate=lambda e: e.key, timeout=WAIT)
    driver = Driver(saga("waiting", [step("a"), signed]))
    driver.start()
    driver.event(Signed(key="k-1", token=SecretStr("s3cret")))
    assert driver.saga.early_events[Signed.message_type]["token"] == "s3cret"
    driver.reply("a", Refused())
    assert driver.saga.status is SagaStatus.COMPENSATED
    assert driver.saga.early_events == {}
    assert "s3cret" not in driver.saga.model_dump_json()


# -- through the harness ------------------------------------------------------------------


def _waiting_harness() -> SagaHarness:
    harness = SagaHarness(App("waiting", sagas=[_driver().definition]), adapters=False)
    harness.reply(DoA, lambda c: Done())
    harness.reply(DoB, lambda c: Done())
    harness.reply(UndoA, lambda c: Undone())
    return harness


@pytest.mark.parametrize(
    ("when", "status", "sent"),
    [
        ("before the saga starts", SagaStatus.COMPLETED, [DoA, DoB]),
        ("before the wait begins", SagaStatus.COMPLETED, [DoA, DoB]),
        ("while it waits", SagaStatus.COMPLETED, [DoA, DoB]),
        ("never", SagaStatus.COMPENSATED, [DoA, UndoA]),
    ],
)
async def test_waits_through_the_coordinator(
    when: str, status: SagaStatus, sent: list[type[Command]]
) -> None:
    harness = _waiting_harness()
    harness.reply(DoA, lambda c: None)  # a is answered by hand
    paid = Paid(key="k-1", amount=3)
    if when == "before the saga starts":
        await harness.publish(paid)  # parked until the saga exists
    await harness.publish(Begun(key="k-1"))
    await harness.run_until_idle()
    if when == "before the wait begins":
        await harness.publish(paid)
        await harness.run_until_idle()
    await harness.answer(harness.commands[0], Done())
    await harness.run_until_idle()
    if when == "while it waits":
        assert (await harness.steps("k-1"))["paid"] is StepStatus.RUNNING
        await harness.publish(paid)
    await harness.advance(WAIT + timedelta(minutes=1))
    saga_ = await harness.saga("k-1")
    assert saga_.status is status
    assert harness.command_types() == [m.message_type for m in sent]
    if status is SagaStatus.COMPLETED:
        assert saga_.data["seen"] == ["a", "paid 3", "b"]
    assert harness.dead_letters == []
