"""The example adapters' rules, on the fake systems and through the handlers, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters import (
    FakeCarrier,
    FakeInventory,
    FakePaymentGateway,
    example_adapters,
    inventory_adapter,
    payments_adapter,
    shipping_adapter,
)
from bus_orchestrator.adapters import CommandContext
from bus_orchestrator.core.messages import Command
from bus_orchestrator.errors import TransientAdapterError
from contracts import (
    Address,
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
from contracts.inventory import StockLine


def ctx(command: Command, key: str = "cmd-1") -> CommandContext:
    return CommandContext(
        adapter="test",
        command_id=key,
        command_type=command.message_type,
        correlation_id="order-1",
        causation_id=None,
        received_at=datetime(2024, 5, 1, tzinfo=UTC),
    )


def reserve(*skus: str) -> ReserveStock:
    return ReserveStock(
        order_id="order-1", items=tuple(StockLine(sku=sku, quantity=1) for sku in skus)
    )


def charge(amount: str) -> ChargePayment:
    return ChargePayment(
        order_id="order-1", customer_id="c-1", amount=Decimal(amount), currency="EUR"
    )


def ship(country: str) -> CreateShipment:
    return CreateShipment(
        order_id="order-1",
        items=(StockLine(sku="A", quantity=2),),
        shipping_address=Address(country=country),
    )


# -- inventory ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skus", "reply_type", "unavailable"),
    [
        (("A",), StockReserved, ()),
        (("A", "B-OOS-"), StockReserved, ()),  # only a leading OOS- counts
        (("oos-a",), StockReserved, ()),  # and it is case-sensitive
        (("OOS-1",), StockUnavailable, ("OOS-1",)),
        (("A", "OOS-1", "B", "OOS-2"), StockUnavailable, ("OOS-1", "OOS-2")),
    ],
)
async def test_stock_is_reserved_unless_a_sku_is_out_of_stock(
    skus: tuple[str, ...], reply_type: type, unavailable: tuple[str, ...]
) -> None:
    system = FakeInventory()
    command = reserve(*skus)

    reply = await inventory_adapter(system).call(command, ctx(command))

    assert type(reply) is reply_type
    assert reply.order_id == "order-1"
    if isinstance(reply, StockUnavailable):
        assert reply.skus == unavailable
        assert all(sku in reply.reason for sku in unavailable)


async def test_the_reservation_id_is_derived_from_the_idempotency_key() -> None:
    adapter = inventory_adapter(FakeInventory())
    command = reserve("A")

    first = await adapter.call(command, ctx(command, "k1"))
    again = await inventory_adapter(FakeInventory()).call(command, ctx(command, "k1"))
    other = await adapter.call(command, ctx(command, "k2"))

    assert isinstance(first, StockReserved)
    assert isinstance(again, StockReserved)
    assert isinstance(other, StockReserved)
    assert first.reservation_id == again.reservation_id != other.reservation_id


@pytest.mark.parametrize("given", ["named", None])
async def test_a_release_releases_the_orders_reservation(given: str | None) -> None:
    system = FakeInventory()
    adapter = inventory_adapter(system)
    held = system.reserve("k-reserve", "order-1", [("A", 1)])
    assert held.reservation_id is not None
    command = ReleaseStock(
        order_id="order-1", reservation_id=held.reservation_id if given else None
    )

    reply = await adapter.call(command, ctx(command, "k-release"))

    assert reply == StockReleased(order_id="order-1", reservation_id=held.reservation_id)
    assert system.reservations["k-reserve"].released


async def test_releasing_an_order_with_nothing_reserved_is_a_no_op() -> None:
    system = FakeInventory()
    command = ReleaseStock(order_id="order-9")

    reply = await inventory_adapter(system).call(command, ctx(command))

    assert reply == StockReleased(order_id="order-9", reservation_id=None)
    assert system.reservations == {}


# -- payments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "reply_type"),
    [
        ("0", PaymentCharged),
        ("99.95", PaymentCharged),
        ("10000", PaymentCharged),  # the limit itself is allowed
        ("10000.01", PaymentDeclined),
        ("250000", PaymentDeclined),
    ],
)
async def test_a_charge_is_declined_above_ten_thousand(amount: str, reply_type: type) -> None:
    system = FakePaymentGateway()
    command = charge(amount)

    reply = await payments_adapter(system).call(command, ctx(command))

    assert type(reply) is reply_type
    if isinstance(reply, PaymentCharged):
        assert (reply.amount, reply.currency) == (Decimal(amount), "EUR")
        assert reply.payment_id == system.charges["cmd-1"].payment_id


async def test_the_payment_id_is_derived_from_the_idempotency_key() -> None:
    command = charge("10")

    first = await payments_adapter(FakePaymentGateway()).call(command, ctx(command, "k1"))
    again = await payments_adapter(FakePaymentGateway()).call(command, ctx(command, "k1"))
    other = await payments_adapter(FakePaymentGateway()).call(command, ctx(command, "k2"))

    assert isinstance(first, PaymentCharged)
    assert isinstance(again, PaymentCharged)
    assert isinstance(other, PaymentCharged)
    assert first.payment_id == again.payment_id != other.payment_id


@pytest.mark.parametrize("given", ["named", None])
async def test_a_refund_refunds_the_orders_charge(given: str | None) -> None:
    system = FakePaymentGateway()
    paid = system.charge("k-charge", "order-1", Decimal("10"), "EUR")
    command = RefundPayment(
        order_id="order-1",
        payment_id=paid.payment_id if given else None,
        amount=Decimal("10"),
        currency="EUR",
    )

    reply = await payments_adapter(system).call(command, ctx(command, "k-refund"))

    assert reply == PaymentRefunded(order_id="order-1", payment_id=paid.payment_id)
    assert system.charges["k-charge"].refunded


async def test_a_declined_charge_is_not_refunded() -> None:
    system = FakePaymentGateway()
    system.charge("k-charge", "order-1", Decimal("20000"), "EUR")
    command = RefundPayment(order_id="order-1", amount=Decimal("20000"), currency="EUR")

    reply = await payments_adapter(system).call(command, ctx(command))

    assert reply == PaymentRefunded(order_id="order-1", payment_id=None)
    assert not system.charges["k-charge"].refunded


# -- shipping ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "reply_type"),
    [("DE", ShipmentCreated), ("US", ShipmentCreated), ("ZZ", ShipmentRejected)],
)
async def test_a_shipment_is_rejected_to_country_zz(country: str, reply_type: type) -> None:
    system = FakeCarrier()
    command = ship(country)

    reply = await shipping_adapter(system).call(command, ctx(command))

    assert type(reply) is reply_type
    assert system.shipments["cmd-1"].lines == (("A", 2),)


# -- what every fake does ----------------------------------------------------------------


def operations() -> list[tuple[str, object]]:
    return [
        ("inventory", lambda s, k: s.reserve(k, "order-1", [("A", 1)])),
        ("inventory", lambda s, k: s.release(k, "order-1", None)),
        ("payments", lambda s, k: s.charge(k, "order-1", Decimal("5"), "EUR")),
        ("payments", lambda s, k: s.refund(k, "order-1", None)),
        ("shipping", lambda s, k: s.create_shipment(k, "order-1", "DE", [("A", 1)])),
    ]


SYSTEMS = {"inventory": FakeInventory, "payments": FakePaymentGateway, "shipping": FakeCarrier}


@pytest.mark.parametrize(("system", "operation"), operations())
def test_a_repeated_key_returns_the_first_result(system: str, operation) -> None:
    fake = SYSTEMS[system]()

    first = operation(fake, "k1")
    again = operation(fake, "k1")

    assert again == first
    assert fake.calls == 2


@pytest.mark.parametrize(("system", "operation"), operations())
def test_a_fake_fails_transiently_the_first_n_calls(system: str, operation) -> None:
    fake = SYSTEMS[system](fail_first=2)

    for _ in range(2):
        with pytest.raises(TransientAdapterError, match="simulated outage"):
            operation(fake, "k1")
    operation(fake, "k1")

    assert fake.calls == 3


def test_a_fake_can_be_told_to_fail_later() -> None:
    fake = FakeCarrier()
    fake.create_shipment("k1", "order-1", "DE", [])
    fake.fail_next(1)

    with pytest.raises(TransientAdapterError):
        fake.create_shipment("k2", "order-2", "DE", [])
    fake.create_shipment("k2", "order-2", "DE", [])

    assert set(fake.shipments) == {"k1", "k2"}


def test_the_example_adapters_cover_every_command_of_the_domain() -> None:
    adapters = {adapter.name: adapter.command_types for adapter in example_adapters()}

    assert adapters == {
        "inventory": ("inventory.release_stock.v1", "inventory.reserve_stock.v1"),
        "payments": ("payments.charge_payment.v1", "payments.refund_payment.v1"),
        "shipping": ("shipping.create_shipment.v1",),
    }
