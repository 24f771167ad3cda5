"""Test a team's sagas in milliseconds: no broker, no database, no waiting.

``SagaHarness(app)`` runs an ``App``'s sagas on the in-memory bus and store, through the
engine's own coordinator, codec, timers and adapter kit, with a clock the test moves::

    from bus_orchestrator.testing import SagaHarness

    async def test_declined_payment_releases_the_stock() -> None:
        harness = SagaHarness(create_app())
        harness.reply(ChargePayment, lambda c: PaymentDeclined(order_id=c.order_id, reason="no"))
        await harness.publish(order_placed("o-1"))
        await harness.run_until_idle()
        assert (await harness.saga("o-1")).status is SagaStatus.COMPENSATED

With pytest, ``pytest_plugins = ["bus_orchestrator.testing.pytest_plugin"]`` in the root
``conftest.py`` gives a ``bus_harness`` fixture over the ``bus_app`` fixture a test suite
defines.
"""

from bus_orchestrator.testing.bus import DeadLettered, InMemoryBus
from bus_orchestrator.testing.clock import DEFAULT_START, ManualClock
from bus_orchestrator.testing.harness import HarnessError, SagaHarness, Script, SentCommand

__all__ = [
    "DEFAULT_START",
    "DeadLettered",
    "HarnessError",
    "InMemoryBus",
    "ManualClock",
    "SagaHarness",
    "Script",
    "SentCommand",
]
