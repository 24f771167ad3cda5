"""The shipping adapter, over a fake carrier.

Rule of the fake: a shipment to country ``ZZ`` is rejected; any other is created with a
shipment id derived from the idempotency key. A shipment a compensation overtook is
answered ``ShipmentRejected`` by the kit (``refuse=``), never booked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.fake_system import FakeSystem, derived_id
from bus_orchestrator.adapters import Adapter, CommandContext, RetryPolicy
from contracts import CreateShipment, ShipmentCreated, ShipmentRejected

REJECTED_COUNTRIES = frozenset({"ZZ"})


@dataclass(frozen=True, slots=True)
class Shipment:
    """The carrier's answer to a shipment request."""

    order_id: str
    country: str
    lines: tuple[tuple[str, int], ...]
    shipment_id: str | None
    """``None`` when the shipment was rejected."""
    rejected_reason: str | None = None


class FakeCarrier(FakeSystem):
    """A carrier whose records are keyed by the caller's idempotency key."""

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(fail_first=fail_first)
        self.shipments: dict[str, Shipment] = {}

    def create_shipment(
        self, key: str, order_id: str, country: str, lines: Sequence[tuple[str, int]]
    ) -> Shipment:
        """Book a shipment of ``(sku, quantity)`` lines; the same key returns the first answer."""
        self._enter("create_shipment")
        if key in self.shipments:
            return self.shipments[key]
        if country in REJECTED_COUNTRIES:
            shipment = Shipment(
                order_id, country, tuple(lines), None, f"no delivery to country {country}"
            )
        else:
            shipment = Shipment(order_id, country, tuple(lines), derived_id("shp", key))
        self.shipments[key] = shipment
        return shipment


def shipping_adapter(system: FakeCarrier, *, retry: RetryPolicy | None = None) -> Adapter:
    """The ``shipping`` adapter: ``CreateShipment`` on ``system``."""
    adapter = Adapter("shipping", retry=retry)

    @adapter.handles(
        CreateShipment,
        replies=(ShipmentCreated, ShipmentRejected),
        refuse=lambda command, reason: ShipmentRejected(order_id=command.order_id, reason=reason),
    )
    async def create(
        command: CreateShipment, ctx: CommandContext
    ) -> ShipmentCreated | ShipmentRejected:
        lines = [(line.sku, line.quantity) for line in command.items]
        result = system.create_shipment(
            ctx.idempotency_key, command.order_id, command.shipping_address.country, lines
        )
        if result.shipment_id is None:
            return ShipmentRejected(
                order_id=command.order_id, reason=result.rejected_reason or "rejected"
            )
        return ShipmentCreated(order_id=command.order_id, shipment_id=result.shipment_id)

    return adapter
