"""Message contracts of the second example domain: customer onboarding.

A signup (``onboarding.customer_signed_up.v1``) starts the ``onboarding`` saga, whose
correlation id is the signup's id; the customer id names the customer across signups, and
the saga holds a lock on it. Identity verification is a saga of its own
(``identity_verification``, correlation id ``verification_id``), started by the onboarding
saga and ended by the identity provider's ``identity.identity_verified.v1``.

The commands and replies are grouped by the adapter that handles them: ``crm``,
``credit``, ``provisioning``, ``welcome_kit``, ``email`` and ``identity``. This folder
also holds the app's exported ``asyncapi.yaml`` and ``schemas/`` (``bus-orchestrator
contracts export --app example:create_onboarding_app --out contracts/onboarding``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bus_orchestrator.core.messages import Command, Event, Reply

Identifier = Annotated[str, Field(min_length=1, max_length=200)]
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]
Reason = Annotated[str, Field(min_length=1, max_length=1000)]

# -- events --------------------------------------------------------------------------------


class CustomerSignedUp(Event):
    """A customer signed up. Starts the onboarding saga; correlation id = ``signup_id``."""

    message_type = "onboarding.customer_signed_up.v1"

    signup_id: Identifier
    customer_id: Identifier
    """The same customer may sign up twice: their onboardings run one after the other."""
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email
    country: Annotated[str, Field(min_length=2, max_length=2)]


class VerificationRequested(Event):
    """Starts an identity verification saga; correlation id = ``verification_id``."""

    message_type = "identity.verification_requested.v1"

    verification_id: Identifier
    customer_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email


class IdentityVerified(Event):
    """The identity provider has verified the person behind a verification."""

    message_type = "identity.identity_verified.v1"

    verification_id: Identifier
    method: Annotated[str, Field(min_length=1, max_length=100)] = "document"


# -- crm -----------------------------------------------------------------------------------


class CreateAccount(Command):
    message_type = "crm.create_account.v1"

    signup_id: Identifier
    customer_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email


class AccountCreated(Reply):
    message_type = "crm.account_created.v1"

    signup_id: Identifier
    account_id: Identifier


class CloseAccount(Command):
    message_type = "crm.close_account.v1"

    signup_id: Identifier
    account_id: Identifier | None = None
    """None when the account's creation timed out: the CRM closes the signup's, if any."""
    reason: Reason


class AccountClosed(Reply):
    message_type = "crm.account_closed.v1"

    signup_id: Identifier
    account_id: Identifier | None = None


# -- credit --------------------------------------------------------------------------------


class CheckCredit(Command):
    message_type = "credit.check_credit.v1"

    signup_id: Identifier
    customer_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email
    country: Annotated[str, Field(min_length=2, max_length=2)]


class CreditApproved(Reply):
    message_type = "credit.credit_approved.v1"

    signup_id: Identifier
    limit: Annotated[int, Field(ge=0)]
    """The credit limit granted, in whole units of the customer's currency."""


class CreditRejected(Reply):
    message_type = "credit.credit_rejected.v1"

    signup_id: Identifier
    reason: Reason


class BureauUnavailable(Reply):
    """The credit bureau did not answer: transient, the check is worth trying again."""

    message_type = "credit.bureau_unavailable.v1"

    signup_id: Identifier
    reason: Reason


# -- provisioning --------------------------------------------------------------------------


class ProvisionAccount(Command):
    message_type = "provisioning.provision_account.v1"

    signup_id: Identifier
    account_id: Identifier
    admin_email: Email
    """The address of the tenant's first administrator: the customer's."""
    credit_limit: Annotated[int, Field(ge=0)]


class AccountProvisioned(Reply):
    message_type = "provisioning.account_provisioned.v1"

    signup_id: Identifier
    tenant_id: Identifier


class ProvisioningFailed(Reply):
    message_type = "provisioning.provisioning_failed.v1"

    signup_id: Identifier
    reason: Reason


class DeprovisionAccount(Command):
    message_type = "provisioning.deprovision_account.v1"

    signup_id: Identifier
    tenant_id: Identifier | None = None
    """None when provisioning timed out: the system removes the signup's tenant, if any."""


class AccountDeprovisioned(Reply):
    message_type = "provisioning.account_deprovisioned.v1"

    signup_id: Identifier


# -- welcome kit ---------------------------------------------------------------------------


class OrderWelcomeKit(Command):
    message_type = "welcome_kit.order_kit.v1"

    signup_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email
    country: Annotated[str, Field(min_length=2, max_length=2)]


class WelcomeKitOrdered(Reply):
    message_type = "welcome_kit.kit_ordered.v1"

    signup_id: Identifier
    kit_order_id: Identifier


class WelcomeKitUnavailable(Reply):
    message_type = "welcome_kit.kit_unavailable.v1"

    signup_id: Identifier
    reason: Reason


class CancelWelcomeKit(Command):
    message_type = "welcome_kit.cancel_kit.v1"

    signup_id: Identifier
    kit_order_id: Identifier | None = None


class WelcomeKitCancelled(Reply):
    message_type = "welcome_kit.kit_cancelled.v1"

    signup_id: Identifier


# -- identity ------------------------------------------------------------------------------


class OpenVerificationCase(Command):
    message_type = "identity.open_case.v1"

    verification_id: Identifier
    customer_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email


class VerificationCaseOpened(Reply):
    message_type = "identity.case_opened.v1"

    verification_id: Identifier
    case_id: Identifier


class CloseVerificationCase(Command):
    message_type = "identity.close_case.v1"

    verification_id: Identifier
    case_id: Identifier | None = None
    reason: Reason


class VerificationCaseClosed(Reply):
    message_type = "identity.case_closed.v1"

    verification_id: Identifier


class CheckDocuments(Command):
    message_type = "identity.check_documents.v1"

    verification_id: Identifier
    case_id: Identifier


class DocumentsAccepted(Reply):
    message_type = "identity.documents_accepted.v1"

    verification_id: Identifier


class DocumentsRejected(Reply):
    message_type = "identity.documents_rejected.v1"

    verification_id: Identifier
    reason: Reason


# -- email ---------------------------------------------------------------------------------


class SendWelcomeEmail(Command):
    message_type = "email.send_welcome_email.v1"

    signup_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    email: Email
    account_id: Identifier


class WelcomeEmailSent(Reply):
    message_type = "email.welcome_email_sent.v1"

    signup_id: Identifier
    message_id: Identifier


class WelcomeEmailBounced(Reply):
    message_type = "email.welcome_email_bounced.v1"

    signup_id: Identifier
    reason: Reason


__all__ = [
    "AccountClosed",
    "AccountCreated",
    "AccountDeprovisioned",
    "AccountProvisioned",
    "BureauUnavailable",
    "CancelWelcomeKit",
    "CheckCredit",
    "CheckDocuments",
    "CloseAccount",
    "CloseVerificationCase",
    "CreateAccount",
    "CreditApproved",
    "CreditRejected",
    "CustomerSignedUp",
    "DeprovisionAccount",
    "DocumentsAccepted",
    "DocumentsRejected",
    "IdentityVerified",
    "OpenVerificationCase",
    "OrderWelcomeKit",
    "ProvisionAccount",
    "ProvisioningFailed",
    "SendWelcomeEmail",
    "VerificationCaseClosed",
    "VerificationCaseOpened",
    "VerificationRequested",
    "WelcomeEmailBounced",
    "WelcomeEmailSent",
    "WelcomeKitCancelled",
    "WelcomeKitOrdered",
    "WelcomeKitUnavailable",
]
