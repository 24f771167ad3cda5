"""The payments adapter, over a fake payment gateway.

Rules of the fake: a charge above ``DECLINE_ABOVE`` is declined; otherwise it succeeds with
a payment id derived from the idempotency key. A refund with no payment id refunds
whatever charge the order has, if any. A charge its refund overtook is declined by the kit
(``refuse=``) without reaching the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from adapters.fake_system import FakeSystem, derived_id
from bus_orchestrator.adapters import Adapter, CommandContext, RetryPolicy
from contracts import (
    ChargePayment,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
)

DECLINE_ABOVE = Decimal("10000")


@dataclass(frozen=True, slots=True)
class Charge:
    """The gateway's answer to a charge."""

    order_id: str
    amount: Decimal
    currency: str
    payment_id: str | None
    """``None`` when the charge was declined."""
    declined_reason: str | None = None
    refunded: bool = False


class FakePaymentGateway(FakeSystem):
    """A payment gateway whose records are keyed by the caller's idempotency key."""

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(fail_first=fail_first)
        self.charges: dict[str, Charge] = {}
        self.refunds: dict[str, str | None] = {}
        """Idempotency key of each refund -> the payment it refunded (or ``None``)."""

    def charge(self, key: str, order_id: str, amount: Decimal, currency: str) -> Charge:
        """Charge ``amount``; the same key returns the first answer."""
        self._enter("charge")
        if key in self.charges:
            return self.charges[key]
        if amount > DECLINE_ABOVE:
            charge = Charge(
                order_id, amount, currency, None, f"amount {amount} {currency} over the limit"
            )
        else:
            charge = Charge(order_id, amount, currency, derived_id("pay", key))
        self.charges[key] = charge
        return charge

    def refund(self, key: str, order_id: str, payment_id: str | None) -> str | None:
        """Refund a charge (the order's, when ``payment_id`` is ``None``).

        Returns the payment id refunded, ``None`` when the order was never charged; the
        same key returns the first answer.
        """
        self._enter("refund")
        if key in self.refunds:
            return self.refunds[key]
        refunded: str | None = None
        for held_key, held in self.charges.items():
            if held.payment_id is None or held.refunded or held.order_id != order_id:
                continue
            if payment_id in (None, held.payment_id):
                self.charges[held_key] = Charge(
                    held.order_id, held.amount, held.currency, held.payment_id, refunded=True
                )
                refunded = held.payment_id
                break
        self.refunds[key] = refunded if refunded is not None else payment_id
        return self.refunds[key]


def payments_adapter(system: FakePaymentGateway, *, retry: RetryPolicy | None = None) -> Adapter:
    """The ``payments`` adapter: ``ChargePayment`` and ``RefundPayment`` on ``system``."""
    adapter = Adapter("payments", retry=retry)

    @adapter.handles(
        ChargePayment,
        replies=(PaymentCharged, PaymentDeclined),
        refuse=lambda command, reason: PaymentDeclined(order_id=command.order_id, reason=reason),
    )
    async def charge(
        command: ChargePayment, ctx: CommandContext
    ) -> PaymentCharged | PaymentDeclined:
        result = system.charge(
            ctx.idempotency_key, command.order_id, command.amount, command.currency
        )
        if result.payment_id is None:
            return PaymentDeclined(
                order_id=command.order_id, reason=result.declined_reason or "declined"
            )
        return PaymentCharged(
            order_id=command.order_id,
            payment_id=result.payment_id,
            amount=result.amount,
            currency=result.currency,
        )

    @adapter.handles(RefundPayment, replies=(PaymentRefunded,))
    async def refund(command: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        refunded = system.refund(ctx.idempotency_key, command.order_id, command.payment_id)
        return PaymentRefunded(order_id=command.order_id, payment_id=refunded)

    return adapter
