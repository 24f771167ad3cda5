"""Onboarding through the public test harness: every path its saga and its identity
verification child can take, over the example's deterministic fakes (steered by the
signup's email tags) or scripted replies, with the coordinator, codec, store and timers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from adapters.onboarding import FLAKY_OUTAGES, OnboardingSystems, onboarding_adapters
from bus_orchestrator.app import App
from bus_orchestrator.core import SagaDefinition, SagaStatus, StepStatus, cancel_event
from bus_orchestrator.testing import SagaHarness
from contracts.onboarding import (
    CheckDocuments,
    CustomerSignedUp,
    DocumentsAccepted,
    IdentityVerified,
    OrderWelcomeKit,
    WelcomeKitOrdered,
    WelcomeKitUnavailable,
)
from sagas import onboarding
from sagas.onboarding import CREDIT_RETRY, verification_id_of

STEP_TIMEOUT = timedelta(seconds=10)
VERIFICATION_TIMEOUT = timedelta(hours=1)
UNTIL_VERIFICATION = timedelta(minutes=1)
"""Time enough for every retry and reply: the child then waits for the verdict."""

CREATE, CLOSE = "crm.create_account.v1", "crm.close_account.v1"
CHECK = "credit.check_credit.v1"
PROVISION, DEPROVISION = "provisioning.provision_account.v1", "provisioning.deprovision_account.v1"
KIT, CANCEL_KIT = "welcome_kit.order_kit.v1", "welcome_kit.cancel_kit.v1"
OPEN_CASE, CHECK_DOCS = "identity.open_case.v1", "identity.check_documents.v1"
CLOSE_CASE = "identity.close_case.v1"
EMAIL = "email.send_welcome_email.v1"
VERIFICATION = (OPEN_CASE, CHECK_DOCS)
"""The child's commands, when its documents pass."""


def sagas() -> list[SagaDefinition[Any, Any]]:
    return [
        onboarding.build(STEP_TIMEOUT, VERIFICATION_TIMEOUT),
        onboarding.build_verification(STEP_TIMEOUT, VERIFICATION_TIMEOUT),
    ]


@pytest.fixture
def systems() -> OnboardingSystems:
    return OnboardingSystems.fresh(slow_seconds=0)


@pytest.fixture
def harness(systems: OnboardingSystems) -> SagaHarness:
    return SagaHarness(App("onboarding", sagas=sagas(), adapters=onboarding_adapters(systems)))


def signup(signup_id: str = "s-1", customer_id: str = "c-1", *tags: str) -> CustomerSignedUp:
    return CustomerSignedUp(
        signup_id=signup_id,
        customer_id=customer_id,
        name="Ada Lovelace",
        email=".".join((*tags, "ada")) + "@example.com",
        country="GB",
    )


# -- every path, table-driven -----------------------------------------------------------


@dataclass(frozen=True)
class Path:
    name: str
    tags: tuple[str, ...]
    verified: bool
    status: SagaStatus
    sent: tuple[str, ...]
    steps: dict[str, StepStatus]
    child: dict[str, StepStatus] = field(default_factory=dict)
    failure: str | None = None
    undone: tuple[str, ...] = ()
    """The commands the compensations undo, in the order they are sent."""


S = StepStatus
SET_UP = {"provision_account": S.SUCCEEDED, "order_welcome_kit": S.SUCCEEDED}
UNDONE = {
    "create_crm_account": S.COMPENSATED,
    "check_credit": S.SUCCEEDED,
    "provision_account": S.COMPENSATED,
    "order_welcome_kit": S.COMPENSATED,
}
VERIFIED = {
    "open_case": S.SUCCEEDED,
    "check_documents": S.SUCCEEDED,
    "identity_verified": S.SUCCEEDED,
}
ONBOARDED = {
    "create_crm_account": S.SUCCEEDED,
    "check_credit": S.SUCCEEDED,
    **SET_UP,
    "verify_identity": S.SUCCEEDED,
    "send_welcome_email": S.SUCCEEDED,
}

PATHS = [
    Path(
        "happy: onboarded, welcome email sent",
        (),
        True,
        SagaStatus.COMPLETED,
        (CREATE, CHECK, PROVISION, KIT, *VERIFICATION, EMAIL),
        ONBOARDED,
        VERIFIED,
    ),
    Path(
        "bureau unavailable twice, then approves: retried with backoff",
        ("flaky",),
        True,
        SagaStatus.COMPLETED,
        (CREATE, CHECK, CHECK, CHECK, PROVISION, KIT, *VERIFICATION, EMAIL),
        ONBOARDED,
        VERIFIED,
    ),
    Path(
        "bureau unavailable until the attempts are spent: the CRM account is closed",
        ("down",),
        False,
        SagaStatus.COMPENSATED,
        (CREATE, CHECK, CHECK, CHECK, CLOSE),
        {"create_crm_account": S.COMPENSATED, "check_credit": S.FAILED},
        failure="step check_credit failed after 3 attempts: "
        "credit.bureau_unavailable.v1: bureau timeout (check 3)",
        undone=(CREATE,),
    ),
    Path(
        "credit rejected: the CRM account is closed",
        ("reject",),
        False,
        SagaStatus.COMPENSATED,
        (CREATE, CHECK, CLOSE),
        {"create_crm_account": S.COMPENSATED, "check_credit": S.FAILED},
        failure="step check_credit failed: credit.credit_rejected.v1: insufficient credit history",
        undone=(CREATE,),
    ),
    Path(
        "provisioning fails: the kit is cancelled, then the CRM account closed",
        ("noprov",),
        False,
        SagaStatus.COMPENSATED,
        (CREATE, CHECK, PROVISION, KIT, CANCEL_KIT, CLOSE),
        {
            "create_crm_account": S.COMPENSATED,
            "check_credit": S.SUCCEEDED,
            "provision_account": S.FAILED,
            "order_welcome_kit": S.COMPENSATED,
        },
        undone=(KIT, CREATE),
    ),
    Path(
        "documents rejected: the child closes its case, the parent undoes all",
        ("fakeid",),
        False,
        SagaStatus.COMPENSATED,
        (CREATE, CHECK, PROVISION, KIT, *VERIFICATION, CLOSE_CASE, CANCEL_KIT, DEPROVISION, CLOSE),
        {**UNDONE, "verify_identity": S.FAILED},
        {"open_case": S.COMPENSATED, "check_documents": S.FAILED},
        failure="step verify_identity failed: child saga identity_verification compensated: "
        "step check_documents failed: identity.documents_rejected.v1: "
        "the passport photo does not match",
        undone=(OPEN_CASE, KIT, PROVISION, CREATE),
    ),
    Path(
        "identity never verified: the child's wait times out, both compensate",
        (),
        False,
        SagaStatus.COMPENSATED,
        (CREATE, CHECK, PROVISION, KIT, *VERIFICATION, CLOSE_CASE, CANCEL_KIT, DEPROVISION, CLOSE),
        {**UNDONE, "verify_identity": S.FAILED},
        {"open_case": S.COMPENSATED, "check_documents": S.SUCCEEDED, "identity_verified": S.FAILED},
        failure="step verify_identity failed: child saga identity_verification compensated: "
        "step identity_verified timed out",
        undone=(OPEN_CASE, KIT, PROVISION, CREATE),
    ),
    Path(
        "welcome email bounces: kit, provisioning and CRM undone, newest first",
        ("bounce",),
        True,
        SagaStatus.COMPENSATED,
        (CREATE, CHECK, PROVISION, KIT, *VERIFICATION, EMAIL, CANCEL_KIT, DEPROVISION, CLOSE),
        {**UNDONE, "verify_identity": S.SUCCEEDED, "send_welcome_email": S.FAILED},
        VERIFIED,
        undone=(KIT, PROVISION, CREATE),
    ),
]


async def run_path(harness: SagaHarness, path: Path) -> None:
    await harness.publish(signup("s-1", "c-1", *path.tags), correlation_id="s-1")
    await harness.advance(UNTIL_VERIFICATION)
    if path.verified:
        await harness.publish(IdentityVerified(verification_id=verification_id_of("s-1")))
    await harness.advance(VERIFICATION_TIMEOUT + UNTIL_VERIFICATION)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
async def test_paths(harness: SagaHarness, path: Path) -> None:
    await run_path(harness, path)
    saga = await harness.saga("s-1")
    assert saga.status is path.status
    assert tuple(harness.command_types()) == path.sent
    assert await harness.steps("s-1") == path.steps
    if path.child:
        child = await harness.saga(verification_id_of("s-1"))
        assert child.saga_type == "identity_verification"
        assert await harness.steps(child.correlation_id) == path.child
    if path.failure is not None:
        assert saga.failure == path.failure
    assert (saga.pending_command_id, saga.deadline) == (None, None)
    assert harness.dead_letters == []


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
async def test_each_compensation_undoes_its_own_command_newest_first(
    harness: SagaHarness, path: Path
) -> None:
    await run_path(harness, path)
    forward = {c.message_id: c for c in harness.commands if not c.compensation}
    compensations = [c for c in harness.commands if c.compensation]
    undone = [forward[c.compensates] for c in compensations if c.compensates in forward]
    assert len(undone) == len(compensations)  # each names a command that was sent
    assert tuple(c.message_type for c in undone) == path.undone
    assert [c.correlation_id for c in undone] == [c.correlation_id for c in compensations]


async def test_the_retried_check_is_one_step_of_three_attempts_each_with_its_own_id(
    harness: SagaHarness, systems: OnboardingSystems
) -> None:
    await run_path(harness, PATHS[1])
    checks = [c for c in harness.commands if c.message_type == CHECK]
    assert len({c.message_id for c in checks}) == 3 == FLAKY_OUTAGES + 1
    [record] = [s for s in (await harness.saga("s-1")).steps if s.name == "check_credit"]
    assert (record.status, record.tries, record.retry_at) == (S.SUCCEEDED, 3, None)
    assert systems.bureau.checks == {"s-1": 3}


async def test_retries_wait_out_their_backoff(harness: SagaHarness) -> None:
    """No second check before the first backoff has passed; then it goes out."""
    await harness.publish(signup("s-1", "c-1", "flaky"))
    await harness.run_until_idle()
    assert harness.command_types() == [CREATE, CHECK]
    first_wait = CREDIT_RETRY.delay((await harness.saga("s-1")).saga_id, 1, 2)
    await harness.advance(first_wait - timedelta(milliseconds=1))
    assert harness.command_types() == [CREATE, CHECK]
    await harness.advance(timedelta(milliseconds=1))
    assert harness.command_types() == [CREATE, CHECK, CHECK]


async def test_a_failed_provisioning_waits_for_the_kit_in_flight_before_compensating(
    harness: SagaHarness, systems: OnboardingSystems
) -> None:
    harness.reply(OrderWelcomeKit)  # the supplier has not answered yet
    await harness.publish(signup("s-1", "c-1", "noprov"))
    await harness.run_until_idle()
    saga = await harness.saga("s-1")
    assert saga.status is SagaStatus.RUNNING and saga.cancel_reason is not None
    assert await harness.steps("s-1") == {
        "create_crm_account": S.SUCCEEDED,
        "check_credit": S.SUCCEEDED,
        "provision_account": S.FAILED,
        "order_welcome_kit": S.RUNNING,
    }
    assert harness.command_types() == [CREATE, CHECK, PROVISION, KIT]  # nothing undone yet
    [kit] = [c for c in harness.commands if c.message_type == KIT]
    await harness.answer(kit, WelcomeKitOrdered(signup_id="s-1", kit_order_id="kit-1"))
    await harness.run_until_idle()
    assert harness.command_types()[-2:] == [CANCEL_KIT, CLOSE]
    cancel = harness.commands[-2]
    assert cancel.compensates == kit.message_id
    assert cancel.payload.model_dump()["kit_order_id"] == "kit-1"
    assert (await harness.saga("s-1")).status is SagaStatus.COMPENSATED
    assert systems.kits.cancelled == {"s-1"} and len(systems.crm.closed) == 1


async def test_a_verdict_that_comes_before_the_wait_ends_it_as_soon_as_it_begins(
    harness: SagaHarness,
) -> None:
    """The provider answers before the child saga even exists: kept, then applied."""
    await harness.publish(IdentityVerified(verification_id=verification_id_of("s-1")))
    await harness.publish(signup("s-1", "c-1"))
    await harness.advance(UNTIL_VERIFICATION)
    assert (await harness.saga("s-1")).status is SagaStatus.COMPLETED
    assert await harness.steps(verification_id_of("s-1")) == VERIFIED


async def test_the_child_is_its_own_saga_ending_with_an_end_event_the_parent_reads(
    harness: SagaHarness,
) -> None:
    await run_path(harness, PATHS[0])
    child = await harness.saga(verification_id_of("s-1"))
    assert child.status is SagaStatus.COMPLETED
    assert child.data["verified_by"] == "document"
    history = await harness.history("s-1")
    assert "saga.identity_verification.completed.v1" in [h.message_type for h in history]


async def test_the_fakes_had_each_effect_once(
    harness: SagaHarness, systems: OnboardingSystems
) -> None:
    await run_path(harness, PATHS[0])
    assert len(systems.crm.accounts) == len(systems.provisioning.tenants) == 1
    assert len(systems.kits.orders) == len(systems.mailer.sent) == len(systems.identity.cases) == 1
    assert not (systems.crm.closed or systems.kits.cancelled or systems.identity.closed)


# -- the customer lock ---------------------------------------------------------------------


async def test_two_signups_of_one_customer_run_one_after_the_other(harness: SagaHarness) -> None:
    await harness.publish(signup("s-1", "c-1"))
    await harness.publish(signup("s-2", "c-1"))
    await harness.advance(UNTIL_VERIFICATION)
    first, second = await harness.saga("s-1"), await harness.saga("s-2")
    assert first.locks == second.locks == ("customer:c-1",)
    assert first.steps[-1].name == "verify_identity" and not first.waiting_for_locks
    assert second.waiting_for_locks and second.steps == ()  # not a single command sent
    assert [c.correlation_id for c in harness.commands if c.message_type == CREATE] == ["s-1"]
    await harness.publish(IdentityVerified(verification_id=verification_id_of("s-1")))
    await harness.advance(UNTIL_VERIFICATION)
    assert (await harness.saga("s-1")).status is SagaStatus.COMPLETED
    assert (await harness.saga("s-2")).steps[-1].name == "verify_identity"  # its turn
    await harness.publish(IdentityVerified(verification_id=verification_id_of("s-2")))
    await harness.advance(UNTIL_VERIFICATION)
    assert (await harness.saga("s-2")).status is SagaStatus.COMPLETED
    creates = [c.correlation_id for c in harness.commands if c.message_type == CREATE]
    assert creates == ["s-1", "s-2"]


async def test_signups_of_two_customers_do_not_wait_for_each_other(harness: SagaHarness) -> None:
    await harness.publish(signup("s-1", "c-1"))
    await harness.publish(signup("s-2", "c-2"))
    await harness.advance(UNTIL_VERIFICATION)
    for signup_id in ("s-1", "s-2"):
        assert (await harness.saga(signup_id)).steps[-1].name == "verify_identity"


# -- cancelling, and replies that cross ----------------------------------------------------


async def test_cancelling_while_the_child_waits_cancels_the_child_then_compensates(
    harness: SagaHarness, systems: OnboardingSystems
) -> None:
    await harness.publish(signup("s-1", "c-1"))
    await harness.advance(UNTIL_VERIFICATION)
    assert (await harness.steps(verification_id_of("s-1")))["identity_verified"] is S.RUNNING
    await harness.publish(cancel_event("onboarding")(correlation_id="s-1", reason="withdrawn"))
    await harness.run_until_idle()
    parent, child = await harness.saga("s-1"), await harness.saga(verification_id_of("s-1"))
    assert child.status is SagaStatus.COMPENSATED and child.failure == "withdrawn"
    assert parent.status is SagaStatus.COMPENSATED and parent.failure == "withdrawn"
    assert harness.command_types()[-4:] == [CLOSE_CASE, CANCEL_KIT, DEPROVISION, CLOSE]
    assert systems.identity.closed == {verification_id_of("s-1")}


async def test_cancelling_during_a_retry_backoff_sends_no_more_checks(
    harness: SagaHarness,
) -> None:
    await harness.publish(signup("s-1", "c-1", "down"))
    await harness.run_until_idle()
    assert harness.command_types() == [CREATE, CHECK]  # the retry waits out its backoff
    await harness.publish(cancel_event("onboarding")(correlation_id="s-1", reason="withdrawn"))
    await harness.advance(UNTIL_VERIFICATION)
    assert harness.command_types() == [CREATE, CHECK, CLOSE]
    saga = await harness.saga("s-1")
    assert (saga.status, saga.failure) == (SagaStatus.COMPENSATED, "withdrawn")
    assert await harness.steps("s-1") == {
        "create_crm_account": S.COMPENSATED,
        "check_credit": S.FAILED,
    }


async def test_both_members_of_the_group_failing_undo_only_the_crm_account(
    harness: SagaHarness,
) -> None:
    harness.reply(
        OrderWelcomeKit, lambda c: WelcomeKitUnavailable(signup_id=c.signup_id, reason="none left")
    )
    await harness.publish(signup("s-1", "c-1", "noprov"))
    await harness.run_until_idle()
    saga = await harness.saga("s-1")
    assert saga.status is SagaStatus.COMPENSATED
    assert harness.command_types() == [CREATE, CHECK, PROVISION, KIT, CLOSE]
    assert saga.failure is not None and saga.failure.startswith("step provision_account failed")


async def test_a_verdict_that_comes_while_the_documents_are_checked_is_kept_for_the_wait(
    harness: SagaHarness,
) -> None:
    harness.reply(CheckDocuments)  # the check is slow
    await harness.publish(signup("s-1", "c-1"))
    await harness.run_until_idle()
    await harness.publish(IdentityVerified(verification_id=verification_id_of("s-1")))
    await harness.run_until_idle()
    child = await harness.saga(verification_id_of("s-1"))
    assert set(child.early_events) == {"identity.identity_verified.v1"}
    [check] = [c for c in harness.commands if c.message_type == CHECK_DOCS]
    await harness.answer(check, DocumentsAccepted(verification_id=verification_id_of("s-1")))
    await harness.run_until_idle()
    assert (await harness.saga("s-1")).status is SagaStatus.COMPLETED
    assert await harness.steps(verification_id_of("s-1")) == VERIFIED


async def test_a_verdict_for_a_finished_verification_changes_nothing(harness: SagaHarness) -> None:
    await run_path(harness, PATHS[0])
    before = await harness.saga(verification_id_of("s-1"))
    await harness.publish(IdentityVerified(verification_id=verification_id_of("s-1")))
    await harness.run_until_idle()
    assert await harness.saga(verification_id_of("s-1")) == before
    assert harness.dead_letters == []
