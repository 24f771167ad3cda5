"""Message contracts of the example domain (order-to-cash).

Each model is frozen, forbids unknown fields, and names its stable type string. Money is a
decimal string on the wire. ``REGISTRY`` maps every type string to its model, including
the engine's events about the order-to-cash saga (``contracts.lifecycle``).
"""

from bus_orchestrator.core.messages import ContractRegistry
from contracts.inventory import (
    ReleaseStock,
    ReserveStock,
    StockReleased,
    StockReserved,
    StockUnavailable,
)
from contracts.lifecycle import (
    ORDER_TO_CASH,
    OrderToCashCancelRequested,
    OrderToCashCompensated,
    OrderToCashCompleted,
    OrderToCashFailed,
)
from contracts.orders import Address, LineItem, OrderCancelled, OrderPlaced
from contracts.payments import (
    ChargePayment,
    PaymentCharged,
    PaymentDeclined,
    PaymentRefunded,
    RefundPayment,
)
from contracts.shipping import CreateShipment, ShipmentCreated, ShipmentRejected

REGISTRY = ContractRegistry(
    [
        OrderPlaced,
        OrderCancelled,
        ReserveStock,
        StockReserved,
        StockUnavailable,
        ReleaseStock,
        StockReleased,
        ChargePayment,
        PaymentCharged,
        PaymentDeclined,
        RefundPayment,
        PaymentRefunded,
        CreateShipment,
        ShipmentCreated,
        ShipmentRejected,
        OrderToCashCompleted,
        OrderToCashCompensated,
        OrderToCashFailed,
        OrderToCashCancelRequested,
    ]
)

__all__ = [
    "ORDER_TO_CASH",
    "REGISTRY",
    "Address",
    "ChargePayment",
    "CreateShipment",
    "LineItem",
    "OrderCancelled",
    "OrderPlaced",
    "OrderToCashCancelRequested",
    "OrderToCashCompensated",
    "OrderToCashCompleted",
    "OrderToCashFailed",
    "PaymentCharged",
    "PaymentDeclined",
    "PaymentRefunded",
    "RefundPayment",
    "ReleaseStock",
    "ReserveStock",
    "ShipmentCreated",
    "ShipmentRejected",
    "StockReleased",
    "StockReserved",
    "StockUnavailable",
]
