"""``bus-orchestrator demo``: apps' sagas over the real broker and database, or in memory.

It migrates, runs each app's coordinator and adapters in this process, side by side as
separate deployments would share a broker and a database, starts the sagas of each app's
demo plan (each steered by its data to a known end), shows progress live, and ends with a
summary per app. It succeeds only if every saga reached the status its case expects.

The embedded mode (``demo --embedded``, and plain ``demo`` when RabbitMQ or Postgres is
unreachable) runs the same plan through ``bus_orchestrator.testing.SagaHarness``: the same
coordinator, codec and adapters over the in-memory bus and store, on a clock of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

from aio_pika.exceptions import ChannelClosed
from rich.console import Console, Group
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

Plan = dict[str, DemoCase]
"""An app's demo cases by correlation id."""
Seen = dict[str, SagaInstance]
"""The sagas of a plan found so far, by correlation id."""


def _progress(title: str, plan: Plan, seen: Seen, elapsed: float) -> Table:
    counts = Counter(str(i.status) for i in seen.values())
    waiting = len(plan) - len(seen)
    table = Table(title=f"{title} sagas ({elapsed:.1f}s)")
    for status in (*SagaStatus, "not started"):
        table.add_column(str(status))
    table.add_row(*(str(counts.get(str(s), 0)) for s in SagaStatus), str(waiting))
    return table


def _summary(title: str, plan: Plan, seen: Seen) -> Table:
    table = Table(title=f"{title}: final status by scenario")
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


def _without_plan(apps: Sequence[App], console: Console) -> bool:
    """Say which apps have no demo plan; whether any has none."""
    missing = [a.name for a in apps if a.demo is None]
    for name in missing:
        console.print(f"[bold red]app {name!r} has no demo plan (App(demo=...))[/]")
    return bool(missing)


def _plan(app: App, count: int) -> Plan:
    assert app.demo is not None  # noqa: S101 - checked by _without_plan
    return {case.correlation_id: case for case in app.demo(count)}


def _started(app: App, case: DemoCase, found: Sequence[SagaInstance]) -> SagaInstance | None:
    """The saga a case's start event started, among those with its correlation id."""
    types = {d.name for d in app.sagas if isinstance(case.event, d.start_types)}
    return next((i for i in found if i.saga_type in types), None)


async def run_demo(
    settings: Settings,
    apps: Sequence[App],
    count: int,
    *,
    wait_seconds: float,
    console: Console,
    telemetry: Telemetry | None = None,
) -> bool:
    """Every app's coordinator and adapters side by side on the broker and the database,
    as separate deployments would run; ``count`` sagas of each app's plan at once."""
    from bus_orchestrator.adapters.runner import run_adapters

    if _without_plan(apps, console):
        return False
    pool = await create_pool(settings)
    try:
        conn = await connect_once(settings)
        try:
            await migrate(conn, settings.database_schema)
        finally:
            await conn.close()
        store = PostgresSagaStore(pool, timedelta(seconds=settings.outbox_lease_seconds))
        services: list[CoordinatorService] = []
        adapters: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
        try:
            for app in apps:
                service = CoordinatorService(
                    settings, app.sagas, app.registry, pool=pool, telemetry=telemetry, app=app.name
                )
                await service.start()
                services.append(service)
                stop = asyncio.Event()
                run = run_adapters(
                    settings, app.adapters, stop, pool=pool, telemetry=telemetry, app=app.name
                )
                adapters.append((stop, asyncio.create_task(run)))
            for service, app in zip(services, apps, strict=True):
                await _wait_for_adapters(service, settings, app, wait_seconds)
            plans = {app.name: _plan(app, count) for app in apps}
            starts, then = [], []
            for service, app in zip(services, apps, strict=True):
                plan = plans[app.name]
                console.print(
                    f"starting {len(plan)} sagas on {service.topology.events} ({app.name}) ..."
                )
                for cid, case in plan.items():
                    starts.append(Publication(str(uuid.uuid4()), case.event, cid))
                    then += [Publication(str(uuid.uuid4()), e) for e in case.then]
            await publish_all(settings, starts + then, source="urn:bus-orchestrator:demo")
            seen = await _watch(store, apps, plans, wait_seconds, console)
        finally:
            for stop, _ in adapters:
                stop.set()
            for service in services:
                await service.stop()
            for _, task in adapters:
                await task
        return all(
            [_report(app, plans[app.name], seen[app.name], console, embedded=False) for app in apps]
        )
    finally:
        await pool.close()


def _report(app: App, plan: Plan, seen: Seen, console: Console, *, embedded: bool) -> bool:
    """The app's summary table, and whether every saga ended as its case expects."""
    console.print()
    console.print(_summary(app.document_title, plan, seen))
    failures = [
        cid
        for cid, case in plan.items()
        if cid not in seen or seen[cid].status is not case.expected
    ]
    if failures:
        console.print(f"[bold red]{app.name}: {len(failures)} sagas did not end as expected[/]")
        for oid in failures[:10]:
            if embedded:  # gone with the process: say what became of it here
                found = seen.get(oid)
                console.print(f"  {oid}: {found.status if found else 'never started'}", end="")
                console.print(f" ({found.failure})" if found and found.failure else "")
            else:
                console.print(f"  bus-orchestrator sagas show {oid}")
        return False
    console.print(f"[bold green]{app.name}: all {len(plan)} sagas ended as expected[/]")
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
    settings: Settings, apps: Sequence[App], count: int, *, wait_seconds: float, console: Console
) -> bool:
    """Each app's demo plan in memory, one app after the other: no broker, no database.
    Timers run on the harness's clock, so a saga that waits for a timeout is given
    ``wait_seconds`` of simulated time."""
    if _without_plan(apps, console):
        return False
    return all([await _embedded(settings, app, count, wait_seconds, console) for app in apps])


async def _embedded(
    settings: Settings, app: App, count: int, wait_seconds: float, console: Console
) -> bool:
    harness = SagaHarness(app, settings=settings)
    started = harness.clock.now
    plan = _plan(app, count)
    console.print(
        f"starting {len(plan)} sagas in memory ({app.name}; embedded: no RabbitMQ, no Postgres) ..."
    )
    for cid, case in plan.items():
        await harness.publish(case.event, correlation_id=cid, source="urn:bus-orchestrator:demo")
    await harness.run_until_idle()
    for case in plan.values():  # once the sagas run, as the other systems would answer
        for event in case.then:
            await harness.publish(event, source="urn:bus-orchestrator:demo")
    await harness.run_until_idle()
    if not await _all_final(harness, app, plan):
        await harness.advance(timedelta(seconds=wait_seconds))
    seen = {}
    for cid, case in plan.items():
        found = _started(app, case, await harness.store.find(cid))
        if found:
            seen[cid] = found
    simulated = (harness.clock.now - started).total_seconds()
    console.print(_progress(app.document_title, plan, seen, simulated))
    for dead in harness.dead_letters:
        console.print(
            f"[yellow]dead-lettered {dead.message_type} ({dead.reason}): {dead.detail}[/]"
        )
    return _report(app, plan, seen, console, embedded=True)


async def _all_final(harness: SagaHarness, app: App, plan: Plan) -> bool:
    for cid, case in plan.items():
        found = _started(app, case, await harness.store.find(cid))
        if found is None or not found.status.terminal:
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
    apps: Sequence[App],
    plans: dict[str, Plan],
    wait_seconds: float,
    console: Console,
) -> dict[str, Seen]:
    """Poll the sagas of this run until all are final or the time is up."""
    seen: dict[str, Seen] = {app.name: {} for app in apps}
    started = time.monotonic()

    def progress(elapsed: float) -> Group:
        return Group(
            *(_progress(a.document_title, plans[a.name], seen[a.name], elapsed) for a in apps)
        )

    with Live(progress(0.0), console=console, refresh_per_second=4) as live:
        while True:
            for app in apps:
                found_so_far = seen[app.name]
                for cid, case in plans[app.name].items():
                    if cid in found_so_far and found_so_far[cid].status.terminal:
                        continue
                    found = _started(app, case, await store.find(cid))
                    if found:
                        found_so_far[cid] = found
            elapsed = time.monotonic() - started
            live.update(progress(elapsed))
            done = all(
                len(seen[a.name]) == len(plans[a.name])
                and all(i.status.terminal for i in seen[a.name].values())
                for a in apps
            )
            if done or elapsed > wait_seconds:
                return seen
            await asyncio.sleep(0.25)
