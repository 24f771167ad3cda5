"""Branches, forward resends, data reactions and definition checks, on a small test saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from pydantic import BaseModel

from bus_orchestrator.core import (
    END,
    Command,
    Event,
    Inbound,
    Outcome,
    Reaction,
    Reply,
    SagaDefinition,
    SagaStatus,
    Step,
    TimerFired,
    decide,
)
from bus_orchestrator.errors import DefinitionError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Applied(Event):
    message_type: ClassVar[str] = "tests.applied.v1"
    applicant: str


class NoteAdded(Event):
    message_type: ClassVar[str] = "tests.note_added.v1"
    applicant: str
    note: str


class Score(Command):
    message_type: ClassVar[str] = "tests.score.v1"
    applicant: str


class Scored(Reply):
    message_type: ClassVar[str] = "tests.scored.v1"
    score: int


class Review(Command):
    message_type: ClassVar[str] = "tests.review.v1"
    applicant: str


class Reviewed(Reply):
    message_type: ClassVar[str] = "tests.reviewed.v1"


class Welcome(Command):
    message_type: ClassVar[str] = "tests.welcome.v1"
    applicant: str


class Welcomed(Reply):
    message_type: ClassVar[str] = "tests.welcomed.v1"


class Data(BaseModel):
    applicant: str
    score: int | None = None
    notes: tuple[str, ...] = ()


def _route(data: Data, reply: Reply) -> str | None:
    assert isinstance(reply, Scored)
    if reply.score < 0:
        return END
    return "welcome" if reply.score >= 50 else None  # None: the next step, "review"


def _keep_score(data: Data, reply: Reply) -> Data:
    return data.model_copy(update={"score": reply.score}) if isinstance(reply, Scored) else data


SAGA = SagaDefinition(
    name="onboarding",
    data_model=Data,
    started_by=Applied,
    correlate=lambda e: e.applicant,
    initial_data=lambda e: Data(applicant=e.applicant),
    steps=(
        Step(
            name="score",
            command=lambda d: Score(applicant=d.applicant),
            succeeds_on=(Scored,),
            on_reply=_keep_score,
            next=_route,
            timeout=timedelta(seconds=5),
            max_attempts=2,
        ),
        Step(
            name="review", command=lambda d: Review(applicant=d.applicant), succeeds_on=(Reviewed,)
        ),
        Step(
            name="welcome",
            command=lambda d: Welcome(applicant=d.applicant),
            succeeds_on=(Welcomed,),
        ),
    ),
    reactions=(
        Reaction(
            NoteAdded,
            correlate=lambda e: e.applicant,
            react=lambda d, e: d.model_copy(update={"notes": (*d.notes, e.note)}),
        ),
    ),
)


def start():  # type: ignore[no-untyped-def]
    return decide(SAGA, None, Inbound("a", Applied(applicant="ann"), "ann"), T0)


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (80, ["tests.score.v1", "tests.welcome.v1"]),
        (10, ["tests.score.v1", "tests.review.v1"]),
        (-1, ["tests.score.v1", "saga.onboarding.completed.v1"]),  # no next step: it ends
    ],
)
def test_branch_picks_the_next_step_from_reply_data(score: int, expected: list[str]) -> None:
    started = start()
    instance = started.instance
    assert instance is not None
    reply = Inbound("r", Scored(score=score), "ann", instance.pending_command_id)
    after = decide(SAGA, instance, reply, T0)
    assert [o.payload.message_type for o in (*started.send, *after.send)] == expected
    assert after.instance is not None and after.instance.data["score"] == score
    if score < 0:
        assert after.instance.status is SagaStatus.COMPLETED


def test_forward_step_is_resent_with_the_same_id_before_it_times_out() -> None:
    started = start()
    instance = started.instance
    assert instance is not None and instance.deadline is not None
    assert instance.pending_command_id is not None
    timer = TimerFired(instance.saga_id, instance.pending_command_id, instance.deadline)
    resent = decide(SAGA, instance, timer, instance.deadline)
    assert resent.send[0].message_id == started.send[0].message_id
    assert resent.instance is not None and resent.instance.steps[0].attempts == 2
    # the same timer again (a second coordinator) is stale now: the deadline moved
    assert decide(SAGA, resent.instance, timer, instance.deadline).outcome is Outcome.IGNORED
    assert resent.instance.deadline is not None
    last = TimerFired(instance.saga_id, instance.pending_command_id, resent.instance.deadline)
    gave_up = decide(SAGA, resent.instance, last, resent.instance.deadline)
    # no compensation on this step: nothing to undo, the saga ends compensated
    assert gave_up.instance is not None and gave_up.instance.status is SagaStatus.COMPENSATED
    # no command goes out, only the saga's end
    assert [o.payload.message_type for o in gave_up.send] == ["saga.onboarding.compensated.v1"]


def test_reaction_can_update_the_data() -> None:
    instance = start().instance
    decision = decide(
        SAGA, instance, Inbound("n", NoteAdded(applicant="ann", note="vip"), "ann"), T0
    )
    assert decision.outcome is Outcome.ADVANCED
    assert decision.instance is not None and decision.instance.data["notes"] == ["vip"]


@pytest.mark.parametrize(
    ("label", "steps"),
    [
        ("no steps", ()),
        (
            "duplicate names",
            (
                Step(name="a", command=lambda d: Review(applicant=""), succeeds_on=(Reviewed,)),
                Step(name="a", command=lambda d: Review(applicant=""), succeeds_on=(Reviewed,)),
            ),
        ),
        (
            "no success reply",
            (Step(name="a", command=lambda d: Review(applicant=""), succeeds_on=()),),
        ),
        (
            "compensation without a confirming reply",
            (
                Step(
                    name="a",
                    command=lambda d: Review(applicant=""),
                    succeeds_on=(Reviewed,),
                    compensation=lambda d: Review(applicant=""),
                ),
            ),
        ),
    ],
)
def test_inconsistent_definitions_are_refused(label: str, steps: tuple[Step[Data], ...]) -> None:
    with pytest.raises(DefinitionError):
        SagaDefinition(
            name="bad",
            data_model=Data,
            started_by=Applied,
            correlate=lambda e: e.applicant,
            initial_data=lambda e: Data(applicant=e.applicant),
            steps=steps,
        )


class AppliedV2(Event):
    message_type: ClassVar[str] = "tests.applied.v2"
    applicant: str
    channel: str


def test_a_saga_can_be_started_by_two_versions_of_its_event() -> None:
    both = SagaDefinition(
        name="onboarding2",
        data_model=Data,
        started_by=(Applied, AppliedV2),
        correlate=lambda e: e.applicant,
        initial_data=lambda e: Data(applicant=e.applicant),
        steps=SAGA.steps[1:2],
    )
    for event in (Applied(applicant="a"), AppliedV2(applicant="b", channel="web")):
        decision = decide(both, None, Inbound("x", event, event.applicant), T0)
        assert decision.outcome is Outcome.STARTED
    # its starts, and the engine's request to cancel it
    assert both.event_types() == {
        "tests.applied.v1",
        "tests.applied.v2",
        "saga.onboarding2.cancel_requested.v1",
    }


def test_a_step_that_builds_another_command_than_it_declares_is_caught() -> None:
    wrong = SagaDefinition(
        name="wrong",
        data_model=Data,
        started_by=Applied,
        correlate=lambda e: e.applicant,
        initial_data=lambda e: Data(applicant=e.applicant),
        steps=(
            Step(
                name="review",
                command=lambda d: Welcome(applicant=d.applicant),
                succeeds_on=(Reviewed,),
                sends=Review,
            ),
        ),
    )
    decision = decide(wrong, None, Inbound("x", Applied(applicant="a"), "a"), T0)
    # the saga exists, stopped for an operator, with the definition's mistake as the reason
    assert decision.outcome is Outcome.FAILED and isinstance(decision.error, DefinitionError)
    assert decision.instance is not None and decision.instance.status is SagaStatus.FAILED
    assert "declares it sends tests.review.v1" in (decision.instance.failure or "")
    # the wrong command is not sent; the saga's end is
    assert [o.payload.message_type for o in decision.send] == ["saga.wrong.failed.v1"]
