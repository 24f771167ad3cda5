"""`sagas diagram` for the whole saga language: retries, waits, child sagas, parallel groups,
locks and the cancel event, each on a small definition of its own, read back by the
flowchart reader of ``tests/unit/flowchart.py``."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from bus_orchestrator.core import (
    END,
    Command,
    Compensate,
    Event,
    Reaction,
    Reply,
    RetryOn,
    SagaDefinition,
    Step,
)
from bus_orchestrator.core.definition import Child, Parallel, Wait
from bus_orchestrator.diagram import diagram
from tests.unit.flowchart import parse


class Opened(Event):
    message_type: ClassVar[str] = "t.opened.v1"
    customer_id: str


class Moved(Event):
    message_type: ClassVar[str] = "t.moved.v1"
    customer_id: str


class Signed(Event):
    message_type: ClassVar[str] = "t.signed.v1"
    customer_id: str


class KycRequested(Event):
    message_type: ClassVar[str] = "kyc.requested.v1"
    customer_id: str


def _command(name: str) -> type[Command]:
    return type(name, (Command,), {"message_type": f"t.{name.lower()}.v1", "__module__": __name__})


def _reply(name: str) -> type[Reply]:
    return type(name, (Reply,), {"message_type": f"t.{name.lower()}.v1", "__module__": __name__})


Score, Scored, Refused, Busy = (
    _command("Score"),
    _reply("Scored"),
    _reply("Refused"),
    _reply("Busy"),
)
Hold, Held, Unhold, Unheld = _command("Hold"), _reply("Held"), _command("Unhold"), _reply("Unheld")
Book, Booked, Unbook, Unbooked = (
    _command("Book"),
    _reply("Booked"),
    _command("Unbook"),
    _reply("Unbooked"),
)
Notify, Notified = _command("Notify"), _reply("Notified")
Forget, Forgotten = _command("Forget"), _reply("Forgotten")
Activate, Activated, Close, Closed = (
    _command("Activate"),
    _reply("Activated"),
    _command("Close"),
    _reply("Closed"),
)


class Data(BaseModel):
    customer_id: str
    score: int = 0


def command(
    name: str,
    sends: type[Command],
    succeeds_on: type[Reply],
    undo: tuple[type[Command], type[Reply]] | None = None,
    **more: Any,
) -> Step[Data, Any]:
    """A step named ``name`` sending ``sends``, undone by ``undo`` when given."""
    compensation: dict[str, Any] = {}
    if undo is not None:
        compensation = {
            "compensation": lambda d: undo[0](),
            "compensation_sends": undo[0],
            "compensated_on": (undo[1],),
        }
    return Step(
        name=name,
        command=lambda d: sends(),
        sends=sends,
        succeeds_on=(succeeds_on,),
        **compensation,
        **more,
    )


def signed(timeout: timedelta = timedelta(days=2)) -> Wait[Data, Signed]:
    return Wait(name="signed", event=Signed, correlate=lambda e: e.customer_id, timeout=timeout)


def verify(**more: Any) -> Child[Data]:
    return Child(
        name="verify",
        saga="kyc",
        start=lambda d: KycRequested(customer_id=d.customer_id),
        starts=KycRequested,
        correlation=lambda d: d.customer_id,
        **more,
    )


def saga(*steps: Any, **more: Any) -> SagaDefinition[Data, Opened]:
    return SagaDefinition(
        name="onboarding",
        data_model=Data,
        started_by=Opened,
        correlate=lambda e: e.customer_id,
        initial_data=lambda e: Data(customer_id=e.customer_id),
        steps=steps,
        **more,
    )


def _route(data: Data, reply: Reply) -> str | None:
    return END if data.score < 0 else "checks"


HOLD = command("hold", Hold, Held, undo=(Unhold, Unheld))
RETRYING = saga(
    command(
        "score",
        Score,
        Scored,
        fails_on=(Refused,),
        retry=RetryOn(transient=(Busy,), attempts=4, backoff=timedelta(seconds=2)),
        timeout=timedelta(seconds=20),
    ),
    HOLD,
)
ONLY_TRANSIENT = saga(command("score", Score, Scored, retry=RetryOn(transient=(Busy,))))
WAITING = saga(HOLD, signed(), command("activate", Activate, Activated))
FIRST_WAIT = saga(signed(timedelta(hours=36)), HOLD)
CHILD = saga(
    HOLD,
    verify(
        timeout=timedelta(hours=1),
        compensation=lambda d: Forget(),
        compensation_sends=Forget,
        compensated_on=(Forgotten,),
    ),
)
PLAIN_CHILD = saga(HOLD, verify(), command("activate", Activate, Activated))
PARALLEL = saga(
    HOLD,
    Parallel(
        "checks",
        [
            command("reserve", Score, Scored, undo=(Close, Closed)),
            command("book", Book, Booked, undo=(Unbook, Unbooked)),
            signed(),
            command("notify", Notify, Notified),
        ],
    ),
    command("activate", Activate, Activated),
)
UNDONE_BY_ONE = saga(
    Parallel("checks", [command("book", Book, Booked, undo=(Unbook, Unbooked)), signed()])
)
NOTHING_TO_UNDO = saga(Parallel("checks", [command("notify", Notify, Notified), signed()]))
LOCKED = saga(HOLD, locks=("customer:{customer_id}",))
EVERYTHING = saga(
    command(
        "score",
        Score,
        Scored,
        fails_on=(Refused,),
        retry=RetryOn(transient=(Busy,), attempts=3),
        next=_route,
        branches=("checks", END),
    ),
    Parallel(
        "checks",
        [
            HOLD,
            verify(compensation=lambda d: Forget(), compensated_on=(Forgotten,)),
            signed(),
        ],
    ),
    command("activate", Activate, Activated, undo=(Close, Closed)),
    reactions=[
        Reaction(Moved, correlate=lambda e: e.customer_id, react=lambda d, e: Compensate("moved"))
    ],
    locks=("customer:{customer_id}",),
)

NODES = [
    # (definition, node, shape, label)
    (RETRYING, "step_score", "square", "score<br/>t.score.v1"),
    (WAITING, "step_signed", "lean_right", "signed<br/>waits for t.signed.v1"),
    (CHILD, "step_verify", "subroutine", "verify<br/>child saga kyc<br/>kyc.requested.v1"),
    (CHILD, "undo_verify", "square", "undo verify<br/>t.forget.v1"),
    (PARALLEL, "fork_checks", "hexagon", "checks: all start"),
    (PARALLEL, "join_checks", "hexagon", "checks: all succeeded"),
    (PARALLEL, "step_signed", "lean_right", "signed<br/>waits for t.signed.v1"),
    (LOCKED, "start", "round", "t.opened.v1<br/>holds customer:{customer_id}"),
    (WAITING, "start", "round", "t.opened.v1"),
    (WAITING, "cancel", "diamond", "saga.onboarding.cancel_requested.v1"),
    (EVERYTHING, "reaction_0", "diamond", "t.moved.v1"),
]


@pytest.mark.parametrize(("definition", "node", "shape", "label"), NODES)
def test_each_construct_has_its_node(
    definition: SagaDefinition[Any, Any], node: str, shape: str, label: str
) -> None:
    chart = parse(diagram(definition))
    assert (chart.shapes[node], chart.nodes[node]) == (shape, label)


RETRY = "retry on t.busy.v1<br/>4 attempts, backoff 2s doubling, at most 5min"
EDGES = [
    # (definition, source, every (label, target) leaving it)
    pytest.param(
        RETRYING,
        "step_score",
        {
            ("t.scored.v1", "step_hold"),
            (RETRY, "step_score"),  # a self-loop: the retry
            ("t.refused.v1<br/>t.busy.v1 on attempt 4", "compensated"),
            ("timeout 20s", "compensated"),
        },
        id="retry loops back, its transient replies fail the last attempt",
    ),
    pytest.param(
        ONLY_TRANSIENT,
        "step_score",
        {
            ("t.scored.v1", "completed"),
            ("retry on t.busy.v1<br/>3 attempts, backoff 1s doubling, at most 5min", "step_score"),
            ("t.busy.v1 on attempt 3", "compensated"),
            ("timeout 1min", "compensated"),
        },
        id="retry without other failures",
    ),
    pytest.param(
        WAITING,
        "step_signed",
        {("t.signed.v1", "step_activate"), ("timeout 2d", "undo_hold")},
        id="a wait leads on with its event; its timeout undoes what came before",
    ),
    pytest.param(
        FIRST_WAIT,
        "step_signed",
        {("t.signed.v1", "step_hold"), ("timeout 36h", "compensated")},
        id="a first wait has nothing before it to undo",
    ),
    pytest.param(
        CHILD,
        "step_verify",
        {
            ("saga.kyc.completed.v1", "completed"),
            ("saga.kyc.compensated.v1 or saga.kyc.failed.v1", "undo_hold"),
            ("timeout 1h, cancels the child", "undo_verify"),  # it may have completed
        },
        id="a child's end events, and its timeout to its own compensation",
    ),
    pytest.param(
        PLAIN_CHILD,
        "step_verify",
        {
            ("saga.kyc.completed.v1", "step_activate"),
            ("saga.kyc.compensated.v1 or saga.kyc.failed.v1", "undo_hold"),
            ("timeout 1h, cancels the child", "undo_hold"),
        },
        id="a child without compensation",
    ),
    pytest.param(
        PARALLEL,
        "step_hold",
        {("t.held.v1", "fork_checks"), ("timeout 1min", "undo_hold")},
        id="the stage before a group leads to its fork",
    ),
    pytest.param(
        PARALLEL,
        "fork_checks",
        {("", "step_reserve"), ("", "step_book"), ("", "step_signed"), ("", "step_notify")},
        id="the fork starts every member",
    ),
    pytest.param(
        PARALLEL,
        "step_reserve",
        {
            ("t.scored.v1", "join_checks"),
            ("timeout 1min", "undoing_checks"),
        },
        id="a member's success leads to the join",
    ),
    pytest.param(
        PARALLEL,
        "step_signed",
        {("t.signed.v1", "join_checks"), ("timeout 2d", "undoing_checks")},
        id="a wait in a group: the others may have succeeded",
    ),
    pytest.param(
        PARALLEL,
        "join_checks",
        {("", "step_activate")},
        id="the join leads on",
    ),
    pytest.param(
        UNDONE_BY_ONE,
        "step_book",
        {("t.booked.v1", "join_checks"), ("timeout 1min", "undoing_checks")},
        id="a member that may have been done is undone in the group",
    ),
    pytest.param(
        UNDONE_BY_ONE,
        "step_signed",
        {("t.signed.v1", "join_checks"), ("timeout 2d", "undoing_checks")},
        id="a member whose sibling is undoable leads into the group's compensation",
    ),
    pytest.param(
        UNDONE_BY_ONE,
        "join_checks",
        {("", "completed")},
        id="a group last: its join completes the saga",
    ),
    pytest.param(
        NOTHING_TO_UNDO,
        "step_notify",
        {("t.notified.v1", "join_checks"), ("timeout 1min", "compensated")},
        id="a group with nothing to undo",
    ),
    pytest.param(
        EVERYTHING,
        "step_score",
        {
            ("t.scored.v1", "fork_checks"),  # a branch may lead to a group
            ("t.scored.v1", "completed"),
            ("retry on t.busy.v1<br/>3 attempts, backoff 1s doubling, at most 5min", "step_score"),
            ("t.refused.v1<br/>t.busy.v1 on attempt 3", "compensated"),
            ("timeout 1min", "compensated"),
        },
        id="a branch to a group, with a retry",
    ),
    pytest.param(
        EVERYTHING,
        "step_hold",
        {
            ("t.held.v1", "join_checks"),
            ("timeout 1min", "undoing_checks"),
        },
        id="members of a group",
    ),
    pytest.param(
        EVERYTHING,
        "step_verify",
        {
            ("saga.kyc.completed.v1", "join_checks"),
            ("saga.kyc.compensated.v1 or saga.kyc.failed.v1", "undoing_checks"),
            ("timeout 1h, cancels the child", "undoing_checks"),
        },
        id="a child in a group",
    ),
    pytest.param(
        EVERYTHING,
        "step_activate",
        {
            ("t.activated.v1", "completed"),
            ("timeout 1min", "undo_activate"),
        },
        id="after a group",
    ),
    pytest.param(
        LOCKED,
        "start",
        {("", "step_hold")},
        id="locks are a label of the start",
    ),
    pytest.param(
        LOCKED,
        "cancel",
        {("compensates", "compensation")},
        id="cancel compensates",
    ),
    pytest.param(
        NOTHING_TO_UNDO,
        "cancel",
        {("compensates", "compensated")},
        id="cancel with nothing to undo",
    ),
    pytest.param(
        EVERYTHING,
        "reaction_0",
        {("may compensate", "compensation")},
        id="a reaction may compensate",
    ),
]


@pytest.mark.parametrize(("definition", "source", "expected"), EDGES)
def test_each_construct_has_its_edges(
    definition: SagaDefinition[Any, Any], source: str, expected: set[tuple[str, str]]
) -> None:
    assert parse(diagram(definition)).edges_from(source) == expected


def test_a_member_that_fails_leads_to_what_its_siblings_did() -> None:
    """A failure is no reason to undo the failed step, only its siblings and what came
    before: a member whose siblings have nothing to undo leads past the group."""
    chart = parse(diagram(PARALLEL))
    assert chart.edges_from("step_notify") == {
        ("t.notified.v1", "join_checks"),
        ("timeout 1min", "undoing_checks"),
    }
    lone = dataclasses.replace(
        UNDONE_BY_ONE,
        steps=(
            HOLD,
            Parallel(
                "checks",
                [
                    command("book", Book, Booked, fails_on=(Refused,), undo=(Unbook, Unbooked)),
                    signed(),
                ],
            ),
        ),
    )
    assert parse(diagram(lone)).edges_from("step_book") == {
        ("t.booked.v1", "join_checks"),
        ("t.refused.v1", "undo_hold"),  # its sibling, a wait, has nothing to undo
        ("timeout 1min", "undoing_checks"),  # it may have been done itself
    }


SUBGRAPHS = [
    # (definition, subgraph, title, what it holds, in order)
    (
        PARALLEL,
        "group_checks",
        "checks, in parallel",
        ["fork_checks", "step_reserve", "step_book", "step_signed", "step_notify", "join_checks"],
    ),
    (
        PARALLEL,
        "compensation",
        "compensation, in reverse order",
        ["undoing_checks", "undo_hold"],
    ),
    (
        PARALLEL,
        "undoing_checks",
        "undo checks: what succeeded, in reverse",
        ["undo_book", "undo_reserve"],  # the reverse of the declaration order
    ),
    (
        EVERYTHING,
        "compensation",
        "compensation, in reverse order",
        ["undo_activate", "undoing_checks"],
    ),
    (
        EVERYTHING,
        "undoing_checks",
        "undo checks: what succeeded, in reverse",
        ["undo_verify", "undo_hold"],
    ),
]


@pytest.mark.parametrize(("definition", "subgraph", "title", "members"), SUBGRAPHS)
def test_groups_and_compensations_are_subgraphs(
    definition: SagaDefinition[Any, Any], subgraph: str, title: str, members: list[str]
) -> None:
    chart = parse(diagram(definition))
    assert chart.subgraphs[subgraph] == title
    assert chart.members[subgraph] == members


def test_the_undo_chain_runs_in_reverse_declaration_order_through_groups() -> None:
    chart = parse(diagram(PARALLEL))
    chain = [(s, label, t) for s, arrow, label, t in chart.edges if arrow == "-.->"]
    assert chain == [
        ("undo_book", "t.unbooked.v1", "undo_reserve"),
        ("undo_book", "timeout 1min, 3 attempts", "failed"),
        ("undo_reserve", "t.closed.v1", "undo_hold"),
        ("undo_reserve", "timeout 1min, 3 attempts", "failed"),
        ("undo_hold", "t.unheld.v1", "compensated"),
        ("undo_hold", "timeout 1min, 3 attempts", "failed"),
        ("cancel", "compensates", "compensation"),
    ]


def test_no_subgraph_is_drawn_for_a_group_with_nothing_to_undo() -> None:
    chart = parse(diagram(NOTHING_TO_UNDO))
    assert set(chart.subgraphs) == {"group_checks"}
    assert chart.inside("group_checks") == {
        "fork_checks",
        "step_notify",
        "step_signed",
        "join_checks",
    }


def test_the_whole_language_draws_the_same_text_every_time() -> None:
    text = diagram(EVERYTHING)
    assert diagram(EVERYTHING) == text
    rebuilt = dataclasses.replace(EVERYTHING, steps=tuple(EVERYTHING.steps))
    assert diagram(rebuilt) == text
    chart = parse(text)
    assert chart.comments == ["saga onboarding, version 1"]
    # every step is drawn once, every compensation once
    steps = {f"step_{s.name}" for s in EVERYTHING.all_steps()}
    assert steps <= set(chart.nodes)
    assert {n for n in chart.nodes if n.startswith("undo_")} == {
        "undo_hold",
        "undo_verify",
        "undo_activate",
    }


def test_a_suspending_step_leads_to_an_operator_not_to_compensation() -> None:
    from tests.e2e.payouts import payout_saga

    text = diagram(payout_saga())
    assert 'step_transfer -->|"timeout 2s"| step_transfer_suspended' in text
    assert 'step_transfer_suspended -.->|"retry"| step_transfer' in text
    assert 'step_transfer_suspended -.->|"abort"| undo_debit' in text
    # the other steps still compensate
    assert 'step_check_payee -->|"payouts.payee_rejected.v1"| undo_debit' in text
