"""The retry policy of a step: transient failure replies retried with backoff on the
durable timers, each attempt with its own command id, until the attempts are spent."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest
from pydantic import BaseModel

from bus_orchestrator.app import App
from bus_orchestrator.core import (
    Command,
    Event,
    Inbound,
    Outcome,
    Phase,
    Reaction,
    Reply,
    RetryOn,
    SagaDefinition,
    SagaStatus,
    Step,
    StepStatus,
    command_id_for,
    decide,
    saga_id_for,
)
from bus_orchestrator.core.definition import Compensate
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.testing import SagaHarness, SentCommand
from bus_orchestrator.views import saga_view


class SignedUp(Event):
    message_type: ClassVar[str] = "tests.retry.signed_up.v1"
    customer: str


class SignupWithdrawn(Event):
    message_type: ClassVar[str] = "tests.retry.signup_withdrawn.v1"
    customer: str


class OpenAccount(Command):
    message_type: ClassVar[str] = "tests.retry.open_account.v1"
    customer: str


class AccountOpened(Reply):
    message_type: ClassVar[str] = "tests.retry.account_opened.v1"


class CloseAccount(Command):
    message_type: ClassVar[str] = "tests.retry.close_account.v1"
    customer: str


class AccountClosed(Reply):
    message_type: ClassVar[str] = "tests.retry.account_closed.v1"


class CheckCredit(Command):
    message_type: ClassVar[str] = "tests.retry.check_credit.v1"
    customer: str


class CreditApproved(Reply):
    message_type: ClassVar[str] = "tests.retry.credit_approved.v1"


class CreditRejected(Reply):
    message_type: ClassVar[str] = "tests.retry.credit_rejected.v1"
    reason: str


class BureauUnavailable(Reply):
    message_type: ClassVar[str] = "tests.retry.bureau_unavailable.v1"
    reason: str


class Data(BaseModel):
    customer: str


POLICY = RetryOn(
    (BureauUnavailable,),
    attempts=4,
    backoff=timedelta(seconds=2),
    max_backoff=timedelta(seconds=5),
    jitter=0.2,
)
TIMEOUT = timedelta(seconds=30)


def _saga(retry: RetryOn = POLICY, max_attempts: int = 1) -> SagaDefinition[Data, SignedUp]:
    return SagaDefinition(
        name="retrying",
        data_model=Data,
        started_by=SignedUp,
        correlate=lambda e: e.customer,
        initial_data=lambda e: Data(customer=e.customer),
        steps=[
            Step(
                name="open_account",
                command=lambda d: OpenAccount(customer=d.customer),
                sends=OpenAccount,
                compensation_sends=CloseAccount,
                succeeds_on=(AccountOpened,),
                compensation=lambda d: CloseAccount(customer=d.customer),
                compensated_on=(AccountClosed,),
            ),
            Step(
                name="credit_check",
                command=lambda d: CheckCredit(customer=d.customer),
                sends=CheckCredit,
                succeeds_on=(CreditApproved,),
                fails_on=(CreditRejected,),
                retry=retry,
                timeout=TIMEOUT,
                max_attempts=max_attempts,
            ),
        ],
        reactions=[
            Reaction(
                SignupWithdrawn,
                correlate=lambda e: e.customer,
                react=lambda d, e: Compensate("withdrawn"),
            )
        ],
    )


@dataclass
class Bureau:
    """Answers credit checks from a list: one answer per check, ``None`` for silence."""

    answers: list[Reply | None]
    asked: list[str] = field(default_factory=list)

    def __call__(self, command: CheckCredit) -> Reply | None:
        self.asked.append(command.customer)
        return self.answers.pop(0) if self.answers else None


def _harness(bureau: Bureau, **saga: int) -> SagaHarness:
    harness = SagaHarness(App("retry-tests", sagas=[_saga(**saga)]), adapters=False)  # type: ignore[arg-type]
    harness.reply(OpenAccount, lambda c: AccountOpened())
    harness.reply(CloseAccount, lambda c: AccountClosed())
    harness.reply(CheckCredit, bureau)
    return harness


def _credit_checks(harness: SagaHarness) -> list[SentCommand]:
    return [c for c in harness.commands if c.message_type == CheckCredit.message_type]


UNAVAILABLE = BureauUnavailable(reason="bureau down")
SAGA_ID = saga_id_for("retrying", "c-1")


# -- through the harness ------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    answers: list[Reply | None]
    wait: timedelta
    status: SagaStatus
    checks: int
    step_status: StepStatus
    failure: str | None = None


CASES = {
    "transient then success": Case(
        [UNAVAILABLE, UNAVAILABLE, CreditApproved()],
        timedelta(minutes=1),
        SagaStatus.COMPLETED,
        3,
        StepStatus.SUCCEEDED,
    ),
    "attempts run out": Case(
        [UNAVAILABLE] * 4,
        timedelta(minutes=1),
        SagaStatus.COMPENSATED,
        4,
        StepStatus.FAILED,
        "step credit_check failed after 4 attempts: tests.retry.bureau_unavailable.v1: bureau down",
    ),
    "final failure after a transient one": Case(
        [UNAVAILABLE, CreditRejected(reason="score")],
        timedelta(minutes=1),
        SagaStatus.COMPENSATED,
        2,
        StepStatus.FAILED,
        "step credit_check failed: tests.retry.credit_rejected.v1: score",
    ),
    "an attempt times out": Case(
        [UNAVAILABLE, None],
        timedelta(minutes=5),
        SagaStatus.COMPENSATED,
        2,
        StepStatus.TIMED_OUT,
        "step credit_check timed out",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
async def test_retry_paths(name: str) -> None:
    case = CASES[name]
    bureau = Bureau(list(case.answers))
    harness = _harness(bureau)
    await harness.publish(SignedUp(customer="c-1"))
    await harness.advance(case.wait)
    saga = await harness.saga("c-1")
    assert saga.status is case.status
    assert saga.failure == case.failure
    assert len(bureau.asked) == case.checks
    credit = saga.steps[1]
    assert credit.status is case.step_status
    assert credit.tries == case.checks
    assert credit.retry_at is None
    if case.status is SagaStatus.COMPENSATED:
        assert harness.command_types()[-1] == CloseAccount.message_type
    else:
        assert CloseAccount.message_type not in harness.command_types()


async def test_each_attempt_has_its_own_command_id_and_the_first_keeps_todays() -> None:
    harness = _harness(Bureau([UNAVAILABLE, UNAVAILABLE, CreditApproved()]))
    await harness.publish(SignedUp(customer="c-1"))
    await harness.advance(timedelta(minutes=1))
    ids = [c.message_id for c in _credit_checks(harness)]
    assert ids == [
        command_id_for(SAGA_ID, 1, Phase.FORWARD),
        command_id_for(SAGA_ID, 1, Phase.FORWARD, 2),
        command_id_for(SAGA_ID, 1, Phase.FORWARD, 3),
    ]
    assert len(set(ids)) == 3
    # attempt 1 is the id every command had before retries existed
    assert ids[0] == command_id_for(SAGA_ID, 1, Phase.FORWARD, 1)
    assert (await harness.saga("c-1")).steps[1].command_id == ids[2]


async def test_the_retry_waits_on_the_durable_timer_with_the_backoff() -> None:
    harness = _harness(Bureau([UNAVAILABLE, UNAVAILABLE, CreditApproved()]))
    await harness.publish(SignedUp(customer="c-1"))
    await harness.run_until_idle()
    failed_at = harness.clock.now
    saga = await harness.saga("c-1")
    credit = saga.steps[1]
    due = failed_at + POLICY.delay(SAGA_ID, 1, 2)
    assert (credit.status, credit.tries, credit.retry_at) == (StepStatus.RUNNING, 2, due)
    assert saga.deadline == due
    assert saga.pending_command_id == command_id_for(SAGA_ID, 1, Phase.FORWARD, 2)
    assert credit.error == "tests.retry.bureau_unavailable.v1: bureau down"
    view = saga_view(saga)["steps"][1]
    assert (view["tries"], view["retry_at"]) == (2, due.isoformat())

    # just before the retry is due nothing is sent; at its time the second attempt goes out
    await harness.advance(due - harness.clock.now - timedelta(milliseconds=1))
    assert len(_credit_checks(harness)) == 1
    await harness.advance(timedelta(milliseconds=1))
    assert len(_credit_checks(harness)) == 2
    # its transient failure arms the third attempt, further out
    saga = await harness.saga("c-1")
    assert saga.steps[1].retry_at == harness.clock.now + POLICY.delay(SAGA_ID, 1, 3)


async def test_a_cancellation_during_the_backoff_compensates_at_once() -> None:
    bureau = Bureau([UNAVAILABLE, CreditApproved()])
    harness = _harness(bureau)
    await harness.publish(SignedUp(customer="c-1"))
    await harness.run_until_idle()
    await harness.publish(SignupWithdrawn(customer="c-1"))
    await harness.run_until_idle()
    saga = await harness.saga("c-1")
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.failure == "withdrawn"
    assert (saga.steps[1].status, saga.steps[1].retry_at) == (StepStatus.FAILED, None)
    assert harness.command_types()[-1] == CloseAccount.message_type
    # the retry's time passes: nothing forward is sent again
    await harness.advance(timedelta(minutes=10))
    assert len(bureau.asked) == 1
    assert (await harness.saga("c-1")).deadline is None


async def test_a_late_reply_to_an_earlier_attempt_is_ignored() -> None:
    bureau = Bureau([UNAVAILABLE, None])
    harness = _harness(bureau)
    await harness.publish(SignedUp(customer="c-1"))
    await harness.advance(timedelta(seconds=3))  # past the first backoff, attempt 2 is out
    first, second = _credit_checks(harness)
    # a success to attempt 1's command, arriving late, must not settle attempt 2
    await harness.publish(
        CreditApproved(),
        correlation_id=first.correlation_id,
        causation_id=first.message_id,
    )
    await harness.run_until_idle()
    saga = await harness.saga("c-1")
    assert saga.status is SagaStatus.RUNNING
    assert (saga.steps[1].status, saga.steps[1].tries) == (StepStatus.RUNNING, 2)
    assert saga.pending_command_id == second.message_id
    await harness.answer(second, CreditApproved())
    await harness.run_until_idle()
    assert (await harness.saga("c-1")).status is SagaStatus.COMPLETED


async def test_a_timeout_resends_the_current_attempt_under_its_own_id() -> None:
    bureau = Bureau([UNAVAILABLE, None, CreditApproved()])
    harness = _harness(bureau, max_attempts=2)
    await harness.publish(SignedUp(customer="c-1"))
    await harness.advance(timedelta(seconds=3) + TIMEOUT)
    checks = _credit_checks(harness)
    assert [c.message_id for c in checks] == [
        command_id_for(SAGA_ID, 1, Phase.FORWARD),
        command_id_for(SAGA_ID, 1, Phase.FORWARD, 2),
        command_id_for(SAGA_ID, 1, Phase.FORWARD, 2),  # the resend on timeout
    ]
    saga = await harness.saga("c-1")
    assert saga.status is SagaStatus.COMPLETED
    assert (saga.steps[1].tries, saga.steps[1].attempts) == (2, 2)


# -- the policy and pure decisions -----------------------------------------------------------


def test_backoff_doubles_and_is_capped() -> None:
    policy = RetryOn(
        (BureauUnavailable,),
        attempts=10,
        backoff=timedelta(seconds=2),
        max_backoff=timedelta(seconds=20),
        jitter=0,
    )
    delays = [policy.delay(SAGA_ID, 1, n).total_seconds() for n in range(2, 9)]
    assert delays == [2, 4, 8, 16, 20, 20, 20]
    assert policy.delay(SAGA_ID, 1, 500) == timedelta(seconds=20)  # no overflow, still capped


@pytest.mark.parametrize("attempt", range(2, 12))
def test_jitter_is_deterministic_and_within_bounds(attempt: int) -> None:
    base = min(POLICY.backoff * 2 ** (attempt - 2), POLICY.max_backoff)
    delay = POLICY.delay(SAGA_ID, 1, attempt)
    assert delay == POLICY.delay(SAGA_ID, 1, attempt)
    assert base * (1 - POLICY.jitter) <= delay <= base


def test_jitter_differs_between_sagas() -> None:
    delays = {POLICY.delay(saga_id_for("retrying", f"c-{n}"), 1, 2) for n in range(20)}
    assert len(delays) > 1


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_retried_decision_is_the_same_decision() -> None:
    saga = _saga()
    started = decide(saga, None, Inbound("m-1", SignedUp(customer="c-1")), T0).instance
    opened = decide(
        saga,
        started,
        Inbound("m-2", AccountOpened(), "c-1", started.pending_command_id if started else None),
        T0,
    ).instance
    assert opened is not None
    transient = Inbound("m-3", UNAVAILABLE, "c-1", opened.pending_command_id)
    first = decide(saga, opened, transient, T0)
    again = decide(saga, opened, transient, T0)
    assert first == again
    assert first.outcome is Outcome.ADVANCED and first.send == ()
    assert first.timer == T0 + POLICY.delay(SAGA_ID, 1, 2)


Broken = Callable[[], RetryOn]


@pytest.mark.parametrize(
    ("policy", "complaint"),
    [
        (lambda: RetryOn((CreditRejected,)), "CreditRejected is transient and also settles"),
        (lambda: RetryOn((CreditApproved,)), "CreditApproved is transient and also settles"),
        (lambda: RetryOn((BureauUnavailable,), attempts=0), "attempts must be at least 1"),
        (lambda: RetryOn(()), "no transient reply type"),
        (
            lambda: RetryOn((BureauUnavailable,), backoff=timedelta(0)),
            "backoff must be positive",
        ),
        (
            lambda: RetryOn(
                (BureauUnavailable,), backoff=timedelta(minutes=2), max_backoff=timedelta(seconds=1)
            ),
            "at most max_backoff",
        ),
        (lambda: RetryOn((BureauUnavailable,), jitter=1.0), "jitter must be"),
        (lambda: RetryOn((SignedUp,)), "SignedUp is not a reply"),  # type: ignore[arg-type]
    ],
)
def test_a_wrong_policy_is_refused_when_the_saga_is_defined(policy: Broken, complaint: str) -> None:
    with pytest.raises(DefinitionError, match=complaint):
        _saga(retry=policy())


def test_transient_replies_are_routed_to_the_saga() -> None:
    assert BureauUnavailable.message_type in _saga().reply_types()
    assert BureauUnavailable in _saga().message_models()


async def test_sagas_show_prints_the_attempt_and_the_retry_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bus_orchestrator import cli

    harness = _harness(Bureau([UNAVAILABLE]))
    await harness.publish(SignedUp(customer="c-1"))
    await harness.run_until_idle()
    view = saga_view(await harness.saga("c-1"))
    cli._print_saga(view)
    lines = capsys.readouterr().out.splitlines()

    def cells(marker: str) -> list[str]:
        line = next(line for line in lines if line.startswith(marker))
        return re.split(r"\s{2,}", line.strip())

    header, credit = cells("STEP"), cells("credit_check")
    assert header == ["STEP", "STATUS", "ATTEMPTS", "TRY", "RETRY AT", "FINISHED"]
    retry_at = datetime.fromisoformat(view["steps"][1]["retry_at"]).astimezone(UTC)
    assert credit == ["credit_check", "running", "1", "2", retry_at.strftime("%m-%d %H:%M:%S")]


async def test_a_transient_failure_after_a_cancellation_is_not_retried() -> None:
    bureau = Bureau([])  # the credit check stays unanswered until the test answers it
    harness = _harness(bureau)
    await harness.publish(SignedUp(customer="c-1"))
    await harness.run_until_idle()
    await harness.publish(SignupWithdrawn(customer="c-1"))
    await harness.run_until_idle()
    assert (await harness.saga("c-1")).status is SagaStatus.RUNNING  # awaits the check
    [check] = _credit_checks(harness)
    await harness.answer(check, UNAVAILABLE)
    await harness.advance(timedelta(minutes=10))
    saga = await harness.saga("c-1")
    assert (saga.status, saga.failure) == (SagaStatus.COMPENSATED, "withdrawn")
    assert (saga.steps[1].status, saga.steps[1].tries) == (StepStatus.FAILED, 1)
    assert len(bureau.asked) == 1
