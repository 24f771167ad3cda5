"""Versioned definitions: each saga continues on the version it started on, new sagas start
on the newest, and a coordinator without a version its running sagas need says so."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
from pydantic import BaseModel

from bus_orchestrator.app import App
from bus_orchestrator.core import Command, Event, Reply, SagaDefinition, SagaStatus, Step
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.runtime.service import missing_versions
from bus_orchestrator.store.postgres import RunningVersion
from bus_orchestrator.testing import SagaHarness
from bus_orchestrator.testing.bus import raw_message
from bus_orchestrator.transport.consumer import Verdict
from bus_orchestrator.views import saga_view


class Applied(Event):
    message_type: ClassVar[str] = "versions.applied.v1"
    applicant: str


class AppliedAgain(Event):
    message_type: ClassVar[str] = "versions.applied.v2"
    applicant: str


class Score(Command):
    message_type: ClassVar[str] = "versions.score.v1"
    applicant: str


class Scored(Reply):
    message_type: ClassVar[str] = "versions.scored.v1"


class Review(Command):
    message_type: ClassVar[str] = "versions.review.v1"
    applicant: str


class Reviewed(Reply):
    message_type: ClassVar[str] = "versions.reviewed.v1"


class Welcome(Command):
    message_type: ClassVar[str] = "versions.welcome.v1"
    applicant: str


class Welcomed(Reply):
    message_type: ClassVar[str] = "versions.welcomed.v1"


class Data(BaseModel):
    applicant: str


def _score() -> Step[Data]:
    return Step(
        name="score",
        command=lambda d: Score(applicant=d.applicant),
        succeeds_on=(Scored,),
        sends=Score,
    )


def _welcome() -> Step[Data]:
    return Step(
        name="welcome",
        command=lambda d: Welcome(applicant=d.applicant),
        succeeds_on=(Welcomed,),
        sends=Welcome,
    )


V1 = SagaDefinition(
    name="signup",
    data_model=Data,
    started_by=Applied,
    correlate=lambda e: e.applicant,
    initial_data=lambda e: Data(applicant=e.applicant),
    steps=(_score(), _welcome()),
)
# Version 2 renames the first step and adds a review before the welcome.
V2 = dataclasses.replace(
    V1,
    version=2,
    steps=(
        dataclasses.replace(_score(), name="rate"),
        Step(
            name="review",
            command=lambda d: Review(applicant=d.applicant),
            succeeds_on=(Reviewed,),
            sends=Review,
        ),
        _welcome(),
    ),
)
REPLIES: dict[str, Reply] = {
    Score.message_type: Scored(),
    Review.message_type: Reviewed(),
    Welcome.message_type: Welcomed(),
}


async def _answer_all(harness: SagaHarness, correlation_id: str, answered: set[str]) -> None:
    """Answer every command of one saga not answered yet, until it sends no more."""
    while True:
        await harness.run_until_idle()
        todo = [
            c
            for c in harness.commands
            if c.correlation_id == correlation_id and c.message_id not in answered
        ]
        if not todo:
            return
        for command in todo:
            answered.add(command.message_id)
            await harness.answer(command, REPLIES[command.message_type])


async def test_old_sagas_finish_on_their_version_while_new_ones_start_on_the_newest() -> None:
    before = SagaHarness(App("versions", sagas=[V1]), adapters=False)
    await before.publish(Applied(applicant="old"))
    await before.run_until_idle()
    old = await before.saga("old")
    assert old.definition_version == 1 and [s.name for s in old.steps] == ["score"]
    sent_before = before.commands
    assert [c.message_type for c in sent_before] == [Score.message_type]

    # The new release registers both versions, on the same database.
    after = SagaHarness(App("versions", sagas=[V1, V2]), adapters=False, store=before.store)
    await after.publish(Applied(applicant="new"), message_id="applied-new")
    await _answer_all(after, "new", set())
    await after.answer(sent_before[0], Scored())
    await _answer_all(after, "old", set())

    old, new = await after.saga("old"), await after.saga("new")
    assert (old.definition_version, old.status) == (1, SagaStatus.COMPLETED)
    assert [s.name for s in old.steps] == ["score", "welcome"]
    assert (new.definition_version, new.status) == (2, SagaStatus.COMPLETED)
    assert [s.name for s in new.steps] == ["rate", "review", "welcome"]
    assert saga_view(old)["definition_version"] == 1  # what `sagas show` prints
    assert after.dead_letters == []  # (commands are unroutable: no adapters here)


async def test_a_saga_whose_version_is_missing_is_requeued_not_decided() -> None:
    before = SagaHarness(App("versions", sagas=[V1]), adapters=False)
    await before.publish(Applied(applicant="old"))
    await before.run_until_idle()
    (score,) = before.commands

    only_new = SagaHarness(App("versions", sagas=[V2]), adapters=False, store=before.store)
    reply = only_new.message(
        Scored(), correlation_id="old", causation_id=score.message_id, message_id="r-1"
    )
    verdict = await only_new.coordinator.handle(raw_message(reply))
    assert verdict is Verdict.REQUEUE
    saga = await only_new.saga("old")
    assert saga.status is SagaStatus.RUNNING and saga.steps[0].finished_at is None


def test_stored_state_without_a_definition_version_reads_as_version_1() -> None:
    from bus_orchestrator.core.state import SagaInstance

    stored = SagaInstance.model_validate(
        {
            "saga_id": "s",
            "saga_type": "signup",
            "correlation_id": "c",
            "status": "running",
            "version": 3,
            "data": {},
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
    )
    assert stored.definition_version == 1


def test_an_app_takes_several_versions_of_a_name_but_not_one_version_twice() -> None:
    app = App("versions", sagas=[V2, V1])
    assert app.saga("signup").version == 2
    assert app.saga("signup", 1) is V1
    assert app.newest_sagas == [V2]
    with pytest.raises(DefinitionError, match="name and version must be unique"):
        App("versions", sagas=[V1, V1])
    with pytest.raises(DefinitionError, match="has no version 3"):
        app.saga("signup", 3)
    with pytest.raises(DefinitionError, match="has no saga 'nope'"):
        app.saga("nope")
    with pytest.raises(DefinitionError, match="version must be at least 1"):
        dataclasses.replace(V1, version=0)


async def test_an_event_that_only_an_older_version_starts_on_starts_no_saga() -> None:
    v2_new_start = dataclasses.replace(V2, started_by=AppliedAgain)
    harness = SagaHarness(App("versions", sagas=[V1, v2_new_start]), adapters=False)
    assert Applied.message_type in {key for _, key in harness.coordinator.bindings()}
    await harness.publish(Applied(applicant="old-style"))
    await harness.publish(AppliedAgain(applicant="new-style"))
    await harness.run_until_idle()
    assert (await harness.saga("new-style")).definition_version == 2
    assert await harness.store.find("old-style") == []
    (entry,) = await harness.history("old-style")
    assert entry.outcome == "ignored"
    assert entry.note == (
        "versions.applied.v1 starts signup only in version 1; version 2, which starts new "
        "sagas, does not take it"
    )
    assert harness.dead_letters == []


async def test_the_harness_finds_a_history_by_saga_name_with_two_versions() -> None:
    harness = SagaHarness(App("versions", sagas=[V1, V2]), adapters=False)
    # the saga type is not asked for: the app's one saga name, registered twice, is it
    assert [e.message_type for e in await harness.history("never-started")] == []


def test_contracts_name_each_saga_once_whatever_its_versions() -> None:
    from bus_orchestrator.schema.participants import participants_from

    coordinator = participants_from([V1, V2], [])[0]
    assert "(runs signup)" in coordinator.description
    assert Reviewed in coordinator.receives and Review in coordinator.sends


def test_the_coordinator_binds_every_versions_messages() -> None:
    harness = SagaHarness(App("versions", sagas=[V1, V2]), adapters=False)
    bound = {key for _, key in harness.coordinator.bindings()}
    assert {Applied.message_type, Scored.message_type, Reviewed.message_type} <= bound


@pytest.mark.parametrize(
    ("running", "message"),
    [
        ([RunningVersion("signup", 2, 1, ("a",))], None),
        (
            [RunningVersion("signup", 1, 3, ("a", "b", "c"))],
            "saga signup version 1 is needed by 3 running sagas (ids a, b, c) and this app "
            "has only version 2",
        ),
        (
            [RunningVersion("signup", 1, 7, ("a", "b", "c", "d", "e"))],
            "saga signup version 1 is needed by 7 running sagas (ids a, b, c, d, e ...) and "
            "this app has only version 2",
        ),
    ],
)
def test_the_start_up_refusal_names_the_sagas_and_versions(
    running: list[RunningVersion], message: str | None
) -> None:
    found = missing_versions(running, [V2])
    if message is None:
        assert found is None
    else:
        assert found is not None and found.startswith(message)
        assert "\n" not in found
