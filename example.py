"""The example application: order-to-cash over the example adapters' fake systems.

It lives in the source repository, beside ``contracts/``, ``sagas/`` and ``adapters/``, and
is not installed with the package. Run it with ``--app example:create_app`` (the default of
``bus-orchestrator demo``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from adapters import example_adapters
from bus_orchestrator import __version__
from bus_orchestrator.app import App, DemoCase
from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus
from contracts import Address, LineItem, OrderPlaced
from sagas import order_to_cash

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
    )
