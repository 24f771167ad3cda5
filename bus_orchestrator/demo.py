"""``bus-orchestrator demo``: order-to-cash sagas over the real broker and database.

It migrates, runs the coordinator and the example adapters in this process, places a mix
of orders whose data steers each to a known end, shows progress live, and ends with a
summary. It succeeds only if every saga reached the status its scenario expects.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from aio_pika.exceptions import ChannelClosed
from rich.console import Console
from rich.live import Live
from rich.table import Table

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.runtime.publishing import Publication, publish_all
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.store.migrate import migrate
from bus_orchestrator.store.postgres import PostgresSagaStore, create_pool
from bus_orchestrator.store.session import connect_once
from bus_orchestrator.telemetry.setup import Telemetry
from bus_orchestrator.transport.topology import connect
from contracts import REGISTRY, Address, LineItem, OrderPlaced
from sagas import all_sagas


@dataclass(frozen=True)
class Scenario:
    name: str
    expected: SagaStatus
    sku: str = "SKU-1"
    unit_price: str = "25.00"
    country: str = "DE"


SCENARIOS = (
    Scenario("completes", SagaStatus.COMPLETED),
    Scenario("payment declined (total > 10000)", SagaStatus.COMPENSATED, unit_price="6000.00"),
    Scenario("out of stock (OOS- sku)", SagaStatus.COMPENSATED, sku="OOS-42"),
    Scenario("shipping rejected (country ZZ)", SagaStatus.COMPENSATED, country="ZZ"),
)


def demo_order(order_id: str, scenario: Scenario) -> OrderPlaced:
    price = Decimal(scenario.unit_price)
    return OrderPlaced(
        order_id=order_id,
        customer_id=f"customer-{order_id[-3:]}",
        items=(LineItem(sku=scenario.sku, quantity=2, unit_price=price),),
        total=price * 2,
        currency="EUR",
        shipping_address=Address(country=scenario.country, city="Example City"),
    )


def _progress(plan: dict[str, Scenario], seen: dict[str, SagaInstance], elapsed: float) -> Table:
    counts = Counter(str(i.status) for i in seen.values())
    waiting = len(plan) - len(seen)
    table = Table(title=f"order-to-cash sagas ({elapsed:.1f}s)")
    for status in (*SagaStatus, "not started"):
        table.add_column(str(status))
    table.add_row(*(str(counts.get(str(s), 0)) for s in SagaStatus), str(waiting))
    return table


def _summary(plan: dict[str, Scenario], seen: dict[str, SagaInstance]) -> Table:
    table = Table(title="final status by scenario")
    for column in ("scenario", "orders", "expected", "reached"):
        table.add_column(column)
    table.add_column("steps of the first order", overflow="fold")
    for scenario in SCENARIOS:
        ids = [oid for oid, s in plan.items() if s is scenario]
        reached = Counter(str(seen[i].status) if i in seen else "missing" for i in ids)
        first = seen.get(ids[0]) if ids else None
        steps = ", ".join(f"{s.name}:{s.status}" for s in first.steps) if first else ""
        ok = reached == Counter({str(scenario.expected): len(ids)})
        table.add_row(
            scenario.name,
            str(len(ids)),
            str(scenario.expected),
            ("[green]" if ok else "[red]") + ", ".join(f"{k} x{v}" for k, v in reached.items()),
            steps,
        )
    return table


async def run_demo(
    settings: Settings,
    orders: int,
    *,
    wait_seconds: float,
    console: Console,
    telemetry: Telemetry | None = None,
) -> bool:
    from adapters import example_adapters
    from bus_orchestrator.adapters.runner import run_adapters

    pool = await create_pool(settings)
    try:
        conn = await connect_once(settings)
        try:
            await migrate(conn, settings.database_schema)
        finally:
            await conn.close()
        store = PostgresSagaStore(pool, timedelta(seconds=settings.outbox_lease_seconds))
        definitions = all_sagas(timedelta(seconds=settings.step_timeout_seconds))
        service = CoordinatorService(
            settings, definitions, REGISTRY, pool=pool, telemetry=telemetry
        )
        await service.start()
        stop_adapters = asyncio.Event()
        adapters_task = asyncio.create_task(
            run_adapters(
                settings, example_adapters(), stop_adapters, pool=pool, telemetry=telemetry
            )
        )
        try:
            await _wait_for_adapters(service, settings, wait_seconds)
            run_id = uuid.uuid4().hex[:6]
            plan = {f"demo-{run_id}-{n:03d}": SCENARIOS[n % len(SCENARIOS)] for n in range(orders)}
            console.print(
                f"placing {orders} orders (run {run_id}) on {service.topology.events} ..."
            )
            await publish_all(
                settings,
                [
                    Publication(str(uuid.uuid4()), demo_order(oid, scenario), oid)
                    for oid, scenario in plan.items()
                ],
                source="urn:bus-orchestrator:demo",
            )
            seen = await _watch(store, plan, wait_seconds, console)
        finally:
            stop_adapters.set()
            await service.stop()
            await adapters_task
        console.print()
        console.print(_summary(plan, seen))
        failures = [
            oid
            for oid, scenario in plan.items()
            if oid not in seen or seen[oid].status is not scenario.expected
        ]
        if failures:
            console.print(f"[bold red]{len(failures)} sagas did not end as expected[/]")
            for oid in failures[:10]:
                console.print(f"  bus-orchestrator sagas show {oid}")
            return False
        console.print(f"[bold green]all {orders} sagas ended as expected[/]")
        return True
    finally:
        await pool.close()


async def _wait_for_adapters(
    service: CoordinatorService, settings: Settings, wait_seconds: float
) -> None:
    """Commands published before an adapter's queue exists would be unroutable."""
    from adapters import example_adapters

    names = [service.topology.queue(f"adapter.{a.name}") for a in example_adapters()]
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
    store: PostgresSagaStore, plan: dict[str, Scenario], wait_seconds: float, console: Console
) -> dict[str, SagaInstance]:
    """Poll the sagas of this run until all are final or the time is up."""
    seen: dict[str, SagaInstance] = {}
    started = time.monotonic()
    with Live(_progress(plan, seen, 0.0), console=console, refresh_per_second=4) as live:
        while True:
            for oid in plan:
                if oid in seen and seen[oid].status.terminal:
                    continue
                found = await store.find(oid)
                if found:
                    seen[oid] = found[0]
            elapsed = time.monotonic() - started
            live.update(_progress(plan, seen, elapsed))
            done = len(seen) == len(plan) and all(i.status.terminal for i in seen.values())
            if done or elapsed > wait_seconds:
                return seen
            await asyncio.sleep(0.25)
