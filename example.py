"""The example applications: order-to-cash and customer onboarding, over fake systems.

They live in the source repository, beside ``contracts/``, ``sagas/`` and ``adapters/``,
and are not installed with the package. Run one with ``--app example:create_app`` (order-to-
cash) or ``--app example:create_onboarding_app``; ``bus-orchestrator demo`` runs both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from adapters import example_adapters
from adapters.onboarding import onboarding_adapters
from bus_orchestrator import __version__
from bus_orchestrator.app import App, DemoCase
from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus
from bus_orchestrator.webhooks import PayloadRefusedError, Webhook
from contracts import Address, LineItem, OrderPlaced
from contracts.onboarding import CustomerSignedUp, IdentityVerified
from sagas import onboarding, order_to_cash

NAME = "order-to-cash"
TITLE = "bus-orchestrator example domain: order-to-cash"


@dataclass(frozen=True)
class Scenario:
    """An order whose data steers its saga to a known end (the fakes' rules)."""

    name: str
    expected: SagaStatus
    sku: str = "SKU-1"
    unit_price: str = "25.00"
    country: str = "DE"

    def order(self, order_id: str) -> OrderPlaced:
        price = Decimal(self.unit_price)
        return OrderPlaced(
            order_id=order_id,
            customer_id=f"customer-{order_id[-3:]}",
            items=(LineItem(sku=self.sku, quantity=2, unit_price=price),),
            total=price * 2,
            currency="EUR",
            shipping_address=Address(country=self.country, city="Example City"),
        )


SCENARIOS = (
    Scenario("completes", SagaStatus.COMPLETED),
    Scenario("payment declined (total > 10000)", SagaStatus.COMPENSATED, unit_price="6000.00"),
    Scenario("out of stock (OOS- sku)", SagaStatus.COMPENSATED, sku="OOS-42"),
    Scenario("shipping rejected (country ZZ)", SagaStatus.COMPENSATED, country="ZZ"),
)


def demo_plan(count: int) -> list[DemoCase]:
    """``count`` orders, the four scenarios in turn."""
    run_id = uuid.uuid4().hex[:6]
    cases = []
    for n in range(count):
        scenario = SCENARIOS[n % len(SCENARIOS)]
        order_id = f"demo-{run_id}-{n:03d}"
        cases.append(DemoCase(scenario.name, scenario.order(order_id), order_id, scenario.expected))
    return cases


def storefront_order(payload: Any) -> dict[str, Any]:
    """The storefront's "order created" callback as the data of an ``OrderPlaced``."""
    order = payload["order"]
    return {
        "order_id": order["number"],
        "customer_id": order["customer"]["id"],
        "items": [
            {"sku": line["sku"], "quantity": line["quantity"], "unit_price": line["price"]}
            for line in order["lines"]
        ],
        "total": order["total"],
        "currency": order["currency"],
        "shipping_address": {
            "country": order["ship_to"]["country"],
            "city": order["ship_to"].get("city"),
        },
    }


STOREFRONT = Webhook(
    "storefront",
    event=OrderPlaced,
    map=storefront_order,
    delivery=lambda payload: str(payload["delivery_id"]),
    description="The web shop calls it for each new order (secret: BUS_WEBHOOK_SECRET_STOREFRONT)",
)
"""``POST /webhooks/storefront``: a web shop's new orders start order-to-cash sagas."""


def create_app(settings: Settings | None = None) -> App:
    """The example app; its step timeout is ``BUS_STEP_TIMEOUT_SECONDS``."""
    timeout = timedelta(seconds=(settings or Settings()).step_timeout_seconds)
    return App(
        NAME,
        sagas=[order_to_cash.build(timeout)],
        adapters=example_adapters(),
        version=__version__,
        title=TITLE,
        demo=demo_plan,
        webhooks=[STOREFRONT],
    )


ONBOARDING_NAME = "onboarding"
ONBOARDING_TITLE = "bus-orchestrator example domain: customer onboarding"


@dataclass(frozen=True)
class Signup:
    """A signup whose email tags steer its saga to a known end (``adapters.onboarding``)."""

    name: str
    expected: SagaStatus
    tags: tuple[str, ...] = ()
    verified: bool = True
    """Whether the identity provider verifies the person (the demo publishes its verdict)."""
    returning: bool = False
    """The same customer as the signup before it: waits for that one's lock."""

    def event(self, signup_id: str, customer_id: str) -> CustomerSignedUp:
        return CustomerSignedUp(
            signup_id=signup_id,
            customer_id=customer_id,
            name=f"Customer {signup_id[-3:]}",
            email=".".join((*self.tags, signup_id)) + "@example.com",
            country="DE",
        )


SIGNUPS = (
    Signup("onboarded", SagaStatus.COMPLETED),
    Signup("bureau unavailable twice, retried (flaky)", SagaStatus.COMPLETED, ("flaky",)),
    Signup("bureau down, retries spent (down)", SagaStatus.COMPENSATED, ("down",)),
    Signup("credit rejected (reject)", SagaStatus.COMPENSATED, ("reject",)),
    Signup(
        "provisioning fails, kit in flight (noprov)",
        SagaStatus.COMPENSATED,
        ("noprov", "slowkit"),
    ),
    Signup("documents rejected in the child (fakeid)", SagaStatus.COMPENSATED, ("fakeid",), False),
    Signup("identity never verified (wait times out)", SagaStatus.COMPENSATED, verified=False),
    Signup("welcome email bounces (bounce)", SagaStatus.COMPENSATED, ("bounce",)),
    Signup("a customer's first signup", SagaStatus.COMPLETED),
    Signup("same customer again: waits for the lock", SagaStatus.COMPLETED, returning=True),
)


def onboarding_plan(count: int) -> list[DemoCase]:
    """``count`` signups, the scenarios in turn; a verified identity for those that get one."""
    run_id = uuid.uuid4().hex[:6]
    cases: list[DemoCase] = []
    customer_id = ""
    for n in range(count):
        signup = SIGNUPS[n % len(SIGNUPS)]
        signup_id = f"signup-{run_id}-{n:03d}"
        if not signup.returning:
            customer_id = f"customer-{run_id}-{n:03d}"
        verdict = IdentityVerified(verification_id=onboarding.verification_id_of(signup_id))
        event = signup.event(signup_id, customer_id)
        then = (verdict,) if signup.verified else ()
        cases.append(DemoCase(signup.name, event, signup_id, signup.expected, then=then))
    return cases


def identity_verdict(payload: Any) -> dict[str, Any]:
    """The identity provider's callback as the data of an ``IdentityVerified``; only a
    positive verdict is one (a negative one lets the saga's wait run out)."""
    if payload.get("status") != "verified":
        raise PayloadRefusedError("only a verified identity is published")
    method = payload.get("method", "document")
    return {"verification_id": payload["verification_id"], "method": method}


IDENTITY_PROVIDER = Webhook(
    "identity-provider",
    event=IdentityVerified,
    map=identity_verdict,
    description="The identity provider's verdicts (secret: BUS_WEBHOOK_SECRET_IDENTITY_PROVIDER)",
)


def create_onboarding_app(settings: Settings | None = None) -> App:
    """The onboarding app. Its step timeout is ``BUS_STEP_TIMEOUT_SECONDS``, and so is the
    wait for the identity provider's verdict (days, in real life: short, for the demo)."""
    timeout = timedelta(seconds=(settings or Settings()).step_timeout_seconds)
    return App(
        ONBOARDING_NAME,
        sagas=[onboarding.build(timeout, timeout), onboarding.build_verification(timeout, timeout)],
        adapters=onboarding_adapters(),
        version=__version__,
        title=ONBOARDING_TITLE,
        demo=onboarding_plan,
        webhooks=[IDENTITY_PROVIDER],
    )
