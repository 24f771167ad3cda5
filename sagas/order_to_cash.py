"""Order-to-cash: reserve stock, charge payment, create shipment; undo in reverse on failure."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict

from bus_orchestrator.core import Compensate, Reaction, Reply, SagaDefinition, Step
from contracts import (
    ORDER_TO_CASH,
    ChargePayment,
    CreateShipment,
    OrderCancelled,
    OrderPlaced,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
    ReleaseStock,
    ReserveStock,
    ShipmentCreated,
    ShipmentRejected,
    StockReleased,
    StockReserved,
    StockUnavailable,
)
from contracts.inventory import StockLine


class OrderData(BaseModel):
    """What the saga knows: the order, and what the adapters told it so far."""

    model_config = ConfigDict(frozen=True)

    order: OrderPlaced
    reservation_id: str | None = None
    payment_id: str | None = None
    shipment_id: str | None = None
    cancel_reason: str | None = None


def _lines(data: OrderData) -> tuple[StockLine, ...]:
    return tuple(StockLine(sku=i.sku, quantity=i.quantity) for i in data.order.items)


def _remember(data: OrderData, reply: Reply) -> OrderData:
    if isinstance(reply, StockReserved):
        return data.model_copy(update={"reservation_id": reply.reservation_id})
    if isinstance(reply, PaymentCharged):
        return data.model_copy(update={"payment_id": reply.payment_id})
    if isinstance(reply, ShipmentCreated):
        return data.model_copy(update={"shipment_id": reply.shipment_id})
    return data


def _cancel(data: OrderData, event: OrderCancelled) -> Compensate:
    return Compensate(f"order cancelled: {event.reason or 'no reason given'}")


FORWARD_ATTEMPTS = 2
"""A command whose reply is late is sent once more (same id: adapters deduplicate it)
before the step counts as timed out; that recovers a command lost on the way."""


def build(
    step_timeout: timedelta = timedelta(seconds=30),
) -> SagaDefinition[OrderData, OrderPlaced]:
    """The order-to-cash saga; ``step_timeout`` bounds the wait for each adapter's reply."""
    return SagaDefinition(
        name=ORDER_TO_CASH,
        data_model=OrderData,
        started_by=OrderPlaced,
        correlate=lambda e: e.order_id,
        initial_data=lambda e: OrderData(order=e),
        steps=(
            Step(
                name="reserve_stock",
                command=lambda d: ReserveStock(order_id=d.order.order_id, items=_lines(d)),
                succeeds_on=(StockReserved,),
                fails_on=(StockUnavailable,),
                on_reply=_remember,
                compensation=lambda d: ReleaseStock(
                    order_id=d.order.order_id, reservation_id=d.reservation_id
                ),
                compensated_on=(StockReleased,),
                sends=ReserveStock,
                compensation_sends=ReleaseStock,
                timeout=step_timeout,
                max_attempts=FORWARD_ATTEMPTS,
            ),
            Step(
                name="charge_payment",
                command=lambda d: ChargePayment(
                    order_id=d.order.order_id,
                    customer_id=d.order.customer_id,
                    amount=d.order.total,
                    currency=d.order.currency,
                    payment_token=d.order.payment_token,
                ),
                succeeds_on=(PaymentCharged,),
                fails_on=(PaymentDeclined,),
                on_reply=_remember,
                compensation=lambda d: RefundPayment(
                    order_id=d.order.order_id,
                    payment_id=d.payment_id,
                    amount=d.order.total,
                    currency=d.order.currency,
                ),
                compensated_on=(PaymentRefunded,),
                sends=ChargePayment,
                compensation_sends=RefundPayment,
                timeout=step_timeout,
                max_attempts=FORWARD_ATTEMPTS,
            ),
            Step(
                name="create_shipment",
                command=lambda d: CreateShipment(
                    order_id=d.order.order_id,
                    items=_lines(d),
                    shipping_address=d.order.shipping_address,
                ),
                succeeds_on=(ShipmentCreated,),
                fails_on=(ShipmentRejected,),
                on_reply=_remember,
                sends=CreateShipment,
                timeout=step_timeout,
                max_attempts=FORWARD_ATTEMPTS,
            ),
        ),
        reactions=(Reaction(OrderCancelled, correlate=lambda e: e.order_id, react=_cancel),),
    )
