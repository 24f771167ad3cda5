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


def test_awaiting_says_what_the_saga_waits_for_and_until_when() -> None:
    from bus_orchestrator.core.definition import OnFailure, RetryOn, Wait
    from bus_orchestrator.views import awaiting_view
    from tests.unit.constructs import (
        TIMEOUT,
        Busy,
        Done,
        Driver,
        Paid,
        Refused,
        Undone,
        saga,
        step,
    )

    wait = Wait(name="paid", event=Paid, correlate=lambda e: e.key, timeout=TIMEOUT)
    retrying = step("b", retry=RetryOn(transient=(Busy,), attempts=3))
    definition = saga(
        "views_awaiting", [step("a"), wait, retrying, step("c", on_failure=OnFailure.SUSPEND)]
    )
    driver = Driver(definition)
    driver.start()
    [item] = awaiting_view(driver.saga, definition)["items"]  # type: ignore[index]
    assert (item["step"], item["kind"], item["message_type"]) == (
        "a",
        "reply",
        "tests.constructs.do_a.v1",
    )
    assert item["until"] == (driver.now + TIMEOUT).isoformat()
    assert awaiting_view(driver.saga)["items"][0]["kind"] == "step"  # type: ignore[index]
    driver.reply("a", Done())
    assert awaiting_view(driver.saga, definition)["items"][0]["kind"] == "event"  # type: ignore[index]
    driver.event(Paid(key=driver.saga.correlation_id))
    driver.reply("b", Busy())
    [retry] = awaiting_view(driver.saga, definition)["items"]  # type: ignore[index]
    assert retry["kind"] == "retry" and retry["until"] == driver.saga.deadline.isoformat()  # type: ignore[union-attr]
    driver.now = driver.saga.deadline or driver.now
    driver.fire()
    driver.reply("b", Done())
    driver.reply("c", Refused())
    held = awaiting_view(driver.saga, definition)
    assert held == {
        "kind": "operator",
        "until": None,
        "items": [
            {
                "step": "c",
                "kind": "operator",
                "message_type": "tests.constructs.do_c.v1",
                "message_id": driver.record("c").command_id,
                "until": None,
            }
        ],
    }
    from bus_orchestrator.core.repair import Repair

    driver.operate(Repair.ABORT)
    undo = awaiting_view(driver.saga, definition)
    assert undo is not None and undo["kind"] == "compensation"
    assert undo["items"][0]["message_type"] == "tests.constructs.undo_b.v1"
    for name in ("b", "a"):
        driver.reply(name, Undone(), compensation=True)
    assert awaiting_view(driver.saga, definition) is None
