"""Onboarding end to end: ``bus-orchestrator run`` and ``adapters`` of the onboarding app as
processes on the real broker and database, every path its sagas can take, and a test
standing in for the identity provider, which publishes its verdict while the child waits."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest

from bus_orchestrator.cli import EXAMPLE_APP
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus, StepStatus
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from contracts.onboarding import IdentityVerified
from sagas.onboarding import verification_id_of
from tests.conftest import TestBus
from tests.e2e.processes import Processes, cli, wait_for_consumers
from tests.integration.harness import publish, sql, wait_for_status
from tests.unit.test_onboarding import (
    CLOSE_CASE,
    KIT,
    PATHS,
    PROVISION,
    VERIFICATION,
    Path,
    signup,
)

pytestmark = pytest.mark.e2e

STEP_TIMEOUT_SECONDS = "5"
"""The processes' ``BUS_STEP_TIMEOUT_SECONDS``: each adapter's reply, and the identity
provider's verdict, are awaited this long."""
QUEUES = tuple(
    f"onboarding.{name}"
    for name in (
        "coordinator",
        "adapter.crm",
        "adapter.credit",
        "adapter.provisioning",
        "adapter.welcome-kit",
        "adapter.identity",
        "adapter.email",
    )
)
FINAL = {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED}
CHILD_COMMANDS = {*VERIFICATION, CLOSE_CASE}


APP = "example:create_onboarding_app"


async def start(settings: Settings, bus: TestBus, processes: Processes) -> None:
    env: dict[str, Any] = {"BUS_APP": APP, "BUS_STEP_TIMEOUT_SECONDS": STEP_TIMEOUT_SECONDS}
    await processes.start(settings, "run", **env)
    await processes.start(settings, "adapters", **env)
    await wait_for_consumers(bus.connection, settings, QUEUES)


async def verify_when_waiting(settings: Settings, bus: TestBus, signup_id: str) -> None:
    """Publish the provider's verdict once the child saga waits for it, as a provider
    answers a request it was sent; nothing when the onboarding ends before that."""
    verification_id = verification_id_of(signup_id)
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    store = PostgresSagaStore(pool, timedelta(seconds=1))
    try:
        for _ in range(1200):
            [*parent] = await store.find(signup_id)
            if parent and parent[0].status.terminal:
                return
            [*child] = await store.find(verification_id)
            steps = child[0].steps if child else ()
            if steps and steps[-1].name == "identity_verified":
                if steps[-1].status is StepStatus.RUNNING:
                    verdict = IdentityVerified(verification_id=verification_id)
                    await publish(await bus.channel(), bus.topology.events, verdict)
                return
            await asyncio.sleep(0.05)
    finally:
        await pool.close()
    raise AssertionError(f"the identity verification of {signup_id} never waited")


async def acted(settings: Settings) -> dict[str, list[str]]:
    """What the adapters did, per correlation id, in the order they took it up."""
    rows = await sql(
        settings, "SELECT correlation_id, command_type FROM adapter_command ORDER BY seq"
    )
    seen: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        seen[row["correlation_id"]].append(row["command_type"])
    return dict(seen)


def parallel_unordered(commands: list[str] | tuple[str, ...]) -> list[str]:
    """The commands, with the parallel group's two in one order (they run at once)."""
    out = list(commands)
    for i in range(len(out) - 1):
        if {out[i], out[i + 1]} == {PROVISION, KIT}:
            out[i], out[i + 1] = PROVISION, KIT
    return out


async def test_every_path_ends_as_expected(
    settings: Settings, schema: str, bus: TestBus, processes: Processes
) -> None:
    await start(settings, bus, processes)
    plan: dict[str, Path] = {f"e2e-{n}": path for n, path in enumerate(PATHS)}
    channel = await bus.channel()
    for signup_id, path in plan.items():
        event = signup(signup_id, f"customer-{signup_id}", *path.tags)
        await publish(channel, bus.topology.events, event, correlation_id=signup_id)
    await asyncio.gather(
        *(verify_when_waiting(settings, bus, sid) for sid, p in plan.items() if p.verified)
    )
    sagas = await wait_for_status(settings, list(plan), FINAL, within=90)
    assert {sid: sagas[sid].status for sid in plan} == {sid: p.status for sid, p in plan.items()}
    done = await acted(settings)
    for signup_id, path in plan.items():
        saga = sagas[signup_id]
        assert {s.name: s.status for s in saga.steps} == path.steps, path.name
        if path.failure is not None:
            assert saga.failure == path.failure, path.name
        parent = [t for t in path.sent if t not in CHILD_COMMANDS]
        assert parallel_unordered(done[signup_id]) == parent, path.name
        child = [t for t in path.sent if t in CHILD_COMMANDS]
        assert done.get(verification_id_of(signup_id), []) == child, path.name
    unsent = await sql(settings, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")
    assert unsent[0]["n"] == 0


async def test_a_second_signup_of_one_customer_waits_for_the_first(
    settings: Settings, schema: str, bus: TestBus, processes: Processes
) -> None:
    await start(settings, bus, processes)
    channel = await bus.channel()
    for signup_id in ("twice-1", "twice-2"):
        event = signup(signup_id, "customer-twice")
        await publish(channel, bus.topology.events, event, correlation_id=signup_id)
    # which one takes the lock first is up to the coordinator (it handles the two signups
    # at once): the provider answers each when its turn comes
    await asyncio.gather(*(verify_when_waiting(settings, bus, s) for s in ("twice-1", "twice-2")))
    sagas = await wait_for_status(settings, ["twice-1", "twice-2"], FINAL, within=30)
    assert {s.status for s in sagas.values()} == {SagaStatus.COMPLETED}
    rows = await sql(settings, "SELECT correlation_id FROM adapter_command ORDER BY seq")
    order = [r["correlation_id"] for r in rows if r["correlation_id"].startswith("twice-")]
    # every command of one signup was taken up before any of the other's
    first, second = order[0], order[-1]
    assert first != second and order == [first] * 5 + [second] * 5


# -- the demo runs both example apps -------------------------------------------------------


async def test_the_demo_runs_both_apps_in_memory(settings: Settings) -> None:
    code, out, err = await cli(
        *(settings, "demo", "--embedded", "--orders", "10", "--app", EXAMPLE_APP, "--app", APP),
        COLUMNS="200",  # the summary's rows unwrapped
    )
    assert code == 0, out + err
    assert "order-to-cash: all 10 sagas ended as expected" in out
    assert "onboarding: all 10 sagas ended as expected" in out
    for scenario in ("bureau unavailable twice", "identity never verified", "waits for the lock"):
        assert scenario in out


async def test_the_demo_runs_both_apps_side_by_side_on_the_services(
    settings: Settings, db_schema: str, bus: TestBus
) -> None:
    code, out, err = await cli(
        settings,
        *("demo", "--orders", "10", "--timeout", "90", "--app", EXAMPLE_APP, "--app", APP),
        BUS_STEP_TIMEOUT_SECONDS=STEP_TIMEOUT_SECONDS,
    )
    assert code == 0, out + err
    assert "embedded" not in out + err
    events = f"{settings.exchange_prefix}bus.events"
    assert f"starting 10 sagas on {events} (order-to-cash)" in out
    assert f"starting 10 sagas on {events} (onboarding)" in out
    assert "order-to-cash: all 10 sagas ended as expected" in out
    assert "onboarding: all 10 sagas ended as expected" in out


async def test_without_an_app_the_demo_runs_both_examples(settings: Settings) -> None:
    code, out, err = await cli(settings, "demo", "--embedded", "--orders", "10", BUS_APP="")
    assert code == 0, out + err
    assert "order-to-cash: all 10 sagas ended as expected" in out
    assert "onboarding: all 10 sagas ended as expected" in out
