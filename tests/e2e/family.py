"""Two apps whose sagas are parent and child, for running in separate processes.

``enrolment`` (app ``parents``) reserves a seat, then starts a ``background_check`` saga
(app ``checks``) as a child and waits for its end. The check runs the subject through a
checker adapter, then waits for a reviewer's verdict event. A withdrawn enrolment cancels
the check while it waits. Only the engine's public API is used.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from bus_orchestrator.adapters import Adapter, CommandContext
from bus_orchestrator.app import App
from bus_orchestrator.core import Compensate, Reaction, SagaDefinition, Step
from bus_orchestrator.core.definition import Child, Wait
from bus_orchestrator.core.messages import Command, Event, Reply

Id = Annotated[str, Field(min_length=1, max_length=200)]
TIMEOUT = timedelta(seconds=60)


class EnrolmentRequested(Event):
    message_type = "family.enrolment_requested.v1"
    enrolment_id: Id
    subject: Id


class EnrolmentWithdrawn(Event):
    message_type = "family.enrolment_withdrawn.v1"
    enrolment_id: Id


class ReserveSeat(Command):
    message_type = "family.reserve_seat.v1"
    enrolment_id: Id


class SeatReserved(Reply):
    message_type = "family.seat_reserved.v1"
    enrolment_id: Id


class ReleaseSeat(Command):
    message_type = "family.release_seat.v1"
    enrolment_id: Id


class SeatReleased(Reply):
    message_type = "family.seat_released.v1"
    enrolment_id: Id


class CheckRequested(Event):
    message_type = "family.check_requested.v1"
    check_id: Id
    subject: Id


class RunCheck(Command):
    message_type = "family.run_check.v1"
    check_id: Id
    subject: Id


class CheckClear(Reply):
    message_type = "family.check_clear.v1"
    check_id: Id


class CheckHit(Reply):
    message_type = "family.check_hit.v1"
    check_id: Id
    reason: str


class VerdictGiven(Event):
    message_type = "family.verdict_given.v1"
    check_id: Id


class Enrolment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    enrolment_id: str
    subject: str


class Check(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    check_id: str
    subject: str


def check_id(enrolment_id: str) -> str:
    return f"check-{enrolment_id}"


def enrolment_saga() -> SagaDefinition[Enrolment, EnrolmentRequested]:
    return SagaDefinition(
        name="enrolment",
        data_model=Enrolment,
        started_by=EnrolmentRequested,
        correlate=lambda e: e.enrolment_id,
        initial_data=lambda e: Enrolment(enrolment_id=e.enrolment_id, subject=e.subject),
        steps=(
            Step(
                name="reserve_seat",
                command=lambda d: ReserveSeat(enrolment_id=d.enrolment_id),
                succeeds_on=(SeatReserved,),
                compensation=lambda d: ReleaseSeat(enrolment_id=d.enrolment_id),
                compensated_on=(SeatReleased,),
                sends=ReserveSeat,
                compensation_sends=ReleaseSeat,
                timeout=TIMEOUT,
            ),
            Child(
                name="background_check",
                saga="background_check",
                start=lambda d: CheckRequested(
                    check_id=check_id(d.enrolment_id), subject=d.subject
                ),
                starts=CheckRequested,
                correlation=lambda d: check_id(d.enrolment_id),
                timeout=TIMEOUT,
            ),
        ),
        reactions=(
            Reaction(
                EnrolmentWithdrawn,
                correlate=lambda e: e.enrolment_id,
                react=lambda d, e: Compensate("enrolment withdrawn"),
            ),
        ),
    )


def check_saga() -> SagaDefinition[Check, CheckRequested]:
    return SagaDefinition(
        name="background_check",
        data_model=Check,
        started_by=CheckRequested,
        correlate=lambda e: e.check_id,
        initial_data=lambda e: Check(check_id=e.check_id, subject=e.subject),
        steps=(
            Step(
                name="run_check",
                command=lambda d: RunCheck(check_id=d.check_id, subject=d.subject),
                succeeds_on=(CheckClear,),
                fails_on=(CheckHit,),
                sends=RunCheck,
                timeout=TIMEOUT,
            ),
            Wait(
                name="verdict",
                event=VerdictGiven,
                correlate=lambda e: e.check_id,
                timeout=TIMEOUT,
            ),
        ),
    )


def seats_adapter() -> Adapter:
    seats = Adapter("seats")

    @seats.handles(ReserveSeat, replies=(SeatReserved,))
    async def reserve(command: ReserveSeat, ctx: CommandContext) -> SeatReserved:
        return SeatReserved(enrolment_id=command.enrolment_id)

    @seats.handles(ReleaseSeat, replies=(SeatReleased,))
    async def release(command: ReleaseSeat, ctx: CommandContext) -> SeatReleased:
        return SeatReleased(enrolment_id=command.enrolment_id)

    return seats


def checker_adapter() -> Adapter:
    checker = Adapter("checker")

    @checker.handles(RunCheck, replies=(CheckClear, CheckHit))
    async def run(command: RunCheck, ctx: CommandContext) -> CheckClear | CheckHit:
        if command.subject.startswith("flagged"):
            return CheckHit(check_id=command.check_id, reason="on a watch list")
        return CheckClear(check_id=command.check_id)

    return checker


def parents_app() -> App:
    return App("parents", sagas=[enrolment_saga()], adapters=[seats_adapter()])


def checks_app() -> App:
    return App("checks", sagas=[check_saga()], adapters=[checker_adapter()])
