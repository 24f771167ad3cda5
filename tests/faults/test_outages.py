"""Outages while sagas are in flight: Postgres unreachable, RabbitMQ restarted.

Each test runs the coordinator and the example adapters in this process, places 40 orders
of every outcome, breaks one service while they are in flight, mends it, and then checks
the guarantees: every saga reaches its expected status; the adapters acted on each command
once, compensations in reverse order; no outbox row is left unsent; nothing reached
``bus.dead``; the engine's loops are alive and the coordinator and adapters stop cleanly.

The shipping adapter's calls wait at a gate the test opens, so that deliveries are in hand,
unacknowledged, when the fault strikes, whatever the speed of the machine.

The faults act on the local services the test URLs name (``tests/faults/services.py``):
the module needs root, ``iptables`` and ``rabbitmqctl``. Whatever a test breaks is mended
in its ``finally``, and again by fixtures that tear down before any fixture needing the
services does.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import partial

import aio_pika
import asyncpg
import pytest

from adapters import inventory_adapter, payments_adapter, shipping_adapter
from adapters.inventory import FakeInventory
from adapters.payments import FakePaymentGateway
from adapters.shipping import FakeCarrier
from bus_orchestrator.adapters import Adapter, CommandContext
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from bus_orchestrator.core.messages import Command, Reply
from bus_orchestrator.core.state import SagaStatus
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.transport.topology import Topology
from tests.conftest import TestBus, open_test_bus
from tests.faults.services import (
    IPTABLES,
    Broker,
    LocalServices,
    cut_rule,
    live_client_ports,
    remove_fault_rules,
    run,
)
from tests.integration.harness import (
    SCENARIOS,
    SHIP,
    migrated,
    order,
    publish,
    sql,
    start_coordinator,
    wait_for_status,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

ORDERS = 40
FINAL = {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED}
# A step deadline is a business rule: one passing during an outage would rightly compensate
# the saga. Kept far beyond the outages here, so each order's outcome is known in advance.
STEP_TIMEOUT = 600.0
ENGINE_LOGGERS = ("bus_orchestrator", "asyncio")


# -- the faults --------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], what: str, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class PostgresOutage:
    """Postgres unreachable over TCP, by an iptables rule on the packets sent to its port.

    ``begin()`` answers each with a reset: the rule matches packets of established
    connections too, so a pooled connection fails on its next statement and a new one is
    refused. ``begin(silent=True)`` drops them instead: statements and connects hang until
    their timeouts, as in a network partition. The server hears of neither: the backends
    of the connections cut are terminated when the outage ends, or they would linger until
    a keepalive found them (hours) and use up ``max_connections``.
    """

    def __init__(self, database_url: str, services: LocalServices) -> None:
        self.url = database_url
        self.port = services.postgres.port
        self.rule: list[str] = []
        self.began: float | None = None
        self._backends: list[int] = []

    async def begin(self, *, silent: bool = False) -> None:
        self.rule = cut_rule(self.port, silent=silent)
        conn = await asyncpg.connect(self.url)
        try:
            self._backends = [
                row["pid"]
                for row in await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])",
                    sorted(live_client_ports(self.port)),
                )
            ]
        finally:
            await conn.close()
        await asyncio.to_thread(run, IPTABLES, "-I", *self.rule)
        self.began = asyncio.get_running_loop().time()

    async def end(self) -> None:
        """Remove the rule, wait for Postgres, terminate the backends the outage cut off."""
        await asyncio.to_thread(remove_fault_rules)
        if self.began is None:
            return
        self.began = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            try:
                conn = await asyncpg.connect(self.url, timeout=5)
                break
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        try:
            live = live_client_ports(self.port)
            for row in await conn.fetch(
                "SELECT pid, client_port FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                self._backends,
            ):
                if row["client_port"] not in live:
                    await conn.execute("SELECT pg_terminate_backend($1)", row["pid"])
        finally:
            await conn.close()

    def lasted(self) -> float:
        assert self.began is not None
        return asyncio.get_running_loop().time() - self.began


class BrokerRestart:
    """``rabbitmqctl stop_app`` then ``start_app``: every connection is closed meanwhile."""

    def __init__(self, amqp_url: str, broker: Broker) -> None:
        self.url = amqp_url
        self.broker = broker
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True
        await asyncio.to_thread(self.broker.stop_app)

    async def start(self) -> None:
        """Start the app again and wait until it accepts AMQP connections."""
        if not self.stopped:
            return
        await asyncio.to_thread(self.broker.start_app)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            try:
                connection = await aio_pika.connect(self.url, timeout=5)
            except (OSError, aio_pika.exceptions.AMQPError):
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            await connection.close()
            self.stopped = False
            return


# -- the system under test ---------------------------------------------------------------


class Gate:
    """Holds an adapter's handler calls until opened: their deliveries stay unacknowledged."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.held: list[tuple[str | None, str]] = []
        """``(correlation id, command id)`` of each delivery that reached the handler."""

    def wrap(self, adapter: Adapter) -> Adapter:
        call = adapter.call

        async def gated(command: Command, ctx: CommandContext) -> Reply:
            self.held.append((ctx.correlation_id, ctx.command_id))
            await self.open.wait()
            return await call(command, ctx)

        adapter.call = gated  # type: ignore[method-assign]
        return adapter

    def orders(self) -> set[str | None]:
        return {correlation_id for correlation_id, _ in self.held}

    def deliveries(self) -> Counter[str]:
        return Counter(command_id for _, command_id in self.held)


class Engine:
    """The coordinator and the example adapters (shipping behind ``gate``) of one test."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gate = Gate()
        self.service: CoordinatorService | None = None
        self._stop = asyncio.Event()
        self._adapters: asyncio.Task[None] | None = None

    async def start(self, **settings: float) -> None:
        """Start both, with these changes to the test's settings."""
        self.settings = self.settings.model_copy(update=settings)
        adapters = [
            inventory_adapter(FakeInventory()),
            payments_adapter(FakePaymentGateway()),
            self.gate.wrap(shipping_adapter(FakeCarrier())),
        ]
        self._adapters = asyncio.create_task(run_adapters(self.settings, adapters, self._stop))
        self.service = await start_coordinator(self.settings, step_timeout=STEP_TIMEOUT)

    def dead_loops(self) -> list[object]:
        """The background loops that have ended.

        Reached into on purpose: a loop that died quietly while the others finished the
        sagas is what these tests must catch, and nothing public shows it but the periodic
        loops' ``running``.
        """
        service = self.service
        assert service is not None and self._adapters is not None
        assert service.relay is not None and service.timers is not None
        assert service._housekeeping is not None and service.park is not None
        tasks = [*service.relay._tasks, service.timers._task, self._adapters]
        loops = [service._housekeeping.loop, service.park]
        return [t for t in tasks if t is None or t.done()] + [p for p in loops if not p.running]

    async def restart_coordinator(self) -> None:
        """Start a new coordinator in place of the one stopped (by ``stop_coordinator``)."""
        assert self.service is None
        self.service = await start_coordinator(self.settings, step_timeout=STEP_TIMEOUT)

    async def stop_coordinator(self) -> None:
        service, self.service = self.service, None
        if service is not None:
            await service.stop()

    async def stop(self) -> None:
        """Stop both; re-raises whatever ended the adapters' task."""
        self.gate.open.set()
        service, self.service = self.service, None
        adapters, self._adapters = self._adapters, None
        try:
            if service is not None:
                await service.stop()
        finally:
            if adapters is not None:
                self._stop.set()
                await adapters


class Batch:
    """The orders of a test: mixed outcomes, in two halves."""

    def __init__(self, count: int = ORDERS) -> None:
        names = list(SCENARIOS)
        self.plan = {f"f-{n:03d}": names[n % len(names)] for n in range(count)}
        ids = list(self.plan)
        self.first, self.second = ids[: count // 2], ids[count // 2 :]

    def shipping(self, orders: Sequence[str]) -> set[str | None]:
        """The orders among ``orders`` that reach the shipping step."""
        return {oid for oid in orders if SHIP in SCENARIOS[self.plan[oid]][2]}

    async def place(self, bus: TestBus, orders: Sequence[str], amqp_url: str) -> None:
        connection = await aio_pika.connect(amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            for oid in orders:
                event = order(oid, **SCENARIOS[self.plan[oid]][0])
                await publish(channel, bus.topology.events, event, correlation_id=oid)
        finally:
            await connection.close()


def logged(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> bool:
    return any(r.name.startswith(logger) and text in r.getMessage() for r in list(caplog.records))


async def dead_tap(bus: TestBus) -> str:
    """A durable queue of this test's own on ``bus.dead``: it keeps what reaches it across a
    broker restart (a transient tap would be emptied)."""
    name = f"{bus.topology.prefix}tap.dead"
    channel = await bus.channel()
    queue = await channel.declare_queue(name, durable=True)
    await queue.bind(bus.topology.dead, routing_key="")
    bus.queues.append(name)
    return name


async def dead_letters(amqp_url: str, topology: Topology, tap: str) -> dict[str, list[object]]:
    """Take what reached the tap and the topology's own ``bus.dead`` queue, with the why."""
    found: dict[str, list[object]] = {}
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in (tap, topology.dead):
            queue = await channel.declare_queue(name, passive=True)
            found[name] = []
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                headers = message.headers or {}
                why = {k: v for k, v in headers.items() if k.startswith(("x-dead", "x-first"))}
                found[name].append((message.routing_key, why))
    finally:
        await connection.close()
    return found


async def assert_nothing_dead_lettered(amqp_url: str, topology: Topology, tap: str) -> None:
    assert await dead_letters(amqp_url, topology, tap) == {tap: [], topology.dead: []}
    # and the tap does see what reaches bus.dead, after the fault too
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(topology.dead, ensure=True)
        await exchange.publish(aio_pika.Message(b"probe"), routing_key="probe")
        queue = await channel.declare_queue(tap, passive=True)
        for _ in range(200):
            if (probe := await queue.get(no_ack=True, fail=False)) is not None:
                assert probe.body == b"probe"
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the dead-letter tap did not see a probe sent to bus.dead")
    finally:
        await connection.close()


async def assert_guarantees(
    settings: Settings,
    batch: Batch,
    engine: Engine,
    bus: TestBus,
    tap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Everything the engine promises after a fault; stops the coordinator and adapters."""
    try:
        sagas = await wait_for_status(settings, list(batch.plan), FINAL, within=90)
    except AssertionError as exc:  # say where the missing messages went, if they did
        dead = await dead_letters(settings.amqp_url, bus.topology, tap)
        raise AssertionError(f"{exc}\ndead letters: {dead}") from None
    assert {oid: sagas[oid].status for oid in batch.plan} == {
        oid: SCENARIOS[s][1] for oid, s in batch.plan.items()
    }

    async def unsent() -> int:
        rows = await sql(settings, "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL")
        return int(rows[0]["n"])

    for _ in range(300):  # a row whose publish failed waits out its lease for the sweep
        if await unsent() == 0:
            break
        await asyncio.sleep(0.1)
    assert await unsent() == 0

    rows = await sql(
        settings, "SELECT correlation_id, command_type FROM adapter_command ORDER BY seq"
    )
    acted: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        acted[row["correlation_id"]].append(row["command_type"])
    assert dict(acted) == {oid: SCENARIOS[s][2] for oid, s in batch.plan.items()}

    assert engine.dead_loops() == []
    await engine.stop()
    await assert_nothing_dead_lettered(settings.amqp_url, bus.topology, tap)
    for text in ("rows unpublished", "still in hand", "dead-letter"):
        assert not logged(caplog, "bus_orchestrator", text), text
    errors = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(ENGINE_LOGGERS)
    ]
    assert errors == []


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def schema(settings: Settings, db_schema: str) -> str:
    await migrated(settings)
    return db_schema


@pytest.fixture
async def robust_bus(
    amqp_url: str, settings: Settings, fault_services: LocalServices
) -> AsyncIterator[TestBus]:
    """Like ``bus``, on a connection that outlives a broker restart, for the teardown."""
    async with open_test_bus(await aio_pika.connect_robust(amqp_url), settings) as test_bus:
        yield test_bus


@pytest.fixture
async def engine(settings: Settings, schema: str, robust_bus: TestBus) -> AsyncIterator[Engine]:
    running = Engine(settings)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def mended(fault_services: LocalServices, engine: Engine) -> Iterator[None]:
    """Mends the services even after a failure or a timeout, before the fixtures above
    (which need them) tear down. Synchronous, so it runs with or without an event loop."""
    try:
        yield
    finally:
        fault_services.mend()


@pytest.fixture
async def postgres_outage(
    database_url: str, fault_services: LocalServices, mended: None
) -> AsyncIterator[PostgresOutage]:
    outage = PostgresOutage(database_url, fault_services)
    try:
        yield outage
    finally:
        await outage.end()


@pytest.fixture
async def broker_restart(
    amqp_url: str, fault_services: LocalServices, mended: None
) -> AsyncIterator[BrokerRestart]:
    restart = BrokerRestart(amqp_url, fault_services.broker)
    try:
        yield restart
    finally:
        await restart.start()


@pytest.fixture
def caplog_engine(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="bus_orchestrator")
    return caplog


# -- the tests ---------------------------------------------------------------------------


async def test_postgres_outage_holds_messages_and_loses_none(
    settings: Settings,
    robust_bus: TestBus,
    engine: Engine,
    postgres_outage: PostgresOutage,
    caplog_engine: pytest.LogCaptureFixture,
) -> None:
    caplog = caplog_engine
    batch = Batch()
    tap = await dead_tap(robust_bus)
    await engine.start()
    await batch.place(robust_bus, batch.first, settings.amqp_url)
    # the first orders that get as far as shipping wait there, their commands in hand
    shipping = batch.shipping(batch.first)
    await eventually(lambda: engine.gate.orders() >= shipping, "ship commands in hand")

    probe = await asyncpg.connect(settings.database_url)
    try:
        await postgres_outage.begin()
        # the outage is real: a connection opened before it fails, a new one is refused
        with pytest.raises((OSError, asyncpg.PostgresConnectionError)):
            await probe.fetchval("SELECT 1")
        with pytest.raises(OSError):
            await asyncpg.connect(settings.database_url, timeout=5)
        # the coordinator takes orders it cannot store; the shipping handler runs, and its
        # adapter cannot record the results
        await batch.place(robust_bus, batch.second, settings.amqp_url)
        engine.gate.open.set()
        for logger, text in (
            ("bus_orchestrator.runtime.coordinator", "store unavailable, retrying"),
            ("bus_orchestrator.adapters.processor", "adapter shipping: holding command"),
            ("bus_orchestrator.runtime.relay", "outbox sweep failed"),
            ("bus_orchestrator.runtime.timers", "timer poll failed"),
        ):
            await eventually(partial(logged, caplog, logger, text), f"{logger} to meet the outage")
        await asyncio.sleep(max(0.0, 5.0 - postgres_outage.lasted()))
    finally:
        probe.terminate()
        await postgres_outage.end()
    await assert_guarantees(settings, batch, engine, robust_bus, tap, caplog)


async def test_broker_restart_loses_no_message(
    settings: Settings,
    robust_bus: TestBus,
    engine: Engine,
    broker_restart: BrokerRestart,
    caplog_engine: pytest.LogCaptureFixture,
) -> None:
    caplog = caplog_engine
    batch = Batch()
    tap = await dead_tap(robust_bus)
    await engine.start()
    await batch.place(robust_bus, batch.first, settings.amqp_url)
    shipping = batch.shipping(batch.first)
    await eventually(lambda: engine.gate.orders() >= shipping, "ship commands in hand")
    in_hand = set(engine.gate.deliveries())

    probe = await aio_pika.connect(settings.amqp_url)
    try:
        await broker_restart.stop()
        # the restart is real: the broker closed a connection opened before it
        await eventually(
            lambda: not probe.connected.is_set(), "the broker to close its connections"
        )
        await asyncio.sleep(2.0)
    finally:
        await broker_restart.start()
        await probe.close()
    await batch.place(robust_bus, batch.second, settings.amqp_url)
    # the shipping adapter consumes again, and the deliveries it held unacknowledged when
    # its connection went have come back to it
    await eventually(
        lambda: all(engine.gate.deliveries()[c] >= 2 for c in in_hand),
        "the commands in hand to be redelivered",
        within=60,
    )
    engine.gate.open.set()
    await assert_guarantees(settings, batch, engine, robust_bus, tap, caplog)


async def test_stopping_the_coordinator_during_a_postgres_outage_requeues_what_it_holds(
    settings: Settings,
    robust_bus: TestBus,
    engine: Engine,
    postgres_outage: PostgresOutage,
    caplog_engine: pytest.LogCaptureFixture,
) -> None:
    """Packets to Postgres are dropped, so the coordinator's tries hang until they time out,
    and the stop comes while tries are under way: what it holds goes back to the queue,
    for the next coordinator, and not to ``bus.dead``."""
    caplog = caplog_engine
    batch = Batch()
    tap = await dead_tap(robust_bus)
    engine.gate.open.set()
    # tries that hang end sooner, so that the test does too
    await engine.start(db_command_timeout_seconds=2.0, db_connect_timeout_seconds=2.0)
    try:
        await postgres_outage.begin(silent=True)
        await batch.place(robust_bus, list(batch.plan), settings.amqp_url)
        await eventually(
            lambda: logged(caplog, "bus_orchestrator.runtime.coordinator", "store unavailable"),
            "the coordinator to meet the outage",
        )
        await engine.stop_coordinator()
    finally:
        await postgres_outage.end()
    await engine.restart_coordinator()
    await assert_guarantees(engine.settings, batch, engine, robust_bus, tap, caplog)
