"""A parent saga starts a child saga that runs in another app, in another process.

``parents`` (enrolment) and ``checks`` (background check) each run as their own
``bus-orchestrator run`` and ``adapters`` processes, as two teams would deploy them. The
child's end event on ``bus.events`` settles the parent's step; withdrawing the enrolment
while the check waits for its verdict cancels the check through
``saga.background_check.cancel_requested.v1``, and the parent compensates once the child has.
"""

from __future__ import annotations

import uuid

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.core import SagaStatus, StepStatus
from tests.conftest import TestBus
from tests.e2e.family import (
    EnrolmentRequested,
    EnrolmentWithdrawn,
    VerdictGiven,
    check_id,
)
from tests.e2e.processes import Processes, wait_for_consumers
from tests.integration.harness import publish, rows_when, wait_for_status

pytestmark = pytest.mark.e2e

PARENTS = "tests.e2e.family:parents_app"
CHECKS = "tests.e2e.family:checks_app"
QUEUES = (
    "parents.coordinator",
    "parents.adapter.seats",
    "checks.coordinator",
    "checks.adapter.checker",
)


async def test_a_child_saga_in_another_process_settles_or_is_cancelled_by_its_parent(
    settings: Settings, schema: str, bus: TestBus, processes: Processes
) -> None:
    for app in (CHECKS, PARENTS):
        await processes.start(settings, "run", BUS_APP=app)
        await processes.start(settings, "adapters", BUS_APP=app)
    bus.queues += [f"{settings.exchange_prefix}bus.{q}" for q in QUEUES]
    await wait_for_consumers(bus.connection, settings, QUEUES)

    run = uuid.uuid4().hex[:6]
    cleared, flagged, withdrawn = (f"{kind}-{run}" for kind in ("cleared", "flagged", "gone"))
    channel = await bus.channel()
    events = bus.topology.events
    for enrolment, subject in ((cleared, "ann"), (flagged, "flagged-bob"), (withdrawn, "cy")):
        await publish(channel, events, EnrolmentRequested(enrolment_id=enrolment, subject=subject))

    # The checks of "cleared" and "gone" pass the checker and wait for a verdict.
    await rows_when(
        settings,
        "SELECT correlation_id FROM saga WHERE saga_type = 'background_check' "
        "AND state->'steps'->1->>'name' = 'verdict'",
        lambda rows: (
            {r["correlation_id"] for r in rows} >= {check_id(cleared), check_id(withdrawn)}
        ),
    )
    await publish(channel, events, VerdictGiven(check_id=check_id(cleared)))
    await publish(channel, events, EnrolmentWithdrawn(enrolment_id=withdrawn))

    parents = await wait_for_status(
        settings, [cleared, flagged, withdrawn], {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}
    )
    children = await wait_for_status(
        settings,
        [check_id(e) for e in (cleared, flagged, withdrawn)],
        {SagaStatus.COMPLETED, SagaStatus.COMPENSATED},
    )
    assert parents[cleared].status is SagaStatus.COMPLETED
    assert children[check_id(cleared)].status is SagaStatus.COMPLETED

    assert children[check_id(flagged)].status is SagaStatus.COMPENSATED
    assert parents[flagged].status is SagaStatus.COMPENSATED
    assert "family.check_hit.v1: on a watch list" in (parents[flagged].failure or "")

    assert children[check_id(withdrawn)].failure == "enrolment withdrawn"
    assert children[check_id(withdrawn)].status is SagaStatus.COMPENSATED
    gone = parents[withdrawn]
    assert gone.status is SagaStatus.COMPENSATED
    assert gone.failure == "enrolment withdrawn"
    seat, check = gone.steps
    assert check.status is StepStatus.FAILED and check.cancel_requested_at is not None
    assert seat.status is StepStatus.COMPENSATED  # released after the child had ended
    assert check.finished_at is not None and seat.compensated_at is not None
    assert check.finished_at <= seat.compensated_at
