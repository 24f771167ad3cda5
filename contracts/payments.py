"""Commands and replies of the payments adapter."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bus_orchestrator.core.messages import Command, Reply, Secret
from contracts.orders import Identifier, Money


class ChargePayment(Command):
    message_type = "payments.charge_payment.v1"

    order_id: Identifier
    customer_id: Identifier
    amount: Money
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    payment_token: Secret | None = None


class PaymentCharged(Reply):
    message_type = "payments.payment_charged.v1"

    order_id: Identifier
    payment_id: Identifier
    amount: Money
    currency: str


class PaymentDeclined(Reply):
    message_type = "payments.payment_declined.v1"

    order_id: Identifier
    reason: str


class RefundPayment(Command):
    message_type = "payments.refund_payment.v1"

    order_id: Identifier
    payment_id: Identifier | None = None
    """None when the charge's outcome is unknown (its step timed out)."""
    amount: Money
    currency: Annotated[str, Field(min_length=3, max_length=3)]


class PaymentRefunded(Reply):
    message_type = "payments.payment_refunded.v1"

    order_id: Identifier
    payment_id: Identifier | None = None
