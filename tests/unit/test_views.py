"""The saga view shows the saga's data with secrets masked, or not at all."""

from __future__ import annotations

from datetime import UTC, datetime

from bus_orchestrator.core import Inbound, decide
from bus_orchestrator.views import saga_view
from contracts import Address, LineItem, OrderPlaced
from sagas import order_to_cash
from sagas.order_to_cash import OrderData


def test_secret_fields_are_masked_and_unknown_data_is_left_out() -> None:
    event = OrderPlaced(
        order_id="o-1",
        customer_id="c",
        items=(LineItem(sku="S", quantity=1, unit_price="1.00"),),
        total="1.00",
        currency="EUR",
        shipping_address=Address(country="DE"),
        payment_token="tok-secret-1",
    )
    decision = decide(order_to_cash.build(), None, Inbound("e", event, "o-1"), datetime.now(UTC))
    instance = decision.instance
    assert instance is not None
    assert "tok-secret-1" in str(instance.data)  # the saga needs it to charge the card
    shown = saga_view(instance, "http://jaeger", OrderData)
    assert shown["data"]["order"]["payment_token"] == "**********"
    assert "tok-secret-1" not in str(shown)
    assert saga_view(instance)["data"] is None
