"""Events of the orders context."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from bus_orchestrator.core.messages import DecimalString, Event, Secret

Money = Annotated[Decimal, DecimalString(max_digits=18, decimal_places=2)]
"""An amount of money: a decimal string on the wire (``"39.80"``), sent with 2 places."""
Identifier = Annotated[str, Field(min_length=1, max_length=200)]


class LineItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Identifier
    quantity: Annotated[int, Field(gt=0)]
    unit_price: Money


class Address(BaseModel):
    """A postal address. Only ``country`` (ISO 3166-1 alpha-2) is required."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    country: Annotated[str, Field(min_length=2, max_length=2)]
    name: str | None = None
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    postal_code: str | None = None


class OrderPlaced(Event):
    """A customer placed an order. Starts the order-to-cash saga; correlation id = order_id."""

    message_type = "orders.order_placed.v1"

    order_id: Identifier
    customer_id: Identifier
    items: Annotated[tuple[LineItem, ...], Field(min_length=1)]
    total: Money
    currency: Annotated[str, Field(min_length=3, max_length=3)]
    shipping_address: Address
    payment_token: Secret | None = None
    """The payment provider's token for the customer's card; secret."""


class OrderCancelled(Event):
    """The customer cancelled the order; a running saga undoes what it did."""

    message_type = "orders.order_cancelled.v1"

    order_id: Identifier
    reason: str | None = None
