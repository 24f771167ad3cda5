"""Example adapters of the order-to-cash domain, each over a fake external system.

The fakes follow fixed rules (see each module) and keep their records by idempotency key,
so they show, and let tests check, that each command has its effect once.
"""

from __future__ import annotations

from adapters.inventory import FakeInventory, inventory_adapter
from adapters.payments import FakePaymentGateway, payments_adapter
from adapters.shipping import FakeCarrier, shipping_adapter
from bus_orchestrator.adapters import Adapter, RetryPolicy


def example_adapters(
    *,
    inventory: FakeInventory | None = None,
    payments: FakePaymentGateway | None = None,
    shipping: FakeCarrier | None = None,
    retry: RetryPolicy | None = None,
) -> list[Adapter]:
    """The inventory, payments and shipping adapters, over the given (or fresh) fakes."""
    return [
        inventory_adapter(FakeInventory() if inventory is None else inventory, retry=retry),
        payments_adapter(FakePaymentGateway() if payments is None else payments, retry=retry),
        shipping_adapter(FakeCarrier() if shipping is None else shipping, retry=retry),
    ]


__all__ = [
    "FakeCarrier",
    "FakeInventory",
    "FakePaymentGateway",
    "example_adapters",
    "inventory_adapter",
    "payments_adapter",
    "shipping_adapter",
]
