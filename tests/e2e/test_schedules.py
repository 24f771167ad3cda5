"""Schedules as a user runs them: ``bus-orchestrator run`` processes of an app with a
per-second schedule. Two coordinators fire each slot once, and one killed with SIGKILL
midway changes nothing but who fires; a coordinator started after a missed slot catches
it up once, or skips it, as each schedule says. ``GET /schedules`` and ``schedules list``
show what fired."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import httpx
import pytest

from bus_orchestrator.cli_schedules import TSV_COLUMNS
from bus_orchestrator.config import Settings
from bus_orchestrator.core.schedule import slot_event_id
from bus_orchestrator.ports import OutboxMessage
from bus_orchestrator.store.postgres import create_pool
from bus_orchestrator.store.schedules import PostgresScheduleStore
from tests.conftest import TestBus
from tests.e2e.processes import Processes, cli, free_port
from tests.e2e.schedule_app import NAME, Ticked
from tests.e2e.test_cli_errors import LIST, MISTAKES, Mistake
from tests.e2e.test_cli_errors import busy_port as busy_port  # a fixture
from tests.e2e.test_cli_errors import (
    test_each_mistake_is_one_line_naming_the_setting_and_the_fix as one_line_for,
)
from tests.integration.harness import sql

pytestmark = pytest.mark.e2e

APP = {
    "BUS_APP": "tests.e2e.schedule_app:create_app",
    "BUS_OUTBOX_LEASE_SECONDS": "2",
    "BUS_OUTBOX_SWEEP_SECONDS": "0.2",
}
TOKEN = "schedules-e2e-reader"


async def wait_for_lines(processes: Processes, text: str, count: int) -> None:
    for _ in range(300):
        if sum(text in line for line in processes.log_lines()) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} x {text!r} never logged: {processes.log_lines()}")


async def drain_all(queue: aio_pika.abc.AbstractQueue, quiet: float = 1.5) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    last = loop.time()
    while loop.time() - last < quiet:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        last = loop.time()
        data = json.loads(message.body)
        got.append({"id": message.message_id, "schedule": data["schedule"], "slot": data["slot"]})
    return got


def fired_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "fired slot" in line]


async def test_two_coordinator_processes_fire_each_slot_once_one_killed_midway(
    settings: Settings, schema: str, bus: TestBus, processes: Processes
) -> None:
    tap = await bus.tap(bus.topology.events, Ticked.message_type)
    port = free_port()
    await processes.start(
        settings, "api", BUS_API_PORT=str(port), BUS_API_TOKENS=f"{TOKEN}=reader", **APP
    )
    doomed = await processes.start(settings, "run", **APP)
    survivor = await processes.start(settings, "run", **APP)
    await wait_for_lines(processes, "schedules running", 2)
    begin = datetime.now(UTC)
    await asyncio.sleep(8)
    doomed.send_signal(signal.SIGKILL)
    await doomed.wait()
    killed = datetime.now(UTC)
    await asyncio.sleep(9)  # past the outbox lease: rows the killed one left are swept up
    end = datetime.now(UTC)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        listed = await http.get("/schedules", headers={"Authorization": f"Bearer {TOKEN}"})
    code, out, err = await cli(settings, "schedules", "list", "--output", "json", **APP)
    queried = datetime.now(UTC)
    assert await processes.stop(survivor) == 0
    received = await drain_all(tap)

    first = begin.replace(microsecond=0) + timedelta(seconds=1)
    window = [first + timedelta(seconds=n) for n in range(int((end - first).total_seconds()))]
    assert len(window) >= 15
    rows = await sql(settings, "SELECT schedule, slot, event_id FROM schedule_firing")
    for name in ("caught", "skipped"):
        slots = sorted(r["slot"] for r in rows if r["schedule"] == name)
        assert len(slots) == len(set(slots)), name
        assert [s for s in slots if first <= s <= window[-1]] == window, name
    # one outbox row per firing, each sent (those of the killed process too)
    outbox = await sql(settings, "SELECT message_id, sent_at FROM outbox")
    assert sorted(r["message_id"] for r in outbox) == sorted(r["event_id"] for r in rows)
    assert all(r["sent_at"] is not None for r in outbox)
    # every firing reached the broker, under its derived id; a second publish of one (the
    # killed process may have died between the broker's confirm and marking its row sent)
    # is the same message
    by_slot: dict[tuple[str, datetime], set[str]] = {}
    for message in received:
        key = (message["schedule"], datetime.fromisoformat(message["slot"]))
        by_slot.setdefault(key, set()).add(message["id"])
    assert by_slot == {
        (r["schedule"], r["slot"]): {slot_event_id(NAME, r["schedule"], r["slot"])} for r in rows
    }
    assert len(received) - len(rows) <= 2, "at most the killed process's last rows twice"

    # both took part before the kill; the survivor fired alone after it
    doomed_log, survivor_log = (processes.logs[i].read_text() for i in (1, 2))
    assert fired_lines(doomed_log) and fired_lines(survivor_log)
    after_kill = [r for r in rows if r["slot"] > killed + timedelta(seconds=1)]
    assert len(after_kill) >= 12
    assert all(
        f"fired slot {r['slot'].astimezone(UTC).isoformat()}" not in doomed_log
        for r in after_kill
        if r["schedule"] == "caught"
    )

    # GET /schedules and `schedules list` show the last firing
    assert listed.status_code == 200, listed.text
    assert code == 0, err
    for shown in (listed.json()["items"], json.loads(out)):
        assert [s["name"] for s in shown] == ["caught", "skipped"]
        for view in shown:
            last = datetime.fromisoformat(view["last_firing"]["slot"])
            assert window[-1] - timedelta(seconds=2) <= last <= queried
            assert view["publishes"] == Ticked.message_type
            assert view["last_firing"]["event_id"] == slot_event_id(NAME, view["name"], last)


async def test_a_coordinator_started_after_missed_slots_catches_up_one_or_none(
    settings: Settings, schema: str, processes: Processes
) -> None:
    every_two = {**APP, "TEST_SCHEDULE_CRON": "*/2 * * * * *"}

    async def fired(name: str) -> list[Any]:
        found = await sql(
            settings,
            "SELECT slot, fired_at FROM schedule_firing WHERE schedule = $1 ORDER BY slot",
            name,
        )
        return [(r["slot"], r["fired_at"]) for r in found]

    async def until_fired(after: datetime | None) -> None:
        for _ in range(150):
            newer = [
                [s for s, _ in await fired(name) if after is None or s > after]
                for name in ("caught", "skipped")
            ]
            if all(newer):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"nothing fired: {processes.log_lines()}")

    first_run = await processes.start(settings, "run", **every_two)
    await until_fired(None)
    assert await processes.stop(first_run) == 0
    last = max(slot for slot, _ in await fired("caught") + await fired("skipped"))
    await asyncio.sleep(5)  # down: at least two slots pass
    second_run = await processes.start(settings, "run", **every_two)
    await until_fired(last)
    assert await processes.stop(second_run) == 0

    caught = [(s, at) for s, at in await fired("caught") if s > last]
    skipped = [s for s, _ in await fired("skipped") if s > last]
    resumed = skipped[0]  # the first slot after the second start-up
    # the catch-up schedule fired the newest missed slot, once, at start-up; none before it
    catch_up, fired_at = caught[0]
    assert catch_up == resumed - timedelta(seconds=2)
    assert catch_up - last >= timedelta(seconds=4), "at least one older missed slot skipped"
    assert fired_at > catch_up
    assert [s for s, _ in caught[1:]][:1] == [resumed]
    assert "(caught up)" in processes.logs[1].read_text()
    assert "(caught up)" not in processes.logs[0].read_text()


async def test_schedules_list_prints_a_table_for_people_and_tsv_for_scripts(
    settings: Settings, schema: str
) -> None:
    pool = await create_pool(settings.model_copy(update={"db_pool_size": 1}))
    try:
        slot = datetime(2026, 1, 1, 12, tzinfo=UTC)
        message = OutboxMessage(
            slot_event_id(NAME, "caught", slot),
            Ticked.message_type,
            "bus.events",
            Ticked.message_type,
            b"{}",
            "application/json",
        )
        store = PostgresScheduleStore(pool, timedelta(seconds=10))
        assert await store.fire(NAME, "caught", slot, None, message, slot) is not None
    finally:
        await pool.close()

    code, table, err = await cli(settings, "schedules", "list", COLUMNS="80", **APP)
    assert code == 0, err
    header, caught, skipped = table.splitlines()
    assert header.split() == ["NAME", "CRON", "ZONE", "CATCH-UP", "NEXT", "LAST", "EVENT"]
    assert all(len(line) <= 80 for line in (header, caught, skipped))
    assert caught.startswith("caught") and " yes " in caught and "2026-01-01 12:00:00Z" in caught
    assert skipped.startswith("skipped") and " no " in skipped and skipped.split()[-2] == "-"

    code, tsv, err = await cli(settings, "schedules", "list", "--output", "tsv", **APP)
    assert code == 0, err
    rows = [line.split("\t") for line in tsv.splitlines()]
    assert rows[0] == list(TSV_COLUMNS)
    assert [dict(zip(rows[0], row, strict=True)) for row in rows[1:]] == [
        {
            "name": "caught",
            "cron": "* * * * * *",
            "timezone": "UTC",
            "catch_up": "true",
            "publishes": Ticked.message_type,
            "next_firing": rows[1][5],
            "last_slot": "2026-01-01T12:00:00+00:00",
            "last_fired_at": "2026-01-01T12:00:00+00:00",
            "last_event_id": message.message_id,
        },
        {
            "name": "skipped",
            "cron": "* * * * * *",
            "timezone": "Europe/Berlin",
            "catch_up": "false",
            "publishes": Ticked.message_type,
            "next_firing": rows[2][5],
            "last_slot": "",
            "last_fired_at": "",
            "last_event_id": "",
        },
    ]
    assert datetime.fromisoformat(rows[1][5]) > datetime.now(UTC) - timedelta(seconds=5)


@pytest.mark.parametrize(
    "mistake", [m for m in MISTAKES if LIST in m.commands], ids=lambda m: m.name
)
async def test_schedules_list_answers_each_mistake_as_sagas_list_does(
    settings: Settings,
    db_schema: str,
    bus: TestBus,
    busy_port: int,
    unique_name: str,
    mistake: Mistake,
) -> None:
    await one_line_for(
        settings, db_schema, bus, busy_port, unique_name, mistake, ("schedules", "list")
    )
