"""The onboarding domain's adapters, each over a deterministic fake system.

The fakes read their orders from the customer's email address: the local part is a list
of dot-separated tags (``reject.c-17@example.com``), and each fake acts on its own:

========== =================================================================
tag        effect
========== =================================================================
flaky      the credit bureau is unavailable for the first two checks of the signup
down       the credit bureau is unavailable, always
reject     the credit bureau rejects the customer
noprov     provisioning fails
slowkit    the welcome kit supplier takes ``slow_seconds`` to answer
fakeid     the identity provider rejects the customer's documents
bounce     the welcome email bounces
========== =================================================================

Anything else succeeds. Every id a fake hands out is derived from the caller's idempotency
key, and each keeps its answers by that key, so a repeated command has no second effect.
Whether the identity provider later verifies the person (``identity.identity_verified.v1``)
is not up to an adapter: a test, or the demo plan, publishes that event.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from adapters.fake_system import FakeSystem, derived_id
from bus_orchestrator.adapters import Adapter, CommandContext, RetryPolicy
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
    DeprovisionAccount,
    DocumentsAccepted,
    DocumentsRejected,
    OpenVerificationCase,
    OrderWelcomeKit,
    ProvisionAccount,
    ProvisioningFailed,
    SendWelcomeEmail,
    VerificationCaseClosed,
    VerificationCaseOpened,
    WelcomeEmailBounced,
    WelcomeEmailSent,
    WelcomeKitCancelled,
    WelcomeKitOrdered,
    WelcomeKitUnavailable,
)

FLAKY_OUTAGES = 2
"""Checks of a ``flaky`` signup the bureau fails before it answers."""
CREDIT_LIMIT = 5000


def tags(email: str) -> frozenset[str]:
    """The tags of an address: the dot-separated words of its local part."""
    return frozenset(email.partition("@")[0].lower().split("."))


@dataclass(frozen=True, slots=True)
class Outcome:
    """A fake's answer: an id on success, a reason otherwise."""

    id: str | None
    reason: str | None = None


class FakeCrm(FakeSystem):
    """A CRM: one account per signup."""

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(fail_first=fail_first)
        self.accounts: dict[str, tuple[str, str]] = {}
        """Idempotency key -> (signup id, account id)."""
        self.closed: set[str] = set()
        """Account ids closed."""

    def create_account(self, key: str, signup_id: str) -> str:
        self._enter("create_account")
        if key not in self.accounts:
            self.accounts[key] = (signup_id, derived_id("acc", key))
        return self.accounts[key][1]

    def close_account(self, signup_id: str, account_id: str | None) -> str | None:
        """Close the account (the signup's, when ``account_id`` is ``None``); closing one
        twice changes nothing. Returns the account closed, if any."""
        self._enter("close_account")
        for held_signup, held_account in self.accounts.values():
            if held_signup == signup_id and account_id in (None, held_account):
                self.closed.add(held_account)
                return held_account
        return account_id


class FakeCreditBureau(FakeSystem):
    """A credit bureau that is sometimes unavailable (``flaky``, ``down``) and rejects
    ``reject``. Its outages are counted per signup, its answers kept per key."""

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(fail_first=fail_first)
        self.answers: dict[str, CreditApproved | CreditRejected | BureauUnavailable] = {}
        self.checks: dict[str, int] = {}
        """Signup id -> checks answered (a repeated key is not a new check)."""

    def check(
        self, key: str, signup_id: str, email: str
    ) -> CreditApproved | CreditRejected | BureauUnavailable:
        self._enter("check")
        if key in self.answers:
            return self.answers[key]
        self.checks[signup_id] = checks = self.checks.get(signup_id, 0) + 1
        found = tags(email)
        answer: CreditApproved | CreditRejected | BureauUnavailable
        if "down" in found or ("flaky" in found and checks <= FLAKY_OUTAGES):
            answer = BureauUnavailable(
                signup_id=signup_id, reason=f"bureau timeout (check {checks})"
            )
        elif "reject" in found:
            answer = CreditRejected(signup_id=signup_id, reason="insufficient credit history")
        else:
            answer = CreditApproved(signup_id=signup_id, limit=CREDIT_LIMIT)
        self.answers[key] = answer
        return answer


class FakeProvisioning(FakeSystem):
    """The platform that sets up a customer's tenant; fails ``noprov``."""

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(fail_first=fail_first)
        self.tenants: dict[str, tuple[str, Outcome]] = {}
        """Idempotency key -> (signup id, outcome)."""
        self.removed: set[str] = set()
        """Signup ids whose tenant was removed (or never made)."""

    def provision(self, key: str, signup_id: str, admin_email: str) -> Outcome:
        self._enter("provision")
        if key not in self.tenants:
            outcome = (
                Outcome(None, "no capacity in the customer's region")
                if "noprov" in tags(admin_email)
                else Outcome(derived_id("ten", key))
            )
            self.tenants[key] = (signup_id, outcome)
        return self.tenants[key][1]

    def deprovision(self, signup_id: str) -> None:
        self._enter("deprovision")
        self.removed.add(signup_id)


class FakeKitSupplier(FakeSystem):
    """Ships welcome kits; takes ``slow_seconds`` to answer ``slowkit`` orders."""

    def __init__(self, *, fail_first: int = 0, slow_seconds: float = 0.5) -> None:
        super().__init__(fail_first=fail_first)
        self.slow_seconds = slow_seconds
        self.orders: dict[str, tuple[str, str]] = {}
        """Idempotency key -> (signup id, kit order id)."""
        self.cancelled: set[str] = set()
        """Signup ids whose kit was cancelled (or never ordered)."""

    async def order(self, key: str, signup_id: str, email: str) -> str:
        self._enter("order")
        if "slowkit" in tags(email):
            await asyncio.sleep(self.slow_seconds)
        if key not in self.orders:
            self.orders[key] = (signup_id, derived_id("kit", key))
        return self.orders[key][1]

    def cancel(self, signup_id: str) -> None:
        self._enter("cancel")
        self.cancelled.add(signup_id)


class FakeIdentityProvider(FakeSystem):
    """Opens verification cases and checks documents; rejects ``fakeid``'s."""

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(fail_first=fail_first)
        self.cases: dict[str, tuple[str, str]] = {}
        """Case id -> (verification id, email)."""
        self.closed: set[str] = set()
        """Verification ids whose case was closed (or never opened)."""

    def open_case(self, key: str, verification_id: str, email: str) -> str:
        self._enter("open_case")
        case_id = derived_id("case", key)
        self.cases.setdefault(case_id, (verification_id, email))
        return case_id

    def check_documents(self, case_id: str) -> str | None:
        """Why the documents of the case are rejected, or ``None`` when they pass."""
        self._enter("check_documents")
        if case_id not in self.cases:
            return f"no case {case_id}"
        _, email = self.cases[case_id]
        return "the passport photo does not match" if "fakeid" in tags(email) else None

    def close_case(self, verification_id: str) -> None:
        self._enter("close_case")
        self.closed.add(verification_id)


class FakeMailer(FakeSystem):
    """Sends emails; ``bounce`` addresses bounce."""

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(fail_first=fail_first)
        self.sent: dict[str, Outcome] = {}
        """Idempotency key -> outcome."""

    def send(self, key: str, email: str) -> Outcome:
        self._enter("send")
        if key not in self.sent:
            bounced = "bounce" in tags(email)
            self.sent[key] = (
                Outcome(None, f"mailbox {email} does not exist")
                if bounced
                else Outcome(derived_id("msg", key))
            )
        return self.sent[key]


@dataclass
class OnboardingSystems:
    """The fake systems behind the onboarding adapters, to look at in tests."""

    crm: FakeCrm
    bureau: FakeCreditBureau
    provisioning: FakeProvisioning
    kits: FakeKitSupplier
    identity: FakeIdentityProvider
    mailer: FakeMailer

    @classmethod
    def fresh(cls, *, slow_seconds: float = 0.5) -> OnboardingSystems:
        return cls(
            FakeCrm(),
            FakeCreditBureau(),
            FakeProvisioning(),
            FakeKitSupplier(slow_seconds=slow_seconds),
            FakeIdentityProvider(),
            FakeMailer(),
        )


def crm_adapter(system: FakeCrm, *, retry: RetryPolicy | None = None) -> Adapter:
    adapter = Adapter("crm", retry=retry)

    @adapter.handles(CreateAccount, replies=(AccountCreated,))
    async def create(command: CreateAccount, ctx: CommandContext) -> AccountCreated:
        account_id = system.create_account(ctx.idempotency_key, command.signup_id)
        return AccountCreated(signup_id=command.signup_id, account_id=account_id)

    @adapter.handles(CloseAccount, replies=(AccountClosed,))
    async def close(command: CloseAccount, ctx: CommandContext) -> AccountClosed:
        closed = system.close_account(command.signup_id, command.account_id)
        return AccountClosed(signup_id=command.signup_id, account_id=closed)

    return adapter


def credit_adapter(system: FakeCreditBureau, *, retry: RetryPolicy | None = None) -> Adapter:
    adapter = Adapter("credit", retry=retry)

    @adapter.handles(CheckCredit, replies=(CreditApproved, CreditRejected, BureauUnavailable))
    async def check(
        command: CheckCredit, ctx: CommandContext
    ) -> CreditApproved | CreditRejected | BureauUnavailable:
        return system.check(ctx.idempotency_key, command.signup_id, command.email)

    return adapter


def provisioning_adapter(system: FakeProvisioning, *, retry: RetryPolicy | None = None) -> Adapter:
    adapter = Adapter("provisioning", retry=retry)

    @adapter.handles(
        ProvisionAccount,
        replies=(AccountProvisioned, ProvisioningFailed),
        refuse=lambda command, reason: ProvisioningFailed(
            signup_id=command.signup_id, reason=reason
        ),
    )
    async def provision(
        command: ProvisionAccount, ctx: CommandContext
    ) -> AccountProvisioned | ProvisioningFailed:
        outcome = system.provision(ctx.idempotency_key, command.signup_id, command.admin_email)
        if outcome.id is None:
            return ProvisioningFailed(signup_id=command.signup_id, reason=outcome.reason or "")
        return AccountProvisioned(signup_id=command.signup_id, tenant_id=outcome.id)

    @adapter.handles(DeprovisionAccount, replies=(AccountDeprovisioned,))
    async def deprovision(command: DeprovisionAccount, ctx: CommandContext) -> AccountDeprovisioned:
        system.deprovision(command.signup_id)
        return AccountDeprovisioned(signup_id=command.signup_id)

    return adapter


def welcome_kit_adapter(system: FakeKitSupplier, *, retry: RetryPolicy | None = None) -> Adapter:
    adapter = Adapter("welcome-kit", retry=retry)

    @adapter.handles(
        OrderWelcomeKit,
        replies=(WelcomeKitOrdered, WelcomeKitUnavailable),
        refuse=lambda command, reason: WelcomeKitUnavailable(
            signup_id=command.signup_id, reason=reason
        ),
    )
    async def order(command: OrderWelcomeKit, ctx: CommandContext) -> WelcomeKitOrdered:
        kit_order_id = await system.order(ctx.idempotency_key, command.signup_id, command.email)
        return WelcomeKitOrdered(signup_id=command.signup_id, kit_order_id=kit_order_id)

    @adapter.handles(CancelWelcomeKit, replies=(WelcomeKitCancelled,))
    async def cancel(command: CancelWelcomeKit, ctx: CommandContext) -> WelcomeKitCancelled:
        system.cancel(command.signup_id)
        return WelcomeKitCancelled(signup_id=command.signup_id)

    return adapter


def identity_adapter(system: FakeIdentityProvider, *, retry: RetryPolicy | None = None) -> Adapter:
    adapter = Adapter("identity", retry=retry)

    @adapter.handles(OpenVerificationCase, replies=(VerificationCaseOpened,))
    async def open_case(
        command: OpenVerificationCase, ctx: CommandContext
    ) -> VerificationCaseOpened:
        case_id = system.open_case(ctx.idempotency_key, command.verification_id, command.email)
        return VerificationCaseOpened(verification_id=command.verification_id, case_id=case_id)

    @adapter.handles(
        CheckDocuments,
        replies=(DocumentsAccepted, DocumentsRejected),
        refuse=lambda command, reason: DocumentsRejected(
            verification_id=command.verification_id, reason=reason
        ),
    )
    async def check(
        command: CheckDocuments, ctx: CommandContext
    ) -> DocumentsAccepted | DocumentsRejected:
        rejected = system.check_documents(command.case_id)
        if rejected is not None:
            return DocumentsRejected(verification_id=command.verification_id, reason=rejected)
        return DocumentsAccepted(verification_id=command.verification_id)

    @adapter.handles(CloseVerificationCase, replies=(VerificationCaseClosed,))
    async def close(command: CloseVerificationCase, ctx: CommandContext) -> VerificationCaseClosed:
        system.close_case(command.verification_id)
        return VerificationCaseClosed(verification_id=command.verification_id)

    return adapter


def email_adapter(system: FakeMailer, *, retry: RetryPolicy | None = None) -> Adapter:
    adapter = Adapter("email", retry=retry)

    @adapter.handles(
        SendWelcomeEmail,
        replies=(WelcomeEmailSent, WelcomeEmailBounced),
        refuse=lambda command, reason: WelcomeEmailBounced(
            signup_id=command.signup_id, reason=reason
        ),
    )
    async def send(
        command: SendWelcomeEmail, ctx: CommandContext
    ) -> WelcomeEmailSent | WelcomeEmailBounced:
        outcome = system.send(ctx.idempotency_key, command.email)
        if outcome.id is None:
            return WelcomeEmailBounced(signup_id=command.signup_id, reason=outcome.reason or "")
        return WelcomeEmailSent(signup_id=command.signup_id, message_id=outcome.id)

    return adapter


def onboarding_adapters(
    systems: OnboardingSystems | None = None, *, retry: RetryPolicy | None = None
) -> list[Adapter]:
    """The six onboarding adapters, over the given (or fresh) fake systems."""
    s = OnboardingSystems.fresh() if systems is None else systems
    return [
        crm_adapter(s.crm, retry=retry),
        credit_adapter(s.bureau, retry=retry),
        provisioning_adapter(s.provisioning, retry=retry),
        welcome_kit_adapter(s.kits, retry=retry),
        identity_adapter(s.identity, retry=retry),
        email_adapter(s.mailer, retry=retry),
    ]
