"""The inventory adapter, over a fake warehouse system.

Rules of the fake: a reservation fails when any line's SKU starts with ``OOS-`` (out of
stock), naming those SKUs; otherwise it succeeds with an id derived from the idempotency
key. A release with no reservation id releases whatever the order holds. A reservation its
release overtook is answered ``StockUnavailable`` by the kit (``refuse=``), never reserved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters.fake_system import FakeSystem, derived_id
from bus_orchestrator.adapters import Adapter, CommandContext, RetryPolicy
from contracts import (
    ReleaseStock,
    ReserveStock,
    StockReleased,
    StockReserved,
    StockUnavailable,
)

OUT_OF_STOCK_PREFIX = "OOS-"


@dataclass(frozen=True, slots=True)
class Reservation:
    """The warehouse's answer to a reservation request."""

    order_id: str
    reservation_id: str | None
    """``None`` when nothing was reserved."""
    unavailable: tuple[str, ...] = ()
    released: bool = False


class FakeInventory(FakeSystem):
    """A warehouse whose records are keyed by the caller's idempotency key."""

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__(fail_first=fail_first)
        self.reservations: dict[str, Reservation] = {}
        self.releases: dict[str, str | None] = {}
        """Idempotency key of each release -> the reservation it released (or ``None``)."""

    def reserve(self, key: str, order_id: str, lines: Sequence[tuple[str, int]]) -> Reservation:
        """Reserve ``(sku, quantity)`` lines; the same key returns the first answer."""
        self._enter("reserve")
        if key in self.reservations:
            return self.reservations[key]
        unavailable = tuple(sku for sku, _ in lines if sku.startswith(OUT_OF_STOCK_PREFIX))
        reservation = Reservation(
            order_id=order_id,
            reservation_id=None if unavailable else derived_id("rsv", key),
            unavailable=unavailable,
        )
        self.reservations[key] = reservation
        return reservation

    def release(self, key: str, order_id: str, reservation_id: str | None) -> str | None:
        """Release a reservation (any of the order's when ``reservation_id`` is ``None``).

        Returns the id released, ``None`` when the order held nothing; the same key
        returns the first answer.
        """
        self._enter("release")
        if key in self.releases:
            return self.releases[key]
        released: str | None = None
        for held_key, held in self.reservations.items():
            if held.reservation_id is None or held.released or held.order_id != order_id:
                continue
            if reservation_id in (None, held.reservation_id):
                self.reservations[held_key] = Reservation(
                    held.order_id, held.reservation_id, held.unavailable, released=True
                )
                released = held.reservation_id
                break
        self.releases[key] = released if released is not None else reservation_id
        return self.releases[key]


def inventory_adapter(system: FakeInventory, *, retry: RetryPolicy | None = None) -> Adapter:
    """The ``inventory`` adapter: ``ReserveStock`` and ``ReleaseStock`` on ``system``."""
    adapter = Adapter("inventory", retry=retry)

    @adapter.handles(
        ReserveStock,
        replies=(StockReserved, StockUnavailable),
        refuse=lambda command, reason: StockUnavailable(order_id=command.order_id, reason=reason),
    )
    async def reserve(
        command: ReserveStock, ctx: CommandContext
    ) -> StockReserved | StockUnavailable:
        lines = [(line.sku, line.quantity) for line in command.items]
        result = system.reserve(ctx.idempotency_key, command.order_id, lines)
        if result.reservation_id is None:
            return StockUnavailable(
                order_id=command.order_id,
                skus=result.unavailable,
                reason=f"out of stock: {', '.join(result.unavailable)}",
            )
        return StockReserved(order_id=command.order_id, reservation_id=result.reservation_id)

    @adapter.handles(ReleaseStock, replies=(StockReleased,))
    async def release(command: ReleaseStock, ctx: CommandContext) -> StockReleased:
        released = system.release(ctx.idempotency_key, command.order_id, command.reservation_id)
        return StockReleased(order_id=command.order_id, reservation_id=released)

    return adapter
