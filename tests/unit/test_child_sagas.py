"""A parent saga and its child in one app, through the harness and the real coordinator:
the child's start event, its end event back to the parent, and the parent's request to
cancel it all find their way over the bus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar

from bus_orchestrator.app import App
from bus_orchestrator.core import Event, Reply, SagaDefinition, SagaStatus, StepStatus
from bus_orchestrator.core.definition import Child, Parallel, Stage
from bus_orchestrator.core.lifecycle import StartedBy, cancel_event
from bus_orchestrator.ports import CommitResult, Direction
from bus_orchestrator.testing import SagaHarness
from tests.unit.constructs import (
    Begun,
    Data,
    DoA,
    DoB,
    DoC,
    Done,
    Refused,
    UndoA,
    UndoC,
    Undone,
    step,
)

KEY = "k-1"


class KidBegun(Event):
    message_type: ClassVar[str] = "tests.constructs.kid_begun.v1"
    key: str


def _kid() -> Child[Data]:
    return Child(
        name="kid",
        saga="kid",
        start=lambda d: KidBegun(key=d.key),
        starts=KidBegun,
        correlation=lambda d: d.key,
        timeout=timedelta(minutes=5),
    )


def _parent(stages: Sequence[Stage[Data]]) -> SagaDefinition[Data, Begun]:
    return SagaDefinition(
        name="parent",
        data_model=Data,
        started_by=Begun,
        correlate=lambda e: e.key,
        initial_data=lambda e: Data(key=e.key),
        steps=stages,
    )


def _child(c_timeout: timedelta = timedelta(seconds=30)) -> SagaDefinition[Data, KidBegun]:
    return SagaDefinition(
        name="kid",
        data_model=Data,
        started_by=KidBegun,
        correlate=lambda e: e.key,
        initial_data=lambda e: Data(key=e.key),
        steps=[step("c", timeout=c_timeout)],
    )


@dataclass
class Answers:
    """Answers the child's ``DoC`` from a list (``None``: leave it unanswered)."""

    answers: list[Reply | None] = field(default_factory=list)

    def __call__(self, command: DoC) -> Reply | None:
        return self.answers.pop(0) if self.answers else Done()


def _harness(
    stages: Sequence[Stage[Data]],
    child: Answers,
    *,
    child_first: bool = False,
    c_timeout: timedelta = timedelta(seconds=30),
) -> SagaHarness:
    parent, kid = _parent(stages), _child(c_timeout)
    sagas = [kid, parent] if child_first else [parent, kid]
    harness = SagaHarness(App("family", sagas=sagas), adapters=False)
    harness.reply(DoA, lambda c: Done())
    harness.reply(DoB, lambda c: Done())
    harness.reply(UndoA, lambda c: Undone())
    harness.reply(UndoC, lambda c: Undone())
    harness.reply(DoC, child)
    return harness


SEQUENTIAL: list[Stage[Data]] = [step("a"), _kid(), step("b")]


async def test_the_child_completes_and_the_parent_moves_on() -> None:
    harness = _harness(SEQUENTIAL, Answers())
    await harness.publish(Begun(key=KEY))
    await harness.run_until_idle()
    parent = await harness.saga(KEY, "parent")
    child = await harness.saga(KEY, "kid")
    assert (parent.status, child.status) == (SagaStatus.COMPLETED, SagaStatus.COMPLETED)
    assert harness.command_types() == [DoA.message_type, DoC.message_type, DoB.message_type]
    kid = parent.steps[1]
    assert kid.status is StepStatus.SUCCEEDED
    assert child.started_by == StartedBy(message_id=kid.command_id, correlation_id=KEY)
    history = [e.message_type for e in await harness.history(KEY, "parent")]
    assert "saga.kid.completed.v1" in history
    assert harness.dead_letters == []


async def test_a_child_that_fails_makes_the_parent_compensate() -> None:
    harness = _harness(SEQUENTIAL, Answers([Refused(reason="none left")]))
    await harness.publish(Begun(key=KEY))
    await harness.run_until_idle()
    parent = await harness.saga(KEY, "parent")
    assert (await harness.saga(KEY, "kid")).status is SagaStatus.COMPENSATED
    assert parent.status is SagaStatus.COMPENSATED
    assert parent.failure == (
        "step kid failed: child saga kid compensated: "
        "step c failed: tests.constructs.refused.v1: none left"
    )
    assert harness.command_types()[-1] == UndoA.message_type
    assert DoB.message_type not in harness.command_types()
    assert harness.dead_letters == []


async def test_a_parent_cancelled_while_its_child_runs_cancels_the_child_first() -> None:
    harness = _harness(SEQUENTIAL, Answers([None]))  # the child's c hangs
    await harness.publish(Begun(key=KEY))
    await harness.run_until_idle()
    assert (await harness.saga(KEY, "kid")).status is SagaStatus.RUNNING
    await harness.publish(cancel_event("parent")(correlation_id=KEY, reason="customer left"))
    await harness.run_until_idle()
    # the child was asked to cancel; it awaits its c, the parent awaits the child
    child = await harness.saga(KEY, "kid")
    assert child.cancel_reason == "customer left"
    parent = await harness.saga(KEY, "parent")
    assert parent.status is SagaStatus.RUNNING and parent.steps[1].cancel_requested_at
    assert UndoA.message_type not in harness.command_types()
    await harness.advance(timedelta(minutes=1))  # c times out: the child undoes it
    child = await harness.saga(KEY, "kid")
    assert (child.status, child.failure) == (SagaStatus.COMPENSATED, "customer left")
    parent = await harness.saga(KEY, "parent")
    assert (parent.status, parent.failure) == (SagaStatus.COMPENSATED, "customer left")
    assert harness.command_types()[-2:] == [UndoC.message_type, UndoA.message_type]
    assert harness.dead_letters == []


async def test_replies_to_a_group_find_the_parent_when_the_child_shares_its_ids() -> None:
    """The child has the parent's correlation id and answers to the same reply types;
    a reply to a group member that is not the parent's pending command still reaches it."""
    stages: list[Stage[Data]] = [Parallel[Data]("g", [_kid(), step("a")]), step("b")]
    harness = _harness(stages, Answers(), child_first=True)
    await harness.publish(Begun(key=KEY))
    await harness.run_until_idle()
    parent = await harness.saga(KEY, "parent")
    assert parent.status is SagaStatus.COMPLETED, parent.failure
    assert harness.command_types() == [DoA.message_type, DoC.message_type, DoB.message_type]


async def test_a_saga_no_parent_started_ends_without_troubling_the_parent_type() -> None:
    harness = _harness(SEQUENTIAL, Answers())
    await harness.publish(KidBegun(key="solo"), correlation_id="some-caller")
    await harness.advance(timedelta(hours=2))  # past any park's time to live
    assert (await harness.saga("solo", "kid")).status is SagaStatus.COMPLETED
    assert harness.dead_letters == []
    assert await harness.store.find("some-caller") == []


async def test_a_child_stopped_for_an_operator_by_its_timer_still_tells_its_parent() -> None:
    """The timer loop gives up on a saga whose timer keeps failing: that is a final status
    too, and the parent learns it from the end event."""
    harness = _harness(SEQUENTIAL, Answers([None]))
    await harness.publish(Begun(key=KEY))
    await harness.run_until_idle()
    child = await harness.saga(KEY, "kid")
    result = await harness.coordinator.give_up(child, "timer failed 5 times: boom")
    assert result is CommitResult.COMMITTED
    await harness.run_until_idle()
    assert (await harness.saga(KEY, "kid")).status is SagaStatus.FAILED
    parent = await harness.saga(KEY, "parent")
    assert parent.status is SagaStatus.COMPENSATED
    assert parent.failure == "step kid failed: child saga kid failed: timer failed 5 times: boom"
    history = await harness.history(KEY, "kid")
    assert [e.message_type for e in history if e.direction is Direction.OUT][-1] == (
        "saga.kid.failed.v1"
    )


async def test_a_failing_member_of_its_group_cancels_the_child_over_the_bus() -> None:
    stages: list[Stage[Data]] = [Parallel[Data]("g", [_kid(), step("a")]), step("b")]
    harness = _harness(stages, Answers([None]))  # the child's c hangs
    harness.reply(DoA, lambda c: Refused(reason="a says no"))
    await harness.publish(Begun(key=KEY))
    await harness.run_until_idle()
    child = await harness.saga(KEY, "kid")
    assert child.cancel_reason == "step a failed: tests.constructs.refused.v1: a says no"
    await harness.advance(timedelta(minutes=1))  # the child's c times out: undone
    assert (await harness.saga(KEY, "kid")).status is SagaStatus.COMPENSATED
    parent = await harness.saga(KEY, "parent")
    assert parent.status is SagaStatus.COMPENSATED
    assert [s.status for s in parent.steps] == [StepStatus.FAILED, StepStatus.FAILED]
    assert harness.command_types() == [DoA.message_type, DoC.message_type, UndoC.message_type]


async def test_a_child_that_outlives_its_step_is_cancelled_and_its_end_awaited() -> None:
    """The Child's timeout (5 minutes) passes while the child's c (8 minutes) is out."""
    harness = _harness(SEQUENTIAL, Answers([None]), c_timeout=timedelta(minutes=8))
    await harness.publish(Begun(key=KEY))
    await harness.advance(timedelta(minutes=6))
    child = await harness.saga(KEY, "kid")
    assert (child.status, child.cancel_reason) == (SagaStatus.RUNNING, "step kid timed out")
    parent = await harness.saga(KEY, "parent")
    assert parent.status is SagaStatus.RUNNING  # it awaits the child's end
    assert UndoA.message_type not in harness.command_types()
    await harness.advance(timedelta(minutes=3))  # c times out: the child undoes it and ends
    parent = await harness.saga(KEY, "parent")
    assert (parent.status, parent.failure) == (SagaStatus.COMPENSATED, "step kid timed out")
    assert parent.steps[1].status is StepStatus.FAILED
    assert harness.command_types() == [
        DoA.message_type,
        DoC.message_type,
        UndoC.message_type,
        UndoA.message_type,
    ]
