"""Commands and replies of the inventory adapter."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from bus_orchestrator.core.messages import Command, Reply
from contracts.orders import Identifier


class StockLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Identifier
    quantity: Annotated[int, Field(gt=0)]


class ReserveStock(Command):
    message_type = "inventory.reserve_stock.v1"

    order_id: Identifier
    items: Annotated[tuple[StockLine, ...], Field(min_length=1)]


class StockReserved(Reply):
    message_type = "inventory.stock_reserved.v1"

    order_id: Identifier
    reservation_id: Identifier


class StockUnavailable(Reply):
    message_type = "inventory.stock_unavailable.v1"

    order_id: Identifier
    skus: tuple[str, ...] = ()
    reason: str


class ReleaseStock(Command):
    message_type = "inventory.release_stock.v1"

    order_id: Identifier
    reservation_id: Identifier | None = None
    """None when the reservation's outcome is unknown (its step timed out)."""


class StockReleased(Reply):
    message_type = "inventory.stock_released.v1"

    order_id: Identifier
    reservation_id: Identifier | None = None
