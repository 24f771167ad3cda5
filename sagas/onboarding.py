"""Customer onboarding: a second example, built only from the public core.

``onboarding`` (one per signup, holding a lock on the customer id):

1. create the CRM account (undone by closing it);
2. check credit: the bureau being unavailable is transient, retried with backoff; a
   rejection fails the step;
3. in parallel, provision the account and order the welcome kit (each undone on failure);
4. verify the customer's identity: a child saga, ``identity_verification``;
5. send the welcome email.

``identity_verification`` opens a case with the identity provider (undone by closing it),
has the documents checked, then waits for the provider's ``identity.identity_verified.v1``.
No verdict in time, or rejected documents: it closes the case and ends compensated, and
the onboarding saga undoes what it did, newest first.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from bus_orchestrator.core import Child, Parallel, RetryOn, SagaDefinition, Step, Wait
from contracts.onboarding import (
    AccountClosed,
    AccountCreated,
    AccountDeprovisioned,
    AccountProvisioned,
    BureauUnavailable,
    CancelWelcomeKit,
    CheckCredit,
    CheckDocuments,
    CloseAccount,
    CloseVerificationCase,
    CreateAccount,
    CreditApproved,
    CreditRejected,
    CustomerSignedUp,
    DeprovisionAccount,
    DocumentsAccepted,
    DocumentsRejected,
    IdentityVerified,
    OpenVerificationCase,
    OrderWelcomeKit,
    ProvisionAccount,
    ProvisioningFailed,
    SendWelcomeEmail,
    VerificationCaseClosed,
    VerificationCaseOpened,
    VerificationRequested,
    WelcomeEmailBounced,
    WelcomeEmailSent,
    WelcomeKitCancelled,
    WelcomeKitOrdered,
    WelcomeKitUnavailable,
)

ONBOARDING = "onboarding"
IDENTITY_VERIFICATION = "identity_verification"

CREDIT_RETRY = RetryOn(
    transient=(BureauUnavailable,),
    attempts=3,
    backoff=timedelta(seconds=1),
    max_backoff=timedelta(seconds=30),
)
"""Three checks in all: the second about a second after the first failed, the third about
two seconds after that (less the jitter). The bureau's outages are short."""


def verification_id_of(signup_id: str) -> str:
    """The identity verification saga's correlation id for a signup."""
    return f"idv-{signup_id}"


class OnboardingData(BaseModel):
    """What the onboarding saga knows: the signup, and what the adapters told it."""

    model_config = ConfigDict(frozen=True)

    signup: CustomerSignedUp
    account_id: str | None = None
    credit_limit: int | None = None
    tenant_id: str | None = None
    kit_order_id: str | None = None
    welcome_message_id: str | None = None

    @property
    def verification_id(self) -> str:
        return verification_id_of(self.signup.signup_id)


def _account_created(data: OnboardingData, reply: AccountCreated) -> OnboardingData:
    return data.model_copy(update={"account_id": reply.account_id})


def _credit_approved(data: OnboardingData, reply: CreditApproved) -> OnboardingData:
    return data.model_copy(update={"credit_limit": reply.limit})


def _provisioned(data: OnboardingData, reply: AccountProvisioned) -> OnboardingData:
    return data.model_copy(update={"tenant_id": reply.tenant_id})


def _kit_ordered(data: OnboardingData, reply: WelcomeKitOrdered) -> OnboardingData:
    return data.model_copy(update={"kit_order_id": reply.kit_order_id})


def _email_sent(data: OnboardingData, reply: WelcomeEmailSent) -> OnboardingData:
    return data.model_copy(update={"welcome_message_id": reply.message_id})


def _create_account(d: OnboardingData) -> CreateAccount:
    s = d.signup
    return CreateAccount(
        signup_id=s.signup_id, customer_id=s.customer_id, name=s.name, email=s.email
    )


def _close_account(d: OnboardingData) -> CloseAccount:
    return CloseAccount(
        signup_id=d.signup.signup_id, account_id=d.account_id, reason="onboarding undone"
    )


def _check_credit(d: OnboardingData) -> CheckCredit:
    s = d.signup
    return CheckCredit(
        signup_id=s.signup_id,
        customer_id=s.customer_id,
        name=s.name,
        email=s.email,
        country=s.country,
    )


def _provision(d: OnboardingData) -> ProvisionAccount:
    assert d.account_id is not None and d.credit_limit is not None  # noqa: S101 - steps 1, 2
    return ProvisionAccount(
        signup_id=d.signup.signup_id,
        account_id=d.account_id,
        admin_email=d.signup.email,
        credit_limit=d.credit_limit,
    )


def _deprovision(d: OnboardingData) -> DeprovisionAccount:
    return DeprovisionAccount(signup_id=d.signup.signup_id, tenant_id=d.tenant_id)


def _order_kit(d: OnboardingData) -> OrderWelcomeKit:
    s = d.signup
    return OrderWelcomeKit(signup_id=s.signup_id, name=s.name, email=s.email, country=s.country)


def _cancel_kit(d: OnboardingData) -> CancelWelcomeKit:
    return CancelWelcomeKit(signup_id=d.signup.signup_id, kit_order_id=d.kit_order_id)


def _request_verification(d: OnboardingData) -> VerificationRequested:
    s = d.signup
    return VerificationRequested(
        verification_id=d.verification_id, customer_id=s.customer_id, name=s.name, email=s.email
    )


def _send_email(d: OnboardingData) -> SendWelcomeEmail:
    assert d.account_id is not None  # noqa: S101 - set by step 1
    s = d.signup
    return SendWelcomeEmail(
        signup_id=s.signup_id, name=s.name, email=s.email, account_id=d.account_id
    )


def build(
    step_timeout: timedelta = timedelta(seconds=30),
    verification_timeout: timedelta = timedelta(seconds=30),
) -> SagaDefinition[OnboardingData, CustomerSignedUp]:
    """The onboarding saga. ``step_timeout`` bounds each adapter's reply; the identity
    verification child, whose wait takes up to ``verification_timeout``, is given the time
    its own saga may take (``verification_budget``)."""
    return SagaDefinition(
        name=ONBOARDING,
        data_model=OnboardingData,
        started_by=CustomerSignedUp,
        correlate=lambda e: e.signup_id,
        initial_data=lambda e: OnboardingData(signup=e),
        locks=("customer:{signup.customer_id}",),
        steps=(
            Step(
                name="create_crm_account",
                command=_create_account,
                succeeds_on=(AccountCreated,),
                on_reply=_account_created,
                compensation=_close_account,
                compensated_on=(AccountClosed,),
                timeout=step_timeout,
            ),
            Step(
                name="check_credit",
                command=_check_credit,
                succeeds_on=(CreditApproved,),
                fails_on=(CreditRejected,),
                retry=CREDIT_RETRY,
                on_reply=_credit_approved,
                timeout=step_timeout,
            ),
            Parallel(
                "set_up",
                (
                    Step(
                        name="provision_account",
                        command=_provision,
                        succeeds_on=(AccountProvisioned,),
                        fails_on=(ProvisioningFailed,),
                        on_reply=_provisioned,
                        compensation=_deprovision,
                        compensated_on=(AccountDeprovisioned,),
                        timeout=step_timeout,
                    ),
                    Step(
                        name="order_welcome_kit",
                        command=_order_kit,
                        succeeds_on=(WelcomeKitOrdered,),
                        fails_on=(WelcomeKitUnavailable,),
                        on_reply=_kit_ordered,
                        compensation=_cancel_kit,
                        compensated_on=(WelcomeKitCancelled,),
                        timeout=step_timeout,
                    ),
                ),
            ),
            Child(
                name="verify_identity",
                saga=IDENTITY_VERIFICATION,
                start=_request_verification,
                starts=VerificationRequested,
                correlation=lambda d: d.verification_id,
                timeout=verification_budget(step_timeout, verification_timeout),
            ),
            Step(
                name="send_welcome_email",
                command=_send_email,
                succeeds_on=(WelcomeEmailSent,),
                fails_on=(WelcomeEmailBounced,),
                on_reply=_email_sent,
                timeout=step_timeout,
            ),
        ),
    )


def verification_budget(step_timeout: timedelta, verification_timeout: timedelta) -> timedelta:
    """How long the onboarding saga gives its child: the child's two commands, its wait,
    and its compensation, each at their longest, and as much again to spare."""
    return 2 * (3 * step_timeout + verification_timeout)


class VerificationData(BaseModel):
    """What the identity verification saga knows."""

    model_config = ConfigDict(frozen=True)

    request: VerificationRequested
    case_id: str | None = None
    verified_by: str | None = None


def _case_opened(data: VerificationData, reply: VerificationCaseOpened) -> VerificationData:
    return data.model_copy(update={"case_id": reply.case_id})


def _verified(data: VerificationData, event: IdentityVerified) -> VerificationData:
    return data.model_copy(update={"verified_by": event.method})


def _open_case(d: VerificationData) -> OpenVerificationCase:
    r = d.request
    return OpenVerificationCase(
        verification_id=r.verification_id, customer_id=r.customer_id, name=r.name, email=r.email
    )


def _close_case(d: VerificationData) -> CloseVerificationCase:
    return CloseVerificationCase(
        verification_id=d.request.verification_id,
        case_id=d.case_id,
        reason="identity not verified",
    )


def _check_documents(d: VerificationData) -> CheckDocuments:
    assert d.case_id is not None  # noqa: S101 - set by open_case
    return CheckDocuments(verification_id=d.request.verification_id, case_id=d.case_id)


def build_verification(
    step_timeout: timedelta = timedelta(seconds=30),
    verification_timeout: timedelta = timedelta(seconds=30),
) -> SagaDefinition[VerificationData, VerificationRequested]:
    """The identity verification saga; ``verification_timeout`` bounds the wait for the
    identity provider's verdict (a person looks at the documents: days, in real life)."""
    return SagaDefinition(
        name=IDENTITY_VERIFICATION,
        data_model=VerificationData,
        started_by=VerificationRequested,
        correlate=lambda e: e.verification_id,
        initial_data=lambda e: VerificationData(request=e),
        steps=(
            Step(
                name="open_case",
                command=_open_case,
                succeeds_on=(VerificationCaseOpened,),
                on_reply=_case_opened,
                compensation=_close_case,
                compensated_on=(VerificationCaseClosed,),
                timeout=step_timeout,
            ),
            Step(
                name="check_documents",
                command=_check_documents,
                succeeds_on=(DocumentsAccepted,),
                fails_on=(DocumentsRejected,),
                timeout=step_timeout,
            ),
            Wait(
                name="identity_verified",
                event=IdentityVerified,
                correlate=lambda e: e.verification_id,
                timeout=verification_timeout,
                on_event=_verified,
            ),
        ),
    )
