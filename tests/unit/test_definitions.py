"""What a saga definition refuses when it is built: malformed groups, branches in groups,
declared command types its builders contradict, lock keys naming unknown fields; and the
built messages checked against what a step declares."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from bus_orchestrator.core import END, Event, SagaDefinition, SagaStatus, Step
from bus_orchestrator.core.definition import Child, Parallel, Reaction, Wait
from bus_orchestrator.errors import DefinitionError
from tests.unit.constructs import (
    Begun,
    Data,
    DoA,
    DoB,
    Done,
    Driver,
    Paid,
    UndoA,
    Undone,
    saga,
    step,
)


class Inner(BaseModel):
    id: str


class Nested(BaseModel):
    key: str
    inner: Inner


class Other(Event):
    message_type: ClassVar[str] = "tests.constructs.other.v1"
    key: str


def build_a(d: Data) -> DoA:
    return DoA(key=d.key)


def build_b(d: Data) -> DoB:
    return DoB(key=d.key)


def undo_a(d: Data) -> UndoA:
    return UndoA(key=d.key)


def _wait(name: str = "w") -> Wait[Data, Paid]:
    return Wait(name=name, event=Paid, correlate=lambda e: e.key, timeout=timedelta(minutes=1))


def _child(**changes: Any) -> Child[Data]:
    fields: dict[str, Any] = {
        "name": "kid",
        "saga": "kid",
        "start": lambda d: Other(key=d.key),
        "starts": Other,
        "correlation": lambda d: d.key,
        **changes,
    }
    return Child(**fields)


def _nested(*locks: str) -> SagaDefinition[Nested, Begun]:
    return SagaDefinition(
        name="nested",
        data_model=Nested,
        started_by=Begun,
        correlate=lambda e: e.key,
        initial_data=lambda e: Nested(key=e.key, inner=Inner(id="i")),
        steps=[Step(name="a", command=lambda d: DoA(key=d.key), succeeds_on=(Done,))],
        locks=locks,
    )


REFUSED: dict[str, tuple[Callable[[], object], str]] = {
    "a group of one": (
        lambda: saga("s", [Parallel[Data]("g", [step("a")])]),
        "parallel group 'g' needs two steps or more",
    ),
    "a group in a group": (
        lambda: saga(
            "s",
            [Parallel("g", [step("a"), Parallel("h", [step("b"), step("c")])])],  # type: ignore[list-item]
        ),
        "parallel group 'g' holds a group ('h')",
    ),
    "a reaction among the steps": (
        lambda: saga("s", [step("a"), Reaction(Paid, lambda e: e.key, lambda d, e: None)]),  # type: ignore[list-item]
        "Reaction(event=<class",
    ),
    "a branch in a group": (
        lambda: saga(
            "s",
            [
                Parallel[Data](
                    "g",
                    [
                        Step(name="a", command=build_a, succeeds_on=(Done,), next=lambda d, r: END),
                        step("b"),
                    ],
                )
            ],
        ),
        "step 'a' is in a parallel group and cannot branch",
    ),
    "a branch to a member of a group": (
        lambda: saga(
            "s",
            [
                Step(
                    name="a",
                    command=build_a,
                    succeeds_on=(Done,),
                    next=lambda d, r: "b",
                    branches=("b",),
                ),
                Parallel[Data]("g", [step("b"), step("c")]),
            ],
        ),
        "step 'a' branches to unknown steps ['b']",
    ),
    "a group named as a step": (
        lambda: saga("s", [step("a"), Parallel[Data]("a", [step("b"), step("c")])]),
        "duplicate step names",
    ),
    "a step named as one in a group": (
        lambda: saga("s", [step("a"), Parallel[Data]("g", [step("a"), step("c")])]),
        "duplicate step names",
    ),
    "sends contradicted by the builder": (
        lambda: saga("s", [Step(name="a", command=build_b, sends=DoA, succeeds_on=(Done,))]),
        "step 'a': its command is declared to send tests.constructs.do_a.v1, but returns DoB",
    ),
    "compensation_sends contradicted by the builder": (
        lambda: saga(
            "s",
            [
                Step(
                    name="a",
                    command=build_a,
                    succeeds_on=(Done,),
                    compensation=build_b,
                    compensation_sends=UndoA,
                    compensated_on=(Undone,),
                )
            ],
        ),
        "its compensation is declared to send tests.constructs.undo_a.v1, but returns DoB",
    ),
    "a child's compensation contradicted by its builder": (
        lambda: saga(
            "s",
            [_child(compensation=build_b, compensation_sends=UndoA, compensated_on=(Undone,))],
        ),
        "step 'kid': its compensation is declared to send tests.constructs.undo_a.v1",
    ),
    "sends naming an event": (
        lambda: saga("s", [Step(name="a", command=build_a, sends=Paid, succeeds_on=(Done,))]),  # type: ignore[arg-type]
        "step 'a': Paid is no command",
    ),
    "a child starting with a command": (
        lambda: saga("s", [_child(starts=DoA)]),
        "step 'kid': DoA is not an event",
    ),
    "a wait for a reply": (
        lambda: saga(
            "s",
            [Wait(name="w", event=Done, correlate=lambda e: "k", timeout=timedelta(1))],  # type: ignore[type-var]
        ),
        "step 'w': Done is not an event",
    ),
    "a lock naming an unknown field": (
        lambda: saga("s", [step("a")], locks=("customer:{customer_id}",)),
        "lock 'customer:{customer_id}' names unknown fields ['customer_id']",
    ),
    "a lock naming no field": (
        lambda: saga("s", [step("a")], locks=("everything",)),
        "lock 'everything' names no field of the data",
    ),
    "a lock naming an unknown nested field": (
        lambda: _nested("inner:{inner.nope}"),
        "lock 'inner:{inner.nope}' names unknown fields ['inner.nope']",
    ),
    "two waits for one event": (
        lambda: saga("s", [_wait("w1"), _wait("w2")]),
        "an event type is handled twice",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_malformed_definition_is_refused(name: str) -> None:
    build, reason = REFUSED[name]
    with pytest.raises(DefinitionError) as refused:
        build()
    assert reason in str(refused.value)


def test_well_formed_constructs_are_accepted() -> None:
    definition = saga(
        "s",
        [
            Step(name="a", command=build_a, succeeds_on=(Done,)),
            Parallel[Data]("g", [step("b"), _wait(), _child()]),
        ],
        locks=("entity:{key}",),
    )
    assert [s.name for s in definition.all_steps()] == ["a", "b", "w", "kid"]
    assert definition.index_of("kid") == 1 and definition.stage("w").name == "g"
    assert _nested("inner:{inner.id}").lock_keys(Nested(key="k", inner=Inner(id="7"))) == (
        "inner:7",
    )


def test_the_builders_annotation_declares_what_a_step_sends() -> None:
    a = Step(
        name="a",
        command=build_a,
        succeeds_on=(Done,),
        compensation=undo_a,
        compensated_on=(Undone,),
    )
    definition = saga("s", [a])
    assert (a.sends, a.compensation_sends) == (DoA, UndoA)
    assert DoA in definition.message_models() and UndoA in definition.message_models()


def test_a_built_command_other_than_declared_fails_the_saga() -> None:
    wrong = Step(name="a", command=lambda d: DoB(key=d.key), sends=DoA, succeeds_on=(Done,))
    driver = Driver(saga("s", [wrong]))
    driver.start()
    assert driver.saga.status is SagaStatus.FAILED
    assert driver.saga.failure is not None
    assert "step a declares it sends tests.constructs.do_a.v1, but built" in driver.saga.failure


def test_a_child_start_other_than_declared_fails_the_saga() -> None:
    driver = Driver(saga("s", [_child(start=lambda d: Paid(key=d.key))]))
    driver.start()
    assert driver.saga.status is SagaStatus.FAILED
    assert driver.saga.failure is not None
    assert "step kid declares it starts kid with tests.constructs.other.v1" in driver.saga.failure
