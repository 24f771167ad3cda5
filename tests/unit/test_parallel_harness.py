"""Parallel groups through the harness and the real coordinator: every member's reply
finds the saga (only one of them is its pending command), deadlines fire in turn, and a
member whose command cannot be sent does not keep the others from going out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import Reply, SagaStatus, Step, StepStatus
from bus_orchestrator.core.definition import Parallel
from bus_orchestrator.testing import SagaHarness
from tests.unit.constructs import (
    KEY,
    Begun,
    Data,
    DoA,
    DoB,
    DoC,
    Done,
    Refused,
    UndoA,
    UndoB,
    UndoC,
    Undone,
    saga,
    step,
)


@dataclass
class Script:
    """Answers one command type from a list; ``None`` leaves a command unanswered."""

    answers: list[Reply | None] = field(default_factory=list)

    def __call__(self, command: object) -> Reply | None:
        return self.answers.pop(0) if self.answers else Done()


def _harness(b: Script, c: Script, *, big_b: bool = False, **settings: int) -> SagaHarness:
    member_b = step("b", timeout=timedelta(seconds=10))
    if big_b:  # b's command is over the size limit
        member_b = Step(
            name="b",
            command=lambda d: DoB(key=d.key * 2000),
            sends=DoB,
            succeeds_on=(Done,),
            compensation=member_b.compensation,
            compensation_sends=UndoB,
            compensated_on=(Undone,),
        )
    group = Parallel[Data]("bc", [member_b, step("c", timeout=timedelta(seconds=40))])
    app = App("grouped", sagas=[saga("grouped", [step("a"), group])])
    harness = SagaHarness(app, adapters=False, settings=Settings(**settings))  # type: ignore[arg-type]
    harness.reply(DoA, lambda cmd: Done())
    harness.reply(DoB, b)
    harness.reply(DoC, c)
    for undo in (UndoA, UndoB, UndoC):
        harness.reply(undo, lambda cmd: Undone())
    return harness


A, B, C = DoA.message_type, DoB.message_type, DoC.message_type
UA, UB, UC = UndoA.message_type, UndoB.message_type, UndoC.message_type


@pytest.mark.parametrize(
    ("b", "c", "status", "after_group"),
    [
        ([Done()], [Done()], SagaStatus.COMPLETED, []),
        ([Refused()], [Done()], SagaStatus.COMPENSATED, [UC, UA]),
        ([Done()], [Refused()], SagaStatus.COMPENSATED, [UB, UA]),
        ([None], [Done()], SagaStatus.COMPENSATED, [UC, UB, UA]),  # b times out
        ([None], [None], SagaStatus.COMPENSATED, [UC, UB, UA]),  # both, each at its time
    ],
)
async def test_group_paths(
    b: list[Reply | None], c: list[Reply | None], status: SagaStatus, after_group: list[str]
) -> None:
    harness = _harness(Script(b), Script(c))
    await harness.publish(Begun(key=KEY))
    await harness.advance(timedelta(minutes=2))
    saga_ = await harness.saga(KEY)
    assert saga_.status is status
    sent = harness.command_types()
    assert sent[:1] == [A] and sorted(sent[1:3]) == [B, C]
    assert sent[3:] == after_group
    assert harness.dead_letters == []


async def test_each_member_times_out_at_its_own_deadline() -> None:
    harness = _harness(Script([None]), Script([None]))
    await harness.publish(Begun(key=KEY))
    await harness.advance(timedelta(seconds=10))
    assert await harness.steps(KEY) == {
        "a": StepStatus.SUCCEEDED,
        "b": StepStatus.TIMED_OUT,
        "c": StepStatus.RUNNING,
    }
    await harness.advance(timedelta(seconds=30))
    assert (await harness.steps(KEY))["c"] is not StepStatus.RUNNING
    assert harness.command_types()[3:] == [UC, UB, UA]


async def test_a_member_whose_command_is_too_big_does_not_hold_back_the_others() -> None:
    harness = _harness(Script(), Script(), big_b=True, max_message_bytes=2000)
    await harness.publish(Begun(key=KEY))
    await harness.run_until_idle()
    # b failed at once; c went out all the same, and its success is undone
    assert harness.command_types() == [A, C, UC, UA]
    saga_ = await harness.saga(KEY)
    assert saga_.status is SagaStatus.COMPENSATED
    assert saga_.steps[1].status is StepStatus.FAILED
    assert saga_.failure is not None and "over the limit of 2000" in saga_.failure
