"""Commands and replies of the shipping adapter."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from bus_orchestrator.core.messages import Command, Reply
from contracts.inventory import StockLine
from contracts.orders import Address, Identifier


class CreateShipment(Command):
    message_type = "shipping.create_shipment.v1"

    order_id: Identifier
    items: Annotated[tuple[StockLine, ...], Field(min_length=1)]
    shipping_address: Address


class ShipmentCreated(Reply):
    message_type = "shipping.shipment_created.v1"

    order_id: Identifier
    shipment_id: Identifier


class ShipmentRejected(Reply):
    message_type = "shipping.shipment_rejected.v1"

    order_id: Identifier
    reason: str
