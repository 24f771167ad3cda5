"""Two apps whose sagas consume the same reply type: each app's inbox knows it apart.

Both coordinators receive a copy of every such reply (each on its own queue). The app
with no saga awaiting it records it as ignored; that must not make the other app, whose
saga does await it, take its own copy for a duplicate.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Event
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.runtime.service import CoordinatorService
from tests.conftest import TestBus
from tests.integration.harness import migrated, publish, rows_when, sql, wait_for_status
from tests.integration.test_two_apps import (
    AccountOpened,
    CustomerSignedUp,
    Id,
    onboarding_adapters,
    onboarding_saga,
)

pytestmark = pytest.mark.integration


class PartnerSignedUp(Event):
    message_type = "partners.partner_signed_up.v1"
    customer_id: Id


def two_apps() -> tuple[App, App]:
    saga = onboarding_saga()
    partners = dataclasses.replace(
        saga,
        name="partner_onboarding",
        started_by=PartnerSignedUp,
        initial_data=lambda e: saga.data_model(customer_id=e.customer_id),
    )
    one = App("customers", sagas=[saga], adapters=onboarding_adapters())
    two = App("partners", sagas=[partners])
    return one, two


async def test_a_reply_ignored_by_one_app_is_still_new_to_the_app_awaiting_it(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    await migrated(settings)
    one, two = two_apps()
    assert AccountOpened.message_type in two.sagas[0].reply_types()
    assert AccountOpened.message_type in one.sagas[0].reply_types()
    first = CoordinatorService(settings, one.sagas, one.registry, app=one.name)
    other = CoordinatorService(settings, two.sagas, two.registry, app=two.name)
    bus.queues += [first.queue_name, other.queue_name]
    bus.queues += [bus.topology.adapter_queue(one.name, a.name) for a in one.adapters]
    channel = await bus.channel()
    for adapter in one.adapters:  # declared first: the command waits there for its adapter
        await bus.topology.declare_work_queue(
            channel,
            bus.topology.adapter_queue(one.name, adapter.name),
            [(bus.topology.commands, t) for t in adapter.command_types],
        )
    await first.start()
    await other.start()
    stop = asyncio.Event()
    adapters: asyncio.Task[None] | None = None
    try:
        await publish(
            channel, bus.topology.events, CustomerSignedUp(customer_id="c-1"), correlation_id="c-1"
        )
        await rows_when(settings, "SELECT 1 FROM outbox WHERE sent_at IS NOT NULL", bool)
        # Only the partners' coordinator runs when the reply comes: it records it as one
        # no saga of its own awaits.
        await first.stop()
        adapters = asyncio.create_task(run_adapters(settings, one.adapters, stop, app=one.name))
        ignored = await rows_when(
            settings,
            "SELECT consumer, app FROM saga_inbox WHERE consumer LIKE 'replies%'",
            bool,
            within=30,
        )
        assert [tuple(r) for r in ignored] == [("replies.partners", "partners")]
        # The customers' coordinator back: its copy of the reply is new to it.
        first = CoordinatorService(settings, one.sagas, one.registry, app=one.name)
        await first.start()
        [saga] = (await wait_for_status(settings, ["c-1"], {SagaStatus.COMPLETED})).values()
        assert [s.status for s in saga.steps] == ["succeeded", "succeeded"]
        consumers = await sql(settings, "SELECT DISTINCT consumer FROM saga_inbox ORDER BY 1")
        assert [r["consumer"] for r in consumers] == [
            "onboarding",
            "replies.customers",
            "replies.partners",
        ]
    finally:
        stop.set()
        if adapters is not None:
            await asyncio.wait_for(adapters, 30)
        await first.stop()
        await other.stop()
