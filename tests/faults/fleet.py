"""The system under fault as separate processes, the orders put through it, and the count.

``Fleet`` runs coordinators (``python -m bus_orchestrator run``) and the ledger adapters
(``python -m tests.faults.ledger_adapters``) as a user would, and kills them with SIGKILL.
``Workload`` places the example domain's orders. ``count`` fills in a summary row from what
the database and the broker hold afterwards: the sagas and their statuses, the commands
sent and processed, the ledger's side effects, and what reached ``bus.dead``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import asyncpg

from bus_orchestrator.config import Settings
from bus_orchestrator.core.state import SagaStatus
from tests.conftest import TestBus
from tests.e2e.processes import consumers, env_for
from tests.faults.ledger import duplicated_side_effects
from tests.faults.summary import Row, percentile
from tests.integration.harness import EXAMPLE_APP, SCENARIOS, order, publish

ROOT = Path(__file__).resolve().parents[2]
COORDINATOR = (sys.executable, "-m", "bus_orchestrator", "run")
ADAPTERS = (sys.executable, "-m", "tests.faults.ledger_adapters")
FINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED})

FAULT_ENV = {
    # A step deadline is a business rule: one passing during a fault would rightly
    # compensate its saga. Kept far beyond the faults, so each outcome is known in advance.
    "BUS_STEP_TIMEOUT_SECONDS": "600",
    # A relay killed between commit and publish leaves rows another relay takes once
    # their lease runs out: short, so the test does not wait on it.
    "BUS_OUTBOX_LEASE_SECONDS": "2",
    "BUS_OUTBOX_SWEEP_SECONDS": "0.2",
    "BUS_DB_COMMAND_TIMEOUT_SECONDS": "5",
    "BUS_DB_CONNECT_TIMEOUT_SECONDS": "3",
}


# -- processes -----------------------------------------------------------------------------


class Fleet:
    """The processes of one test, by name; whatever is left running is killed at the end."""

    def __init__(self, settings: Settings, log_dir: Path, **env: str) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.env = env_for(settings, **{**FAULT_ENV, **env})
        self.running: dict[str, asyncio.subprocess.Process] = {}
        self._commands: dict[str, Sequence[str]] = {}
        self._logs: list[Path] = []
        self.kills = 0

    async def start(self, name: str, command: Sequence[str] | None = None) -> None:
        """Start ``name`` (its command is remembered, for a restart by name)."""
        if command is not None:
            self._commands[name] = command
        log = self.log_dir / f"{name}-{len(self._logs)}.log"
        self._logs.append(log)
        with log.open("wb") as stderr:
            self.running[name] = await asyncio.create_subprocess_exec(
                *self._commands[name],
                cwd=ROOT,
                env=self.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )

    async def kill(self, name: str) -> None:
        """kill -9, and wait for the process to be gone."""
        process = self.running.pop(name)
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
        self.kills += 1

    async def stop_all(self, grace: float = 20.0) -> None:
        """SIGTERM to each, then SIGKILL to those still running after ``grace``."""
        processes = list(self.running.values())
        self.running.clear()
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                process.kill()
                await process.wait()

    def tail(self, lines: int = 20) -> str:
        """The last log lines of each process, for a failure message."""
        return "\n".join(
            f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in self._logs
            if log.exists()
        )


async def wait_for_consumer(
    connection: aio_pika.abc.AbstractConnection, queue: str, count: int = 1, within: float = 60
) -> None:
    """Until ``queue`` has at least ``count`` consumers."""
    deadline = time.monotonic() + within
    while (seen := await consumers(connection, queue)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{queue} has {seen} consumers, expected {count}")
        await asyncio.sleep(0.1)


def work_queues(bus: TestBus) -> dict[str, str]:
    """The example app's work queues (the coordinator runs ``BUS_APP``, the ledger adapters
    take its name), by their name within the app."""
    return {
        "coordinator": bus.topology.coordinator_queue(EXAMPLE_APP),
        **{
            f"adapter.{name}": bus.topology.adapter_queue(EXAMPLE_APP, name)
            for name in ("inventory", "payments", "shipping")
        },
    }


async def wait_until_consuming(bus: TestBus, coordinators: int = 1) -> None:
    """Until the coordinators and the three adapters consume their queues."""
    for name, queue in work_queues(bus).items():
        await wait_for_consumer(bus.connection, queue, coordinators if name == "coordinator" else 1)


# -- orders --------------------------------------------------------------------------------


@dataclass
class Workload:
    """Orders of the example domain's mixed outcomes, and when each was placed."""

    prefix: str
    count: int
    scenarios: Sequence[str] = tuple(SCENARIOS)
    published_at: dict[str, float] = field(default_factory=dict)

    @property
    def plan(self) -> dict[str, str]:
        return {
            f"{self.prefix}-{n:03d}": self.scenarios[n % len(self.scenarios)]
            for n in range(self.count)
        }

    def expected(self) -> dict[str, SagaStatus]:
        return {oid: SCENARIOS[s][1] for oid, s in self.plan.items()}

    def batches(self, size: int) -> list[list[str]]:
        ids = list(self.plan)
        return [ids[i : i + size] for i in range(0, len(ids), size)]

    async def place(self, bus: TestBus, order_ids: Iterable[str], *, retry: float = 0) -> None:
        """Publish the orders' events. A publish the broker refuses (a nack: a quorum queue
        with no leader) is repeated, with the same event id, for up to ``retry`` seconds,
        as a careful publisher does."""
        channel = await bus.channel()
        try:
            for oid in order_ids:
                event = order(oid, **SCENARIOS[self.plan[oid]][0])
                self.published_at[oid] = time.time()
                message_id = str(uuid.uuid4())
                deadline = time.monotonic() + retry
                while True:
                    try:
                        await publish(
                            channel,
                            bus.topology.events,
                            event,
                            message_id=message_id,
                            correlation_id=oid,
                        )
                        break
                    except aiormq.exceptions.DeliveryError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)
                        # RabbitMQ 3.10 keeps nacking on a channel that published to a
                        # quorum queue whose leader died: a new channel gets through
                        await channel.close()
                        channel = await bus.channel()
        finally:
            await channel.close()


# -- counting ------------------------------------------------------------------------------


async def connect_db(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.database_schema}
    )


async def sagas(settings: Settings, order_ids: Iterable[str]) -> dict[str, tuple[str, float]]:
    """``correlation id -> (status, updated_at as a Unix time)`` of those sagas that exist."""
    conn = await connect_db(settings)
    try:
        rows = await conn.fetch(
            "SELECT correlation_id, status, extract(epoch FROM updated_at) AS at"
            " FROM saga WHERE correlation_id = ANY($1::text[])",
            list(order_ids),
        )
    finally:
        await conn.close()
    return {r["correlation_id"]: (r["status"], float(r["at"])) for r in rows}


async def settle(
    settings: Settings, order_ids: Sequence[str], within: float
) -> dict[str, tuple[str, float]]:
    """Poll until every saga is final, or ``within`` seconds; what was seen either way.

    Survives an outage of Postgres while it polls (a fault test may still be mending it).
    """
    deadline = time.monotonic() + within
    seen: dict[str, tuple[str, float]] = {}
    while True:
        try:
            seen = await sagas(settings, order_ids)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass
        if len(seen) == len(order_ids) and all(s in FINAL for s, _ in seen.values()):
            return seen
        if time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.2)


LOST_COMMANDS_SQL = """
SELECT count(DISTINCT o.message_id) AS n FROM outbox o
WHERE o.exchange = $1
  AND NOT EXISTS (SELECT 1 FROM adapter_command a WHERE a.command_id = o.message_id)
"""
"""Commands the coordinator sent (its outbox) that no adapter processed (their log)."""


async def lost_commands(settings: Settings, commands_exchange: str) -> int:
    conn = await connect_db(settings)
    try:
        return int(await conn.fetchval(LOST_COMMANDS_SQL, commands_exchange))
    finally:
        await conn.close()


async def ledger_rows(settings: Settings) -> int:
    """How many side effects (and refusals) the fake systems have recorded so far."""
    conn = await connect_db(settings)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM fake_ledger"))
    finally:
        await conn.close()


async def duplicated(settings: Settings) -> tuple[int, int]:
    conn = await connect_db(settings)
    try:
        return await duplicated_side_effects(conn)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str | None
    routing_key: str
    reason: str | None
    """``x-dead-reason`` (the engine's), else ``x-first-death-reason`` (the broker's)."""
    detail: str = ""
    by_engine: bool = False
    """Dead-lettered by the engine (``x-dead-reason``), not by the broker's delivery limit."""


async def durable_tap(bus: TestBus, exchange: str, suffix: str) -> str:
    """A durable queue of this test's own on a fanout exchange: it keeps what reaches it
    across broker and process restarts, for ``drain``."""
    name = f"{bus.topology.prefix}tap.{suffix}"
    channel = await bus.channel()
    queue = await channel.declare_queue(name, durable=True)
    await queue.bind(exchange, routing_key="")
    bus.queues.append(name)
    await channel.close()
    return name


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def drain(amqp_url: str, queue_name: str) -> list[DeadLetter]:
    """Take every message of the queue. One the client cannot even receive (its headers
    over the frame limit: the broker closes the connection) counts as a dead letter with
    no reason, as does each message left behind it."""
    found: list[DeadLetter] = []
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            headers: Mapping[str, Any] = message.headers or {}
            reason = _text(headers.get("x-dead-reason") or headers.get("x-first-death-reason"))
            detail = (_text(headers.get("x-dead-detail")) or "")[:160]
            found.append(
                DeadLetter(
                    message.message_id,
                    message.routing_key or "",
                    reason,
                    detail,
                    by_engine="x-dead-reason" in headers,
                )
            )
    except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
        left = await _message_count(amqp_url, queue_name)
        found.extend(DeadLetter(None, f"unreadable: {exc!r}"[:80], None) for _ in range(left))
    finally:
        if not connection.is_closed:
            await connection.close()
    return found


async def _message_count(amqp_url: str, queue_name: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        count = queue.declaration_result.message_count or 0
        await queue.purge()
        return count
    finally:
        await connection.close()


@dataclass
class Count:
    """What a run left behind, as the summary row counts it."""

    statuses: dict[str, str]
    as_expected: set[str]
    lost_commands: int
    not_final: list[str]
    repeated: int
    after_compensation: int
    dead: list[DeadLetter]
    latencies: list[float]

    def fill(self, row: Row, sagas: int) -> None:
        row.sagas = sagas
        row.as_expected = len(self.as_expected)
        row.lost = self.lost_commands + len(self.not_final)
        row.duplicated = self.repeated + self.after_compensation
        row.dead_with_reason = sum(1 for d in self.dead if d.reason)
        row.dead_without_reason = sum(1 for d in self.dead if not d.reason)
        row.p50 = percentile(self.latencies, 0.50)
        row.p95 = percentile(self.latencies, 0.95)

    def report(self) -> str:
        return (
            f"not final: {self.not_final[:10]} ({len(self.not_final)}); "
            f"lost commands: {self.lost_commands}; repeated effects: {self.repeated}; "
            f"effects after compensation: {self.after_compensation}; dead: {self.dead[:10]}"
        )


async def count(
    settings: Settings,
    bus: TestBus,
    workload: Workload,
    dead_tap: str,
    *,
    within: float,
    as_expected: Callable[[str, str], bool] | None = None,
) -> Count:
    """Wait up to ``within`` seconds for the workload's sagas to end, then count.

    ``as_expected(order id, status)`` says whether a saga ended as it should; by default,
    with the status its scenario expects.
    """
    expected = workload.expected()
    judge = as_expected or (lambda oid, status: status == expected[oid])
    seen = await settle(settings, list(workload.plan), within)
    statuses = {oid: status for oid, (status, _) in seen.items()}
    latencies = [
        at - workload.published_at[oid]
        for oid, (status, at) in seen.items()
        if status in FINAL and oid in workload.published_at
    ]
    repeated, after = await duplicated(settings)
    return Count(
        statuses=statuses,
        as_expected={oid for oid, status in statuses.items() if judge(oid, status)},
        lost_commands=await lost_commands(settings, bus.topology.commands),
        not_final=sorted(oid for oid in workload.plan if statuses.get(oid) not in FINAL),
        repeated=repeated,
        after_compensation=after,
        dead=await drain(settings.amqp_url, dead_tap),
        latencies=latencies,
    )
