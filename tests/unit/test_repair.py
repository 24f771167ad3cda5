"""Operator repairs in the core: suspending steps, and retry, skip, abort and resume."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bus_orchestrator.core import Inbound, SagaStatus, StepStatus
from bus_orchestrator.core.definition import OnFailure, Wait
from bus_orchestrator.core.repair import (
    Repair,
    RepairInvalidError,
    RepairRefusedError,
    allowed,
    skip_reply,
)
from bus_orchestrator.core.state import Phase, command_id_for
from tests.unit.constructs import (
    KEY,
    TIMEOUT,
    Done,
    Driver,
    Halted,
    Paid,
    Refused,
    Undone,
    saga,
    step,
)

HOLD = OnFailure.SUSPEND


def held_at_b(**b: object) -> Driver:
    """a done, then b (which suspends on failure) sent."""
    driver = Driver(saga("repairs", [step("a"), step("b", on_failure=HOLD, **b), step("c")]))  # type: ignore[arg-type]
    driver.start()
    driver.reply("a", Done())
    return driver


def test_a_suspending_step_that_times_out_holds_the_saga_and_undoes_nothing() -> None:
    driver = held_at_b()
    decision = driver.fire()
    assert driver.saga.status is SagaStatus.SUSPENDED
    assert driver.statuses() == {"a": StepStatus.SUCCEEDED, "b": StepStatus.TIMED_OUT}
    assert decision.send == ()
    assert driver.saga.deadline is None and driver.saga.pending_command_id is None
    assert driver.saga.failure == "step b timed out"
    assert allowed(driver.saga) == [Repair.RETRY, Repair.SKIP, Repair.ABORT]


def test_retry_resends_a_timed_out_step_with_its_command_id_and_the_saga_completes() -> None:
    driver = held_at_b()
    first = driver.record("b").command_id
    driver.fire()
    driver.now += timedelta(hours=1)
    decision = driver.operate(Repair.RETRY, "adapter restarted")
    assert [o.message_id for o in decision.send] == [first]
    assert driver.saga.status is SagaStatus.RUNNING and driver.saga.failure is None
    assert driver.record("b").status is StepStatus.RUNNING
    assert driver.saga.deadline == driver.now + TIMEOUT
    assert "retry by ops: adapter restarted" in decision.note
    driver.reply("b", Done())
    driver.reply("c", Done())
    assert driver.saga.status is SagaStatus.COMPLETED


def test_retry_of_a_refused_step_is_a_new_attempt_with_an_id_of_its_own() -> None:
    driver = held_at_b()
    old = driver.record("b").command_id
    driver.reply("b", Refused(reason="account on hold"))
    assert driver.saga.status is SagaStatus.SUSPENDED
    assert driver.record("b").status is StepStatus.FAILED
    decision = driver.operate(Repair.RETRY)
    (resent,) = decision.send
    assert resent.message_id != old
    assert resent.message_id == command_id_for(driver.saga.saga_id, 1, Phase.FORWARD, 2)
    assert driver.record("b").tries == 2
    # a late answer to the refused attempt is stale; the new attempt's settles the step
    stale = driver.apply(Inbound("late", Done(), KEY, old))
    assert stale.instance is None
    driver.reply("b", Done())
    assert driver.record("c").status is StepStatus.RUNNING


def test_a_late_answer_to_the_timed_out_step_runs_the_suspended_saga_on() -> None:
    driver = held_at_b()
    driver.fire()
    decision = driver.reply("b", Done())
    assert "late answer to step b" in decision.note
    assert driver.saga.status is SagaStatus.RUNNING
    assert driver.types(decision) == ["tests.constructs.do_c.v1"]


def test_skip_marks_the_step_done_with_the_operators_reply() -> None:
    driver = held_at_b()
    driver.fire()
    reply = skip_reply(driver.definition, driver.saga, None, {}, None)
    assert isinstance(reply, Done)
    decision = driver.operate(Repair.SKIP, "done by phone", reply=reply)
    assert driver.record("b").status is StepStatus.SUCCEEDED
    assert driver.saga.data["seen"] == ["a", "b"]  # the step's on_reply ran
    assert driver.types(decision) == ["tests.constructs.do_c.v1"]
    assert "step b marked done by hand" in decision.note


def test_skip_refuses_a_reply_the_step_is_not_settled_by() -> None:
    driver = held_at_b()
    driver.fire()
    with pytest.raises(RepairInvalidError, match="does not settle this step"):
        skip_reply(driver.definition, driver.saga, None, {}, "tests.constructs.refused.v1")
    with pytest.raises(RepairInvalidError, match="settled by"):
        driver.operate(Repair.SKIP, reply=Refused())
    with pytest.raises(RepairRefusedError, match="not what the saga waits on"):
        skip_reply(driver.definition, driver.saga, "a", {}, None)


def test_skip_of_a_wait_validates_the_event() -> None:
    wait = Wait(name="paid", event=Paid, correlate=lambda e: e.key, timeout=TIMEOUT)
    driver = Driver(saga("repairs_wait", [step("a"), wait]))
    driver.start()
    driver.reply("a", Done())
    with pytest.raises(RepairInvalidError, match=r"tests\.constructs\.paid\.v1: key"):
        skip_reply(driver.definition, driver.saga, None, {"amount": 3}, None)
    event = skip_reply(driver.definition, driver.saga, None, {"key": KEY, "amount": 3}, None)
    driver.operate(Repair.SKIP, reply=event)
    assert driver.saga.status is SagaStatus.COMPLETED


def test_abort_compensates_what_was_done_including_the_timed_out_step() -> None:
    driver = held_at_b()
    driver.fire()
    decision = driver.operate(Repair.ABORT, "customer gave up")
    assert driver.saga.status is SagaStatus.COMPENSATING
    assert driver.types(decision) == ["tests.constructs.undo_b.v1"]  # it may have been done
    driver.reply("b", Undone(), compensation=True)
    driver.reply("a", Undone(), compensation=True)
    assert driver.saga.status is SagaStatus.COMPENSATED
    assert driver.saga.failure == "aborted by ops: customer gave up"
    (ended,) = driver.ends()
    assert ended.status == "compensated"


def test_abort_of_a_running_saga_waits_for_its_command_then_compensates() -> None:
    driver = Driver(saga("repairs_run", [step("a"), step("b")]))
    driver.start()
    decision = driver.operate(Repair.ABORT, "wrong order")
    assert decision.send == ()
    assert "compensation starts once a answer" in decision.note
    with pytest.raises(RepairRefusedError, match="stopping"):
        driver.operate(Repair.ABORT)
    driver.reply("a", Done())
    assert driver.saga.status is SagaStatus.COMPENSATING


def test_a_cancel_event_compensates_a_suspended_saga() -> None:
    driver = held_at_b()
    driver.reply("b", Refused())
    driver.event(Halted(key=KEY))
    assert driver.saga.status is SagaStatus.COMPENSATING
    assert driver.record("a").status is StepStatus.COMPENSATING


def failed_in_compensation() -> Driver:
    driver = Driver(saga("repairs_failed", [step("a", undo_can_fail=True), step("b")]))
    driver.start()
    driver.reply("a", Done())
    driver.reply("b", Refused())
    driver.reply("a", Refused(reason="refund api down"), compensation=True)
    assert driver.saga.status is SagaStatus.FAILED
    return driver


def test_resume_retries_the_compensation_that_gave_up_with_a_new_id() -> None:
    driver = failed_in_compensation()
    old = driver.record("a").compensation_id
    assert allowed(driver.saga) == [Repair.RESUME]
    decision = driver.operate(Repair.RESUME, "refund api fixed")
    (resent,) = decision.send
    assert resent.payload.message_type == "tests.constructs.undo_a.v1"
    assert resent.message_id != old
    assert driver.saga.status is SagaStatus.COMPENSATING
    assert driver.record("a").status is StepStatus.COMPENSATING
    driver.reply("a", Undone(), compensation=True)
    assert driver.saga.status is SagaStatus.COMPENSATED
    # it ends once more, with an end event of another id (a parent has handled the first)
    assert [e.status for e in driver.ends()] == ["failed", "compensated"]
    first, second = (o.message_id for o in driver.sent if o.payload in driver.ends())
    assert first != second


def test_resume_is_the_same_decision_for_the_same_action() -> None:
    driver = failed_in_compensation()
    before = driver.saga
    once = driver.operate(Repair.RESUME, message_id="op-1")
    driver.instance = before
    again = driver.operate(Repair.RESUME, message_id="op-1")
    assert once.send == again.send and once.instance == again.instance


@pytest.mark.parametrize(
    ("setup", "repair", "why"),
    [
        ("completed", Repair.RETRY, "nothing to repair"),
        ("completed", Repair.RESUME, "nothing to repair"),
        ("failed", Repair.RETRY, "does not allow retry: resume"),
        ("failed", Repair.ABORT, "does not allow abort"),
        ("running", Repair.RESUME, "no command in flight to resume"),
        ("compensating", Repair.ABORT, "does not allow abort"),
    ],
)
def test_a_status_that_does_not_allow_a_repair_refuses_it(
    setup: str, repair: Repair, why: str
) -> None:
    if setup == "failed":
        driver = failed_in_compensation()
    else:
        driver = Driver(saga("repairs_refused", [step("a")]))
        driver.start()
        if setup == "completed":
            driver.reply("a", Done())
        elif setup == "compensating":
            driver.event(Halted(key=KEY))
            driver.reply("a", Done())
            assert driver.saga.status is SagaStatus.COMPENSATING
    before = driver.saga
    with pytest.raises(RepairRefusedError, match=why):
        driver.operate(repair)
    assert driver.saga == before


def test_retry_of_a_running_step_resends_it_now_with_its_id() -> None:
    driver = Driver(saga("repairs_resend", [step("a")]))
    driver.start()
    first = driver.record("a").command_id
    driver.now += timedelta(seconds=20)
    decision = driver.operate(Repair.RETRY, "adapter lost it")
    assert [o.message_id for o in decision.send] == [first]
    assert driver.saga.deadline == driver.now + TIMEOUT


def test_retry_and_skip_of_a_compensation() -> None:
    driver = Driver(saga("repairs_undo", [step("a"), step("b"), step("c")]))
    driver.start()
    driver.reply("a", Done())
    driver.reply("b", Done())
    driver.reply("c", Refused())
    undo_b = driver.record("b").compensation_id
    decision = driver.operate(Repair.RETRY)
    assert [o.message_id for o in decision.send] == [undo_b]
    decision = driver.operate(Repair.SKIP, "refunded by hand")
    assert driver.record("b").status is StepStatus.COMPENSATED
    assert driver.types(decision) == ["tests.constructs.undo_a.v1"]


def test_a_saga_waiting_for_locks_may_only_be_aborted() -> None:
    locked = saga("repairs_locks", [step("a")], locks=("k:{key}",))
    driver = Driver(locked)
    driver.start()
    assert driver.saga.waiting_for_locks
    assert allowed(driver.saga) == [Repair.ABORT]
    with pytest.raises(RepairRefusedError):
        driver.operate(Repair.RETRY)
    driver.operate(Repair.ABORT, "duplicate signup")
    assert driver.saga.status is SagaStatus.COMPENSATED
