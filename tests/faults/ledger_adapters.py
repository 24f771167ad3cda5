"""The example adapters over the ledger fakes, as a process (test-only entry point).

``python -m tests.faults.ledger_adapters``, configured like ``bus-orchestrator adapters``
(``BUS_*`` variables); SIGTERM or SIGINT stops it cleanly, kill -9 loses nothing the ledger
holds. The ``fake_ledger`` table must exist in ``BUS_DATABASE_SCHEMA`` (``LEDGER_DDL``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from bus_orchestrator.adapters import Adapter, CommandContext
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.store.postgres import create_pool
from bus_orchestrator.telemetry.logs import configure_logging
from contracts import (
    REGISTRY,
    ChargePayment,
    CreateShipment,
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
from tests.faults.ledger import Ledger
from tests.integration.harness import EXAMPLE_APP


def ledger_adapters(ledger: Ledger) -> list[Adapter]:
    """Inventory, payments and shipping, with the example adapters' replies, on ``ledger``."""
    inventory = Adapter("inventory", REGISTRY)
    payments = Adapter("payments", REGISTRY)
    shipping = Adapter("shipping", REGISTRY)

    @inventory.handles(ReserveStock, replies=(StockReserved, StockUnavailable))
    async def reserve(
        command: ReserveStock, ctx: CommandContext
    ) -> StockReserved | StockUnavailable:
        skus = [line.sku for line in command.items]
        entry = await ledger.reserve(ctx.idempotency_key, command.order_id, skus)
        if not entry.effect or entry.ref is None:
            unavailable = tuple(entry.detail.split(", "))
            return StockUnavailable(
                order_id=command.order_id, skus=unavailable, reason=f"out of stock: {entry.detail}"
            )
        return StockReserved(order_id=command.order_id, reservation_id=entry.ref)

    @inventory.handles(ReleaseStock, replies=(StockReleased,))
    async def release(command: ReleaseStock, ctx: CommandContext) -> StockReleased:
        entry = await ledger.release(ctx.idempotency_key, command.order_id, command.reservation_id)
        return StockReleased(order_id=command.order_id, reservation_id=entry.ref)

    @payments.handles(ChargePayment, replies=(PaymentCharged, PaymentDeclined))
    async def charge(
        command: ChargePayment, ctx: CommandContext
    ) -> PaymentCharged | PaymentDeclined:
        entry = await ledger.charge(
            ctx.idempotency_key, command.order_id, command.amount, command.currency
        )
        if not entry.effect or entry.ref is None:
            return PaymentDeclined(order_id=command.order_id, reason=entry.detail or "declined")
        return PaymentCharged(
            order_id=command.order_id,
            payment_id=entry.ref,
            amount=command.amount,
            currency=command.currency,
        )

    @payments.handles(RefundPayment, replies=(PaymentRefunded,))
    async def refund(command: RefundPayment, ctx: CommandContext) -> PaymentRefunded:
        entry = await ledger.refund(ctx.idempotency_key, command.order_id, command.payment_id)
        return PaymentRefunded(order_id=command.order_id, payment_id=entry.ref)

    @shipping.handles(CreateShipment, replies=(ShipmentCreated, ShipmentRejected))
    async def ship(
        command: CreateShipment, ctx: CommandContext
    ) -> ShipmentCreated | ShipmentRejected:
        entry = await ledger.ship(
            ctx.idempotency_key, command.order_id, command.shipping_address.country
        )
        if not entry.effect or entry.ref is None:
            return ShipmentRejected(order_id=command.order_id, reason=entry.detail or "rejected")
        return ShipmentCreated(order_id=command.order_id, shipment_id=entry.ref)

    return [inventory, payments, shipping]


async def main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(settings)
    try:
        await run_adapters(settings, ledger_adapters(Ledger(pool)), stop, pool, app=EXAMPLE_APP)
    finally:
        await pool.close()


if __name__ == "__main__":
    settings = Settings()
    configure_logging("info", settings.log_format, stream=sys.stderr)
    logging.getLogger(__name__).info("ledger adapters starting")
    asyncio.run(main(settings))
