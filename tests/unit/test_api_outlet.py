"""The outlet encodes what it commits exactly as the coordinator does (one encoding, in
``runtime.outgoing``), so a command an operator's repair resends is the very message the
coordinator sent."""

from __future__ import annotations

from datetime import timedelta

from bus_orchestrator.api.outlet import Outlet
from bus_orchestrator.app import App
from bus_orchestrator.core import Inbound, decide
from bus_orchestrator.ports import Change, CommitResult
from bus_orchestrator.testing import SagaHarness
from bus_orchestrator.testing.bus import raw_message
from bus_orchestrator.testing.harness import TEST_SOURCE
from sagas import order_to_cash
from tests.integration.harness import order

APP = App("order-to-cash", sagas=[order_to_cash.build()])


async def test_a_command_is_encoded_as_the_coordinator_encodes_it() -> None:
    harness = SagaHarness(APP, adapters=False)
    now = harness.clock()
    event = order("o-enc")
    await harness.coordinator.handle(raw_message(harness.message(event, message_id="e-enc")))
    harness.clock.advance(timedelta(seconds=harness.settings.outbox_lease_seconds + 1))
    [sent] = await harness.store.claim_unsent(timedelta(seconds=1), limit=10)

    decision = decide(
        APP.saga("order_to_cash"), None, Inbound("e-enc", event, None, source=TEST_SOURCE), now
    )
    [out] = decision.send
    outlet = Outlet(harness.topology, harness.settings.source, store=harness.store)
    assert outlet.encode_outgoing(out, decision.instance, now) == sent.message
    assert sent.message.headers["x-saga-type"] == "order_to_cash"


async def test_a_commit_through_the_outlet_is_guarded_by_the_inbox() -> None:
    harness = SagaHarness(APP, adapters=False)
    outlet = Outlet(harness.topology, "urn:test:api", store=harness.store, consumer="api.t")
    message = outlet.encode(order("o-in"), message_id="ev-1")
    assert message.exchange == harness.topology.events
    change = Change("api.t", "ev-1", None, None, None, (), (message,), source="urn:test:api")
    first = await outlet.commit(change)
    assert first.result is CommitResult.COMMITTED and len(first.outbox) == 1
    assert (await outlet.commit(change)).result is CommitResult.DUPLICATE
