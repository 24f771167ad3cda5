#!/usr/bin/env python3
"""The engine's hot path in a closed loop, shaped like the yardstick (bench_saga.py).

What one round does:

  driver --OrderPlaced--> [bench.bus.events] --> CoordinatorService (the real engine:
      order-to-cash saga, contracts.REGISTRY, quorum work queue, inbox, history, version
      check, outbox + relay, CloudEvents codec)
  [bench.bus.commands] --> fake adapter (bench/fake_adapter.py): success reply, confirmed; ack
  [bench.bus.replies]  --> CoordinatorService ... until the saga is ``completed``.

N sagas are measured after a warmup; C are in flight; a new order is placed when one
completes. Everything runs in one process, on the same kind of event loop as the yardstick
(uvloop by default).

Completion is observed where it happens: the store's ``commit`` is wrapped (on the instance,
from here; the engine is not changed) and a committed change whose saga is ``completed``
counts as that saga's completion, at the moment the commit returned. That is the same
instant the yardstick measures (its COMPLETED update returning); polling the table would
add its own interval to every latency. The wrappers cost a few clock reads and dict updates
per call, next to a Postgres round trip.

Measured: completed sagas/s; saga latency (driver publish -> completed commit); step latency
(commit of one transition -> commit of the next, for the same saga); time spent in the
store's ``load`` and ``commit`` calls; a breakdown of each step into relay-to-adapter,
adapter, reply-to-load (broker, quorum queue, delivery, decode), load, decide, commit;
process CPU and RSS. One JSON line per round on stdout (fields named as the yardstick's),
a summary on stderr.

Its own names: Postgres schema ``bench_engine`` (dropped and migrated afresh each round) and
exchange/queue prefix ``bench.`` (deleted and declared afresh each round).

  python bench/bench_engine.py --rounds 3                                   # 100 in flight
  python bench/bench_engine.py --rounds 3 --concurrency 1 --sagas 300 --warmup 50
  python bench/bench_engine.py --rounds 1 --cprofile /tmp/engine.prof       # profile a round
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import aio_pika
import asyncpg
from fake_adapter import FakeAdapter

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaInstance, SagaStatus
from bus_orchestrator.ports import (
    ByPendingCommand,
    Change,
    CommitResult,
    Committed,
    Loaded,
    SagaKey,
)
from bus_orchestrator.runtime.service import CoordinatorService
from bus_orchestrator.store.migrate import migrate, quote_ident
from bus_orchestrator.store.postgres import PostgresSagaStore
from bus_orchestrator.transport.codec import encode
from bus_orchestrator.transport.topology import Topology
from contracts import REGISTRY, Address, LineItem, OrderPlaced
from sagas import order_to_cash

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ENGINE_PG_DSN = os.environ.get("ENGINE_PG_DSN", "postgresql://root@127.0.0.1:5432/test")
DRIVER_SOURCE = "urn:bus-orchestrator:bench:driver"
now = time.perf_counter


# -- statistics (nearest-rank percentiles, the same definition the yardstick reports) -------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = round(p / 100.0 * len(sorted_values) + 0.5) - 1
    return sorted_values[max(0, min(len(sorted_values) - 1, rank))]


def latency_ms(samples_s: Iterable[float]) -> dict[str, float]:
    values = sorted(x * 1000.0 for x in samples_s)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(values[-1], 3),
        "mean_ms": round(statistics.fmean(values), 3),
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the round ------------------------------------------------------------------------------


@dataclass
class Config:
    sagas: int = 1000
    warmup: int = 200
    concurrency: int = 100
    prefetch: int = 100
    pool_size: int = 16
    schema: str = "bench_engine"
    prefix: str = "bench."
    loop: str = "uvloop"
    cprofile: str | None = None


@dataclass
class Stats:
    saga_lat: list[float] = field(default_factory=list)
    step_lat: list[float] = field(default_factory=list)
    load_lat: list[float] = field(default_factory=list)
    commit_lat: list[float] = field(default_factory=list)
    not_committed: int = 0
    marks: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per command id: when its step's moments happened (see ``step_breakdown``)."""

    def reset_step_figures(self) -> None:
        self.step_lat.clear()
        self.load_lat.clear()
        self.commit_lat.clear()
        self.not_committed = 0
        self.marks.clear()

    def mark(self, command_id: str | None, **moments: float) -> None:
        if command_id is not None and command_id in self.marks:
            self.marks[command_id].update(moments)

    def on_adapter(self, command_id: str, received: float, replying: float) -> None:
        self.mark(command_id, adapter_in=received, adapter_out=replying)


# One step, from the commit that queued command X to the commit of the reply to X, cut at the
# moments the bench can see: (name, from, to).
SEGMENTS = (
    ("relay_to_adapter", "sent", "adapter_in"),  # relay queue, publish, broker, delivery
    ("adapter", "adapter_in", "adapter_out"),  # fake adapter: parse, build, encode
    ("reply_to_load", "adapter_out", "load_start"),  # publish, quorum queue, delivery, decode
    ("load", "load_start", "load_end"),  # store.load round trip
    ("decide", "load_end", "commit_start"),  # decide + encode command + history rows
    ("commit", "commit_start", "commit_end"),  # store.commit round trip
)


def step_breakdown(marks: dict[str, dict[str, float]]) -> dict[str, Any]:
    """p50 and mean of each segment, over the steps whose every moment was seen."""
    moments = {moment for _, start, end in SEGMENTS for moment in (start, end)}
    complete = [m for m in marks.values() if moments <= m.keys()]
    result: dict[str, Any] = {"steps": len(complete)}
    for name, start, end in SEGMENTS:
        values = sorted(1000.0 * (m[end] - m[start]) for m in complete)
        result[name] = {
            "p50_ms": round(percentile(values, 50), 3),
            "mean_ms": round(statistics.fmean(values), 3) if values else float("nan"),
        }
    return result


def tap_store(
    store: PostgresSagaStore,
    stats: Stats,
    on_transition: Callable[[SagaInstance, float], None],
) -> None:
    """Time the store's two calls and report every committed saga state, as it commits."""
    load, commit = store.load, store.commit

    async def timed_load(consumer: str, message_id: str, key: SagaKey, source: str = "") -> Loaded:
        t0 = now()
        loaded = await load(consumer, message_id, key, source)
        t = now()
        stats.load_lat.append(t - t0)
        if isinstance(key, ByPendingCommand):
            stats.mark(key.command_id, load_start=t0, load_end=t)
        return loaded

    async def timed_commit(change: Change) -> Committed:
        t0 = now()
        committed = await commit(change)
        t = now()
        stats.commit_lat.append(t - t0)
        # The first history entry is the message in hand; a reply's causation is its command.
        answered = change.history[0].causation_id if change.history else None
        stats.mark(answered, commit_start=t0, commit_end=t)
        if committed.result is not CommitResult.COMMITTED:
            stats.not_committed += 1
            return committed
        for row in committed.outbox:
            stats.marks[row.message.message_id] = {"sent": t}
        if change.instance is not None:
            on_transition(change.instance, t)
        return committed

    # Instance attributes shadow the methods; the coordinator holds this very object.
    store.load = timed_load  # type: ignore[method-assign]
    store.commit = timed_commit  # type: ignore[method-assign]


def order_placed(order_id: str) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        customer_id="customer-1",
        items=(LineItem(sku="ABC-123", quantity=2, unit_price=Decimal("6.17")),),
        total=Decimal("12.34"),
        currency="EUR",
        shipping_address=Address(country="DE"),
    )


async def reset(settings: Settings, topology: Topology, adapter_queue: str) -> None:
    """A fresh schema and fresh exchanges/queues under the bench's own names."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(settings.database_schema)} CASCADE")
        await migrate(conn, settings.database_schema)
    finally:
        await conn.close()
    amqp = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await amqp.channel()
        await topology.delete(channel, [topology.queue("coordinator"), adapter_queue])
    finally:
        await amqp.close()


async def verify(settings: Settings, total: int) -> dict[str, int]:
    """Every saga completed, every outbox row confirmed; the row counts, for the record."""
    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.database_schema}
    )
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM saga WHERE status = 'completed') AS completed,"
            " (SELECT count(*) FROM saga) AS sagas,"
            " (SELECT count(*) FROM outbox WHERE sent_at IS NULL) AS unsent,"
            " (SELECT count(*) FROM outbox) AS outbox,"
            " (SELECT count(*) FROM saga_inbox) AS inbox,"
            " (SELECT count(*) FROM saga_history) AS history"
        )
    finally:
        await conn.close()
    counts = dict(row)
    if counts["completed"] != total or counts["sagas"] != total or counts["unsent"] != 0:
        raise RuntimeError(f"round did not finish cleanly: {counts}, expected {total} sagas")
    return counts


async def run_round(cfg: Config) -> dict[str, Any]:
    settings = Settings(
        amqp_url=AMQP_URL,
        database_url=ENGINE_PG_DSN,
        database_schema=cfg.schema,
        exchange_prefix=cfg.prefix,
        prefetch=cfg.prefetch,
        db_pool_size=cfg.pool_size,
    )
    topology = Topology(settings.exchange_prefix, settings.delivery_limit)
    stats = Stats()
    adapter = FakeAdapter(settings.amqp_url, topology, cfg.prefetch, stats.on_adapter)
    await reset(settings, topology, adapter.queue_name)

    total = cfg.warmup + cfg.sagas
    started: dict[str, float] = {}
    last_commit: dict[str, float] = {}
    in_flight = asyncio.Semaphore(cfg.concurrency)
    all_done = asyncio.get_running_loop().create_future()
    completed = 0
    t_measure_start = 0.0
    t_last = 0.0

    def on_transition(instance: SagaInstance, t: float) -> None:
        nonlocal completed, t_last
        order_id = instance.correlation_id
        previous = last_commit.get(order_id)
        if previous is not None:
            stats.step_lat.append(t - previous)
        if instance.status is not SagaStatus.COMPLETED:
            last_commit[order_id] = t
            return
        last_commit.pop(order_id, None)
        completed += 1
        if completed > cfg.warmup:
            stats.saga_lat.append(t - started.pop(order_id))
            t_last = t
        else:
            started.pop(order_id)
        in_flight.release()
        if completed == total and not all_done.done():
            all_done.set_result(None)

    service = CoordinatorService(settings, [order_to_cash.build()], REGISTRY)
    await service.start()
    assert service.store is not None
    tap_store(service.store, stats, on_transition)
    await adapter.start()

    driver_conn = await aio_pika.connect(settings.amqp_url)
    driver = await driver_conn.channel(publisher_confirms=True)
    events = await driver.get_exchange(topology.events, ensure=False)
    run_id = uuid.uuid4().hex[:8]

    async def place_order(i: int) -> None:
        order_id = f"order-{run_id}-{i}"
        out = encode(
            message_id=str(uuid.uuid4()),
            payload=order_placed(order_id),
            exchange=topology.events,
            source=DRIVER_SOURCE,
            time=datetime.now(UTC),
        )
        started[order_id] = now()
        await events.publish(
            aio_pika.Message(
                out.body,
                headers=dict(out.headers),
                content_type=out.content_type,
                message_id=out.message_id,
                type=out.message_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=out.routing_key,
        )

    profiler = cProfile.Profile() if cfg.cprofile else None
    try:
        rss_start = rss_mib()
        tasks = []
        cpu0 = 0.0
        for i in range(total):
            await in_flight.acquire()
            if i == cfg.warmup:
                # Measuring starts when the first measured saga is placed.
                t_measure_start = now()
                cpu0 = cpu_seconds()
                stats.reset_step_figures()
                if profiler is not None:
                    profiler.enable()
            tasks.append(asyncio.create_task(place_order(i)))
        await asyncio.gather(*tasks)
        await asyncio.wait_for(all_done, timeout=600)
        if profiler is not None:
            profiler.disable()
        wall = t_last - t_measure_start
        cpu = cpu_seconds() - cpu0
        rss_end = rss_mib()
    finally:
        await driver_conn.close()
        await adapter.stop()
        await service.stop(grace=30.0)

    if profiler is not None and cfg.cprofile:
        profiler.dump_stats(cfg.cprofile)
        log(f"cProfile of the measured part written to {cfg.cprofile}")
    counts = await verify(settings, total)

    return {
        "bench": "engine",
        "sagas": cfg.sagas,
        "warmup": cfg.warmup,
        "concurrency": cfg.concurrency,
        "steps": 3,
        "prefetch": cfg.prefetch,
        "pool_size": cfg.pool_size,
        "queue_type": "quorum",
        "loop": cfg.loop,
        "sagas_per_s": round(cfg.sagas / wall, 1),
        "step_transitions_per_s": round(cfg.sagas * 4 / wall, 1),
        "saga_latency": latency_ms(stats.saga_lat),
        "step_latency": latency_ms(stats.step_lat),
        "store_load_latency": latency_ms(stats.load_lat),
        "store_commit_latency": latency_ms(stats.commit_lat),
        "step_breakdown": step_breakdown(stats.marks),
        "not_committed": stats.not_committed,
        "adapter_handled": adapter.handled,
        "rows": counts,
        "proc_cpu_util": round(cpu / wall, 2),
        "rss_mib_start": round(rss_start, 1),
        "rss_mib_end": round(rss_end, 1),
        "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }


def summarize(rounds: list[dict[str, Any]]) -> str:
    def med(*path: str) -> float:
        values = []
        for r in rounds:
            value: Any = r
            for key in path:
                value = value[key]
            values.append(value)
        return float(statistics.median(values))

    return (
        f"engine: {med('sagas_per_s'):.0f} sagas/s (rounds {[r['sagas_per_s'] for r in rounds]})"
        f" | saga p50 {med('saga_latency', 'p50_ms'):.1f} ms"
        f" p99 {med('saga_latency', 'p99_ms'):.1f} ms"
        f" | step p50 {med('step_latency', 'p50_ms'):.2f} ms"
        f" p99 {med('step_latency', 'p99_ms'):.2f} ms"
        f" | cpu {med('proc_cpu_util'):.2f} | rss {med('rss_mib_end'):.0f} MiB"
    )


async def main(args: argparse.Namespace) -> None:
    cfg = Config(
        sagas=args.sagas,
        warmup=args.warmup,
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        pool_size=args.pool_size,
        schema=args.schema,
        prefix=args.prefix,
        loop=args.loop,
        cprofile=args.cprofile,
    )
    rounds = []
    for number in range(args.rounds):
        result = await run_round(cfg)
        result["run"] = number
        print(json.dumps(result, sort_keys=True), flush=True)
        rounds.append(result)
    log(f"\n== medians over {args.rounds} rounds: C={cfg.concurrency} N={cfg.sagas} ==")
    log(summarize(rounds))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sagas", type=int, default=1000, help="measured sagas per round")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured sagas first")
    parser.add_argument("--concurrency", type=int, default=100, help="sagas in flight")
    parser.add_argument("--prefetch", type=int, default=100, help="as the yardstick's")
    parser.add_argument("--pool-size", type=int, default=16, help="as the yardstick's")
    parser.add_argument("--schema", default="bench_engine")
    parser.add_argument("--prefix", default="bench.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--cprofile", help="write a cProfile of the measured part here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if arguments.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main(arguments))
