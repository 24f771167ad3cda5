"""``bus-orchestrator demo``: an app's sagas over the real broker and database, or in memory.

It migrates, runs the app's coordinator and adapters in this process, starts the sagas of
the app's demo plan (each steered by its data to a known end), shows progress live, and
ends with a summary. It succeeds only if every saga reached the status its case expects.

The embedded mode (``demo --embedded``, and plain ``demo`` when RabbitMQ or Postgres is
unreachable) runs the same plan through ``bus_orchestrator.testing.SagaHarness``: the same
coordinator, codec and adapters over the in-memory bus and store, on a clock of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import timedelta

from aio_pika.exceptions import ChannelClosed
from rich.console import Console
from rich.live import Live
from rich.table import Table

from bus_orchestrator.app import App, DemoCase
from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.errors import BrokerUnavailableError, StoreUnavailableError
from bus_orchestrator.runtime.publishing import Publication, publish_all
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.startup import quiet, waiting_for
from bus_orchestrator.store.migrate import migrate
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.store.session import connect_once
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.testing.harness import SagaHarness
from bus_orchestrator.transport.topology import connect


def _progress(
    title: str, plan: dict[str, DemoCase], seen: dict[str, SagaInstance], elapsed: float
) -> Table:
    counts = Counter(str(i.status) for i in seen.values())
    waiting = len(plan) - len(seen)
    table = Table(title=f"{title} sagas ({elapsed:.1f}s)")
    for status in (*SagaStatus, "not started"):
        table.add_column(str(status))
    table.add_row(*(str(counts.get(str(s), 0)) for s in SagaStatus), str(waiting))
    return table


def _summary(plan: dict[str, DemoCase], seen: dict[str, SagaInstance]) -> Table:
    table = Table(title="final status by scenario")
    for column in ("scenario", "sagas", "expected", "reached"):
        table.add_column(column)
    table.add_column("steps of the first saga", overflow="fold")
    for scenario in dict.fromkeys(case.scenario for case in plan.values()):
        ids = [cid for cid, case in plan.items() if case.scenario == scenario]
        expected = plan[ids[0]].expected
        reached = Counter(str(seen[i].status) if i in seen else "missing" for i in ids)
        first = seen.get(ids[0])
        steps = ", ".join(f"{s.name}:{s.status}" for s in first.steps) if first else ""
        ok = reached == Counter({str(expected): len(ids)})
        table.add_row(
            scenario,
            str(len(ids)),
            str(expected),
            ("[green]" if ok else "[red]") + ", ".join(f"{k} x{v}" for k, v in reached.items()),
            steps,
        )
    return table


async def run_demo(
    settings: Settings,
    app: App,
    count: int,
    *,
    wait_seconds: float,
    console: Console,
    telemetry: Telemetry | None = None,
) -> bool:
    from bus_orchestrator.adapters.runner import run_adapters

    if app.demo is None:
        console.print(f"[bold red]app {app.name!r} has no demo plan (App(demo=...))[/]")
        return False

    pool = await create_pool(settings)
    try:
        conn = await connect_once(settings)
        try:
            await migrate(conn, settings.database_schema)
        finally:
            await conn.close()
        store = PostgresSagaStore(pool, timedelta(seconds=settings.outbox_lease_seconds))
        service = CoordinatorService(
            settings, app.sagas, app.registry, pool=pool, telemetry=telemetry, app=app.name
        )
        await service.start()
        stop_adapters = asyncio.Event()
        adapters_task = asyncio.create_task(
            run_adapters(
                settings,
                app.adapters,
                stop_adapters,
                pool=pool,
                telemetry=telemetry,
                app=app.name,
            )
        )
        try:
            await _wait_for_adapters(service, settings, app, wait_seconds)
            plan = {case.correlation_id: case for case in app.demo(count)}
            console.print(f"starting {len(plan)} sagas on {service.topology.events} ...")
            await publish_all(
                settings,
                [Publication(str(uuid.uuid4()), case.event, cid) for cid, case in plan.items()],
                source="urn:bus-orchestrator:demo",
            )
            seen = await _watch(store, app.document_title, plan, wait_seconds, console)
        finally:
            stop_adapters.set()
            await service.stop()
            await adapters_task
        return _report(plan, seen, console, embedded=False)
    finally:
        await pool.close()


def _report(
    plan: dict[str, DemoCase], seen: dict[str, SagaInstance], console: Console, *, embedded: bool
) -> bool:
    """The summary table, and whether every saga ended as its case expects."""
    console.print()
    console.print(_summary(plan, seen))
    failures = [
        cid
        for cid, case in plan.items()
        if cid not in seen or seen[cid].status is not case.expected
    ]
    if failures:
        console.print(f"[bold red]{len(failures)} sagas did not end as expected[/]")
        for oid in failures[:10]:
            if embedded:  # gone with the process: say what became of it here
                found = seen.get(oid)
                console.print(f"  {oid}: {found.status if found else 'never started'}", end="")
                console.print(f" ({found.failure})" if found and found.failure else "")
            else:
                console.print(f"  bus-orchestrator sagas show {oid}")
        return False
    console.print(f"[bold green]all {len(plan)} sagas ended as expected[/]")
    return True


async def unreachable(settings: Settings) -> str | None:
    """Why the demo cannot use RabbitMQ or Postgres (``RabbitMQ at host:port: connection
    refused``), or ``None`` when both answer."""
    try:
        with quiet():
            try:  # a broker that hangs (a firewalled port) is as unreachable as a refusal
                async with asyncio.timeout(settings.db_connect_timeout_seconds):
                    connection = await connect(settings.amqp_url)
            except TimeoutError as exc:
                raise BrokerUnavailableError("no answer") from exc
            await connection.close()
            conn = await connect_once(settings)
            await conn.close()
    except (BrokerUnavailableError, StoreUnavailableError) as exc:
        return waiting_for(exc, settings)
    return None


async def run_embedded_demo(
    settings: Settings, app: App, count: int, *, wait_seconds: float, console: Console
) -> bool:
    """The demo plan in memory: no broker, no database. Timers run on the harness's clock,
    so a saga that waits for a timeout is given ``wait_seconds`` of simulated time."""
    if app.demo is None:
        console.print(f"[bold red]app {app.name!r} has no demo plan (App(demo=...))[/]")
        return False
    harness = SagaHarness(app, settings=settings)
    started = harness.clock.now
    plan = {case.correlation_id: case for case in app.demo(count)}
    console.print(f"starting {len(plan)} sagas in memory (embedded: no RabbitMQ, no Postgres) ...")
    for cid, case in plan.items():
        await harness.publish(case.event, correlation_id=cid, source="urn:bus-orchestrator:demo")
    await harness.run_until_idle()
    if not await _all_final(harness, plan):
        await harness.advance(timedelta(seconds=wait_seconds))
    seen = {}
    for cid in plan:
        found = await harness.store.find(cid)
        if found:
            seen[cid] = found[0]
    simulated = (harness.clock.now - started).total_seconds()
    console.print(_progress(app.document_title, plan, seen, simulated))
    for dead in harness.dead_letters:
        console.print(
            f"[yellow]dead-lettered {dead.message_type} ({dead.reason}): {dead.detail}[/]"
        )
    return _report(plan, seen, console, embedded=True)


async def _all_final(harness: SagaHarness, plan: dict[str, DemoCase]) -> bool:
    for cid in plan:
        found = await harness.store.find(cid)
        if not found or not found[0].status.terminal:
            return False
    return True


async def _wait_for_adapters(
    service: CoordinatorService, settings: Settings, app: App, wait_seconds: float
) -> None:
    """Commands published before an adapter's queue exists would be unroutable."""
    names = [service.topology.adapter_queue(service.app, a.name) for a in app.adapters]
    connection = await connect(settings.amqp_url)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            channel = await connection.channel()
            try:
                counts = [
                    (await channel.declare_queue(name, passive=True)).declaration_result
                    for name in names
                ]
                if all(c.consumer_count for c in counts):
                    return
            except ChannelClosed:
                pass  # not declared yet
            finally:
                if not channel.is_closed:
                    await channel.close()
            if time.monotonic() > deadline:
                raise TimeoutError(f"adapters did not start consuming {names}")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def _watch(
    store: PostgresSagaStore,
    title: str,
    plan: dict[str, DemoCase],
    wait_seconds: float,
    console: Console,
) -> dict[str, SagaInstance]:
    """Poll the sagas of this run until all are final or the time is up."""
    seen: dict[str, SagaInstance] = {}
    started = time.monotonic()
    with Live(_progress(title, plan, seen, 0.0), console=console, refresh_per_second=4) as live:
        while True:
            for oid in plan:
                if oid in seen and seen[oid].status.terminal:
                    continue
                found = await store.find(oid)
                if found:
                    seen[oid] = found[0]
            elapsed = time.monotonic() - started
            live.update(_progress(title, plan, seen, elapsed))
            done = len(seen) == len(plan) and all(i.status.terminal for i in seen.values())
            if done or elapsed > wait_seconds:
                return seen
            await asyncio.sleep(0.25)
