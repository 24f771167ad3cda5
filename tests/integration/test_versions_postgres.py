"""On Postgres and RabbitMQ: a coordinator refuses to start without a definition version
its running sagas need, and runs them to the end when it has it."""

from __future__ import annotations

import pytest

from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus
from bus_orchestrator.errors import DefinitionVersionError
from bus_orchestrator.runtime.service import CoordinatorService
from tests.conftest import TestBus
from tests.integration.harness import migrated, publish, rows_when, sql, wait_for_status
from tests.unit.test_versions import V1, V2, Applied, Scored, Welcomed

pytestmark = pytest.mark.integration

APP = "versions"


@pytest.fixture
async def schema(settings: Settings, db_schema: str) -> str:
    await migrated(settings)
    return db_schema


async def _start(settings: Settings, bus: TestBus, app: App) -> CoordinatorService:
    service = CoordinatorService(settings, app.sagas, app.registry, app=app.name)
    bus.queues.append(service.queue_name)
    await service.start()
    return service


async def _pending(settings: Settings, correlation_id: str, step: str) -> str:
    """The id of the command the saga awaits, once its step ``step`` is running."""
    rows = await rows_when(
        settings,
        "SELECT correlation_id, pending_command_id, state FROM saga",
        lambda rows: any(
            r["correlation_id"] == correlation_id and f'"name": "{step}"' in r["state"]
            for r in rows
        ),
    )
    (row,) = [r for r in rows if r["correlation_id"] == correlation_id]
    return str(row["pending_command_id"])


async def test_a_coordinator_without_a_running_sagas_version_refuses_then_with_it_finishes(
    settings: Settings, schema: str, bus: TestBus
) -> None:
    channel = await bus.channel()
    old = await _start(settings, bus, App(APP, sagas=[V1]))
    try:
        await publish(channel, bus.topology.events, Applied(applicant="a-1"))
        score = await _pending(settings, "a-1", "score")
    finally:
        await old.stop()
    (saga_id,) = [str(r["saga_id"]) for r in await sql(settings, "SELECT saga_id FROM saga")]

    only_new = CoordinatorService(settings, [V2], App(APP, sagas=[V2]).registry, app=APP)
    with pytest.raises(DefinitionVersionError) as refused:
        await only_new.start()
    await only_new.stop()
    assert str(refused.value).startswith(
        f"saga signup version 1 is needed by 1 running saga (ids {saga_id}) and this app "
        "has only version 2"
    )

    both = await _start(settings, bus, App(APP, sagas=[V1, V2]))
    try:
        await publish(
            channel, bus.topology.replies, Scored(), correlation_id="a-1", causation_id=score
        )
        welcome = await _pending(settings, "a-1", "welcome")
        await publish(
            channel, bus.topology.replies, Welcomed(), correlation_id="a-1", causation_id=welcome
        )
        done = await wait_for_status(settings, ["a-1"], {SagaStatus.COMPLETED})
    finally:
        await both.stop()
    saga = done["a-1"]
    assert saga.definition_version == 1
    assert [s.name for s in saga.steps] == ["score", "welcome"]
