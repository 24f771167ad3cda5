"""Two applications side by side on one vhost (one exchange prefix) and one database schema.

The example order-to-cash app and a small onboarding app defined here, each with its own
coordinator and adapters, run on the same broker names and tables. The onboarding app
runs its timers, park sweep, relay sweep and housekeeping very often, with retentions of
a fraction of a second, and its sagas time out on purpose. Neither app may receive,
dead-letter, fire, apply, relay or purge anything of the other: each app's sagas end as
expected, ``bus.dead`` stays empty, and the order-to-cash rows the onboarding app could
have taken (a due timer, a parked event whose saga exists, an unsent outbox row past its
lease, finished sagas with their history and inbox rows) are left for their own app.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
import pytest
from pydantic import BaseModel, ConfigDict, Field

from bus_orchestrator.adapters import Adapter, CommandContext
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.app import App
from bus_orchestrator.config import Settings
from bus_orchestrator.core import Inbound, SagaStatus, decide
from bus_orchestrator.core.definition import SagaDefinition, Step
from bus_orchestrator.core.messages import Command, Event, Reply
from bus_orchestrator.ports import AppScope, Change, Direction, HistoryEntry, ParkedMessage
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.transport.codec import encode
from contracts import OrderCancelled
from example import create_app
from tests.conftest import TestBus
from tests.e2e.processes import consumers
from tests.integration.harness import migrated, order, publish, sql, wait_for_status

pytestmark = pytest.mark.integration

Id = Annotated[str, Field(min_length=1, max_length=200)]


# -- the second app: onboarding --------------------------------------------------------


class CustomerSignedUp(Event):
    message_type = "onboarding.customer_signed_up.v1"
    customer_id: Id


class OpenAccount(Command):
    message_type = "crm.open_account.v1"
    customer_id: Id


class AccountOpened(Reply):
    message_type = "crm.account_opened.v1"
    customer_id: Id


class CloseAccount(Command):
    message_type = "crm.close_account.v1"
    customer_id: Id


class AccountClosed(Reply):
    message_type = "crm.account_closed.v1"
    customer_id: Id


class SendWelcome(Command):
    message_type = "mail.send_welcome.v1"
    customer_id: Id


class WelcomeSent(Reply):
    message_type = "mail.welcome_sent.v1"
    customer_id: Id


class Onboarding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    customer_id: str


WELCOME_TIMEOUT = timedelta(milliseconds=500)


def onboarding_saga() -> SagaDefinition[Onboarding, CustomerSignedUp]:
    return SagaDefinition(
        name="onboarding",
        data_model=Onboarding,
        started_by=CustomerSignedUp,
        correlate=lambda e: e.customer_id,
        initial_data=lambda e: Onboarding(customer_id=e.customer_id),
        steps=(
            Step(
                name="open_account",
                command=lambda d: OpenAccount(customer_id=d.customer_id),
                succeeds_on=(AccountOpened,),
                compensation=lambda d: CloseAccount(customer_id=d.customer_id),
                compensated_on=(AccountClosed,),
                sends=OpenAccount,
                compensation_sends=CloseAccount,
                timeout=timedelta(seconds=30),
            ),
            Step(
                name="send_welcome",
                command=lambda d: SendWelcome(customer_id=d.customer_id),
                succeeds_on=(WelcomeSent,),
                sends=SendWelcome,
                timeout=WELCOME_TIMEOUT,  # "slow-" customers' mail comes too late
            ),
        ),
    )


def onboarding_adapters() -> list[Adapter]:
    crm, mail = Adapter("crm"), Adapter("mail")

    @crm.handles(OpenAccount, replies=(AccountOpened,))
    async def open_account(command: OpenAccount, ctx: CommandContext) -> AccountOpened:
        return AccountOpened(customer_id=command.customer_id)

    @crm.handles(CloseAccount, replies=(AccountClosed,))
    async def close_account(command: CloseAccount, ctx: CommandContext) -> AccountClosed:
        return AccountClosed(customer_id=command.customer_id)

    @mail.handles(SendWelcome, replies=(WelcomeSent,))
    async def send_welcome(command: SendWelcome, ctx: CommandContext) -> WelcomeSent:
        if command.customer_id.startswith("slow-"):
            await asyncio.sleep(4 * WELCOME_TIMEOUT.total_seconds())
        return WelcomeSent(customer_id=command.customer_id)

    return [crm, mail]


def onboarding_app() -> App:
    return App("onboarding", sagas=[onboarding_saga()], adapters=onboarding_adapters())


def busy(settings: Settings) -> Settings:
    """The onboarding app's settings: everything in the background runs all the time, and
    keeps nothing longer than a moment."""
    return settings.model_copy(
        update={
            "timer_poll_seconds": 0.05,
            "park_sweep_seconds": 0.05,
            "outbox_sweep_seconds": 0.05,
            "housekeeping_seconds": 0.1,
            "saga_retention_seconds": 0.2,
            "inbox_retention_seconds": 0.2,
            "outbox_retention_seconds": 0.0,
            "park_ttl_seconds": 0.2,
        }
    )


# -- running an app --------------------------------------------------------------------


class Running:
    """An app's coordinator and adapters, in this process."""

    def __init__(self, app: App, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.coordinator = CoordinatorService(settings, app.sagas, app.registry, app=app.name)
        self.stop_adapters = asyncio.Event()
        self.adapters: asyncio.Task[None] | None = None

    async def start(self, bus: TestBus) -> None:
        await self.coordinator.start()
        self.adapters = asyncio.create_task(
            run_adapters(self.settings, self.app.adapters, self.stop_adapters, app=self.app.name)
        )
        for adapter in self.app.adapters:
            queue = bus.topology.adapter_queue(self.app.name, adapter.name)
            bus.queues.append(queue)
            for _ in range(200):
                if await consumers(bus.connection, queue):
                    break
                await asyncio.sleep(0.05)
        bus.queues.append(self.coordinator.queue_name)

    async def stop(self) -> None:
        self.stop_adapters.set()
        if self.adapters is not None:
            await asyncio.wait_for(self.adapters, 30)
        await self.coordinator.stop()


@pytest.fixture
async def pool(settings: Settings, db_schema: str) -> AsyncIterator[asyncpg.Pool]:
    await migrated(settings)
    opened = await create_pool(settings.model_copy(update={"db_pool_size": 2}))
    try:
        yield opened
    finally:
        await opened.close()


async def seed_order_to_cash_work(settings: Settings, pool: asyncpg.Pool, bus: TestBus) -> str:
    """An order-to-cash saga left as a stopped coordinator leaves it: its step deadline
    passed an hour ago, its first command unsent with its lease run out, and a
    cancellation parked for it. The onboarding app's timers, relay and park sweep could
    all take these; only order-to-cash's may. Returns the saga's correlation id."""
    app = create_app(settings)
    [definition] = app.sagas
    scope = AppScope(app.name, (definition.name,))
    store = PostgresSagaStore(pool, timedelta(0), scope)  # the row's lease runs out at once
    correlation = f"seeded-{uuid.uuid4().hex[:6]}"
    then = datetime.now(UTC) - timedelta(hours=1)
    placed = Inbound(f"placed-{correlation}", order(correlation), correlation, source="urn:test")
    decision = decide(definition, None, placed, then)
    assert decision.instance is not None and decision.instance.deadline is not None
    [out] = decision.send
    command = encode(
        message_id=out.message_id,
        payload=out.payload,
        exchange=bus.topology.commands,
        source=settings.source,
        time=then,
        correlation_id=out.correlation_id,
        causation_id=out.causation_id,
    )
    saga = decision.instance
    await store.commit(
        Change(definition.name, placed.message_id, saga.saga_id, saga, None, (), (command,))
    )
    cancel = encode(
        message_id=f"cancel-{correlation}",
        payload=OrderCancelled(order_id=correlation),
        exchange=bus.topology.events,
        source="urn:test",
        time=then,
        correlation_id=correlation,
    )
    parked = ParkedMessage(
        saga_type=definition.name,
        correlation_id=correlation,
        message_id=cancel.message_id,
        source="urn:test",
        message_type=cancel.message_type,
        exchange=bus.topology.events,
        routing_key=cancel.routing_key,
        content_type=cancel.content_type,
        headers=dict(cancel.headers),
        body=cancel.body,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    entry = HistoryEntry(Direction.IN, cancel.message_id, cancel.message_type, correlation,
                         None, "parked", "seeded", {}, then)  # fmt: skip
    assert await store.park(f"park.{definition.name}", parked, entry)
    return correlation


async def test_two_apps_share_one_broker_and_one_database_without_touching_each_other(
    settings: Settings, pool: asyncpg.Pool, bus: TestBus
) -> None:
    orders_app = Running(create_app(settings), settings)
    onboarding = Running(onboarding_app(), busy(settings))
    orders = {f"o-{name}-{n}": name for name in ("ok", "oos", "declined", "zz") for n in range(2)}
    expected_orders = {
        "ok": SagaStatus.COMPLETED,
        "oos": SagaStatus.COMPENSATED,
        "declined": SagaStatus.COMPENSATED,
        "zz": SagaStatus.COMPENSATED,
    }
    scenario = {
        "ok": {},
        "oos": {"sku": "OOS-1"},
        "declined": {"price": "10000.01"},
        "zz": {"country": "ZZ"},
    }
    customers = {f"{kind}-{n}": kind for kind in ("fast", "slow") for n in range(3)}
    channel = await bus.channel()
    await orders_app.start(bus)
    await onboarding.start(bus)
    try:
        # 1. both apps' traffic at once: each ends as its own rules say
        for order_id, name in orders.items():
            await publish(
                channel, bus.topology.events, order(order_id, **scenario[name]),
                correlation_id=order_id,
            )  # fmt: skip
        for customer in customers:
            await publish(
                channel,
                bus.topology.events,
                CustomerSignedUp(customer_id=customer),
                correlation_id=customer,
            )
        finished = {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED}
        ended = await wait_for_status(settings, list(orders), finished, within=60)
        assert {oid: s.status for oid, s in ended.items()} == {
            oid: expected_orders[name] for oid, name in orders.items()
        }
        await _until(settings, "SELECT 1 FROM outbox WHERE sent_at IS NULL", lambda r: not r)
        before = await _rows_of(settings, "order-to-cash", "order_to_cash")

        # The onboarding sagas end (the slow ones compensated by their timer: only they
        # closed their account), then vanish: their app keeps them a fifth of a second.
        commands = await _until(
            settings,
            "SELECT correlation_id, command_type FROM adapter_command"
            " WHERE adapter IN ('crm', 'mail')",
            lambda r: len(r) == 2 * len(customers) + 3,
        )
        closed = {
            r["correlation_id"] for r in commands if r["command_type"] == CloseAccount.message_type
        }
        assert closed == {c for c, kind in customers.items() if kind == "slow"}
        await _until(settings, "SELECT 1 FROM saga WHERE saga_type = 'onboarding'", lambda r: not r)
        await _until_gone(settings, "onboarding")

        # 2. order-to-cash's rows are all still there, untouched by onboarding's housekeeping
        assert await _rows_of(settings, "order-to-cash", "order_to_cash") == before
        inbox = await sql(
            settings, "SELECT DISTINCT consumer FROM saga_inbox WHERE app = $1", "order-to-cash"
        )
        assert {r["consumer"] for r in inbox} == {"order_to_cash", "replies.order-to-cash"}
        outbox = await sql(settings, "SELECT DISTINCT app, message_type FROM outbox")
        assert {r["app"] for r in outbox} <= {"order-to-cash", "onboarding"}
        assert all(
            r["message_type"].startswith(("crm.", "mail.")) == (r["app"] == "onboarding")
            for r in outbox
        )

        # 3. with order-to-cash stopped, its due timer, unsent command and parked
        # cancellation wait for it: the busy onboarding app takes none of them
        await orders_app.stop()
        seeded = await seed_order_to_cash_work(settings, pool, bus)
        late = "late-0"
        await publish(
            channel, bus.topology.events, CustomerSignedUp(customer_id=late), correlation_id=late
        )
        # onboarding's timers, sweeps and purges go round meanwhile: until its late saga
        # has run, ended and been purged
        await _until(
            settings,
            "SELECT 1 FROM adapter_command WHERE adapter = 'mail' AND correlation_id = $1",
            bool,
            late,
        )
        await _until(
            settings, "SELECT 1 FROM saga WHERE correlation_id = $1", lambda r: not r, late
        )
        await _until_gone(settings, "onboarding")
        [saga] = await sql(
            settings,
            "SELECT version, status, timer_deadline, timer_attempts FROM saga"
            " WHERE correlation_id = $1",
            seeded,
        )
        assert (saga["version"], saga["status"], saga["timer_deadline"]) == (1, "running", None)
        assert saga["timer_attempts"] == 0
        parked = await sql(settings, "SELECT message_type FROM parked_event")
        assert [r["message_type"] for r in parked] == ["orders.order_cancelled.v1"]
        unsent = await sql(settings, "SELECT app, message_type FROM outbox WHERE sent_at IS NULL")
        assert [tuple(r) for r in unsent] == [("order-to-cash", "inventory.reserve_stock.v1")]
        assert (await sql(settings, "SELECT count(*) AS n FROM saga"))[0]["n"] == len(orders) + 1

        # 4. order-to-cash back: its own timer, relay and park sweep take them
        # (its relay sweeps after a while, so that its timer, due at once, fires first)
        restarted = settings.model_copy(update={"outbox_sweep_seconds": 1.5})
        orders_app = Running(create_app(restarted), restarted)
        await orders_app.start(bus)
        # (the saga completes or compensates, by whether its order or its cancellation is
        # applied first: the relay and the park sweep race for it)
        [done] = (await wait_for_status(settings, [seeded], finished, within=60)).values()
        assert done.status in {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}
        assert done.steps[0].attempts == 2  # its timer fired: the command was sent again
        await _until(settings, "SELECT 1 FROM parked_event", lambda r: not r)
        applied = await sql(
            settings,
            "SELECT outcome FROM saga_history WHERE message_id = $1 ORDER BY id",
            f"cancel-{seeded}",
        )
        outcomes = [r["outcome"] for r in applied]
        assert outcomes[0] == "parked" and len(outcomes) == 2, outcomes
        # and its relay published its unsent command
        await _until(settings, "SELECT 1 FROM outbox WHERE sent_at IS NULL", lambda r: not r)

        # 5. nothing of either app reached bus.dead, and each coordinator queue is its own
        dead = await channel.declare_queue(bus.topology.dead, passive=True)
        assert dead.declaration_result.message_count == 0
        for name in ("order-to-cash", "onboarding"):
            queue = bus.topology.coordinator_queue(name)
            assert await consumers(bus.connection, queue) == 1, queue
        assert await consumers(bus.connection, bus.topology.queue("coordinator")) == 0
    finally:
        await onboarding.stop()
        await orders_app.stop()


async def _until(
    settings: Settings, query: str, done: Callable[[list[asyncpg.Record]], bool], *args: Any
) -> list[asyncpg.Record]:
    """Poll ``query`` until its rows are ``done``; fails with the last rows after a minute."""
    rows: list[asyncpg.Record] = []
    for _ in range(1200):
        rows = await sql(settings, query, *args)
        if done(rows):
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"still {[tuple(r) for r in rows]} for {query}")


async def _until_gone(settings: Settings, app: str) -> None:
    """Until nothing the app wrote is left in the inbox, the history or the outbox (its
    housekeeping has gone round since its last message)."""
    await _until(
        settings,
        "SELECT (SELECT count(*) FROM saga_inbox WHERE app = $1)"
        " + (SELECT count(*) FROM saga_history WHERE app = $1)"
        " + (SELECT count(*) FROM outbox WHERE app = $1) AS n",
        lambda rows: rows[0]["n"] == 0,
        app,
    )


async def _rows_of(settings: Settings, app: str, saga_type: str) -> dict[str, object]:
    """What the app holds: its sagas (with their versions), and its inbox, history and
    outbox rows."""
    sagas = await sql(settings, "SELECT saga_id, version FROM saga WHERE saga_type = $1", saga_type)
    counts = await sql(
        settings,
        "SELECT (SELECT count(*) FROM saga_inbox WHERE app = $1) AS inbox,"
        " (SELECT count(*) FROM saga_history WHERE app = $1) AS history,"
        " (SELECT count(*) FROM outbox WHERE app = $1) AS outbox,"
        " (SELECT count(*) FROM outbox WHERE app = $1 AND sent_at IS NOT NULL) AS sent",
        app,
    )
    return {"sagas": {r["saga_id"]: r["version"] for r in sagas}, **dict(counts[0])}
