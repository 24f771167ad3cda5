"""End events through ``decide``: every saga sends exactly one, on whichever path it
reaches its final status, naming the event that started it; and a branch to a step that
``next`` may not pick fails the saga with the reason."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bus_orchestrator.core import END, Inbound, SagaStatus, Step
from bus_orchestrator.core.lifecycle import StartedBy, cancel_event
from bus_orchestrator.core.state import ID_NAMESPACE
from tests.unit.constructs import (
    KEY,
    Data,
    Done,
    Driver,
    Halted,
    Refused,
    Undone,
    saga,
    step,
)


def _raise(*_: object) -> Data:
    raise RuntimeError("boom")


def _two_steps(**a: object) -> Driver:
    return Driver(saga("ending", [step("a", **a), step("b")]))  # type: ignore[arg-type]


def _completed(d: Driver) -> None:
    d.start(correlation="parent-corr")
    d.reply("a", Done())
    d.reply("b", Done())


def _refused_first(d: Driver) -> None:
    d.start(correlation="parent-corr")
    d.reply("a", Refused(reason="nope"))


def _compensated(d: Driver) -> None:
    d.start(correlation="parent-corr")
    d.reply("a", Done())
    d.reply("b", Refused(reason="nope"))
    d.reply("a", Undone(), compensation=True)


def _compensation_fails(d: Driver) -> None:
    d.start(correlation="parent-corr")
    d.reply("a", Done())
    d.reply("b", Refused(reason="nope"))
    for _ in range(3):  # the compensation's attempts run out
        d.fire()


def _cancelled(d: Driver) -> None:
    d.start(correlation="parent-corr")
    d.event(Halted(key=KEY))
    d.reply("a", Done())  # awaited: it succeeded, so it is undone
    d.reply("a", Undone(), compensation=True)


def _locking() -> Driver:
    return Driver(saga("ending", [step("a")], locks=("entity:{key}",)))


def _cancelled_waiting(d: Driver) -> None:
    d.start(correlation="parent-corr")
    assert d.saga.waiting_for_locks
    d.event(Halted(key=KEY))


def _cancel_event(d: Driver) -> None:
    d.start(correlation="parent-corr")
    d.reply("a", Done())
    cancel = cancel_event("ending")(correlation_id=KEY, reason="asked to")
    d.event(cancel)
    d.reply("b", Refused())
    d.reply("a", Undone(), compensation=True)


def _code_raises_mid_run(d: Driver) -> None:
    d.start(correlation="parent-corr")
    d.reply("a", Done())


def _code_raises_at_start(d: Driver) -> None:
    d.start(correlation="parent-corr")


@dataclass(frozen=True)
class Path:
    run: Callable[[Driver], None]
    status: str
    reason: str | None
    driver: Callable[[], Driver] = _two_steps


def _raising_on_reply() -> Driver:
    a = step("a")
    raising = Step(
        name="a",
        command=a.command,
        sends=a.sends,
        succeeds_on=(Done,),
        on_reply=_raise,
    )
    return Driver(saga("ending", [raising, step("b")]))


def _raising_at_start() -> Driver:
    definition = saga("ending", [step("a")])
    object.__setattr__(definition, "initial_data", _raise)
    return Driver(definition)


PATHS = {
    "completed": Path(_completed, "completed", None),
    "first step fails, nothing to undo": Path(
        _refused_first, "compensated", "step a failed: tests.constructs.refused.v1: nope"
    ),
    "compensated": Path(
        _compensated, "compensated", "step b failed: tests.constructs.refused.v1: nope"
    ),
    "compensation fails": Path(
        _compensation_fails,
        "failed",
        "compensation of step a failed: no reply to step a within 30s",
    ),
    "cancelled while it waits for its locks": Path(
        _cancelled_waiting, "compensated", "halted", _locking
    ),
    "cancelled by a reaction": Path(_cancelled, "compensated", "halted"),
    "cancelled by its cancel event": Path(_cancel_event, "compensated", "asked to"),
    "saga code raises mid-run": Path(
        _code_raises_mid_run,
        "failed",
        "saga code raised on tests.constructs.done.v1: RuntimeError: boom",
        _raising_on_reply,
    ),
    "saga code raises at the start": Path(
        _code_raises_at_start,
        "failed",
        "saga code raised on tests.constructs.begun.v1: RuntimeError: boom",
        _raising_at_start,
    ),
}


@pytest.mark.parametrize("name", sorted(PATHS))
def test_every_final_path_sends_one_end_event(name: str) -> None:
    path = PATHS[name]
    driver = path.driver()
    path.run(driver)
    assert driver.saga.status == path.status
    [ended] = driver.ends()
    assert ended.message_type == f"saga.ending.{path.status}.v1"
    assert (ended.status, ended.reason) == (path.status, path.reason)
    assert (ended.saga_id, ended.correlation_id) == (driver.saga.saga_id, KEY)
    assert ended.started_by == StartedBy(message_id="m-1", correlation_id="parent-corr")
    [out] = [o for o in driver.sent if o.payload is ended]
    assert out.message_id == str(uuid.uuid5(ID_NAMESPACE, f"end:{driver.saga.saga_id}"))
    # the end event is the last thing the saga sends; what comes after changes nothing
    assert driver.sent[-1] is out
    answered = [r.command_id for r in driver.saga.steps] + ["unknown"]
    for late in (Done(), Refused(), Undone()):
        for command_id in answered:
            assert driver.apply(Inbound(driver.next_id(), late, KEY, command_id)).send == ()
    assert driver.event(Halted(key=KEY)).send == ()
    assert driver.start().send == ()
    assert len(driver.ends()) == 1


def test_a_saga_without_a_correlation_attribute_names_only_its_start_event() -> None:
    driver = _two_steps()
    driver.start()
    driver.reply("a", Refused())
    [ended] = driver.ends()
    assert ended.started_by == StartedBy(message_id="m-1")


# -- branches ---------------------------------------------------------------------------


def _branching(route: str | None) -> Driver:
    a = step("a")
    branching = Step(
        name="a",
        command=a.command,
        sends=a.sends,
        succeeds_on=(Done,),
        next=lambda d, r: route,
        branches=("c", END),
    )
    return Driver(saga("branching", [branching, step("b"), step("c")]))


@pytest.mark.parametrize(
    ("route", "sent"),
    [
        ("c", ["tests.constructs.do_c.v1"]),
        (None, ["tests.constructs.do_b.v1"]),
        (END, ["saga.branching.completed.v1"]),
    ],
)
def test_next_picks_one_of_its_branches(route: str | None, sent: list[str]) -> None:
    driver = _branching(route)
    driver.start()
    assert driver.types(driver.reply("a", Done())) == sent


@pytest.mark.parametrize("route", ["b", "nowhere"])
def test_next_picking_a_step_outside_its_branches_fails_the_saga(route: str) -> None:
    driver = _branching(route)
    driver.start()
    decision = driver.reply("a", Done())
    assert driver.saga.status is SagaStatus.FAILED
    expected = (
        f"saga code raised on tests.constructs.done.v1: DefinitionError: step a: "
        f"next returned {route!r}, not one of its branches ['c', '__end__']"
    )
    assert driver.saga.failure == expected
    assert driver.types(decision) == ["saga.branching.failed.v1"]


def test_an_undeclared_branch_to_an_unknown_step_fails_the_saga() -> None:
    a = step("a")
    branching = Step(name="a", command=a.command, succeeds_on=(Done,), next=lambda d, r: "nowhere")
    driver = Driver(saga("branching", [branching, step("b")]))
    driver.start()
    driver.reply("a", Done())
    assert driver.saga.status is SagaStatus.FAILED
    assert driver.saga.failure is not None and "no step 'nowhere'" in driver.saga.failure


def test_a_reply_to_a_command_it_declares_elsewhere_is_no_start() -> None:
    """A reply of a type the saga knows, for no saga: ignored, no end event."""
    driver = _two_steps()
    decision = driver.apply(Inbound("x", Done(), KEY, "nothing"))
    assert decision.instance is None and decision.send == ()
