"""Schedules: the slot arithmetic (time zones, DST) and the runner's rules (one firing per
slot, catch-up of a missed slot at start-up), with a clock the test moves by hand and the
in-memory store."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from bus_orchestrator.app import App
from bus_orchestrator.core.messages import Event
from bus_orchestrator.core.schedule import Schedule, plan_start, plan_tick, slot_event_id
from bus_orchestrator.errors import DefinitionError, StoreUnavailableError
from bus_orchestrator.ports import PendingPublish
from bus_orchestrator.runtime.schedules import ScheduleRunner
from bus_orchestrator.store.memory_schedules import InMemoryScheduleStore
from bus_orchestrator.testing.clock import ManualClock


class ReportDue(Event):
    message_type: ClassVar[str] = "tests.report_due.v1"
    slot: str


def report(slot: datetime) -> ReportDue:
    return ReportDue(slot=slot.isoformat())


def schedule(cron: str, *, timezone: str = "UTC", catch_up: bool = False, name: str = "report"):
    return Schedule(name, cron, ReportDue, report, timezone=timezone, catch_up=catch_up)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- the slot arithmetic --------------------------------------------------------------


def slots(s: Schedule[Any], start: datetime, count: int) -> list[datetime]:
    found = []
    for _ in range(count):
        start = s.next_after(start)
        found.append(start)
    return found


def test_a_six_field_expression_has_seconds_first() -> None:
    s = schedule("*/20 * * * * *")
    assert slots(s, utc(2026, 1, 1, 0, 0, 5), 3) == [
        utc(2026, 1, 1, 0, 0, 20),
        utc(2026, 1, 1, 0, 0, 40),
        utc(2026, 1, 1, 0, 1, 0),
    ]


def test_next_is_strictly_after_and_latest_is_at_or_before() -> None:
    s = schedule("* * * * * *")
    t = utc(2026, 1, 1, 12, 0, 5)
    assert s.next_after(t) == t + timedelta(seconds=1)
    assert s.latest_at(t) == t
    assert s.latest_at(t + timedelta(milliseconds=999)) == t
    assert s.latest_at(t - timedelta(microseconds=1)) == t - timedelta(seconds=1)


def test_the_expression_is_read_in_its_time_zone() -> None:
    s = schedule("0 9 * * *", timezone="America/New_York")
    assert s.next_after(utc(2026, 1, 5)) == utc(2026, 1, 5, 14)  # 09:00 EST
    assert s.next_after(utc(2026, 7, 5)) == utc(2026, 7, 5, 13)  # 09:00 EDT


def test_a_time_skipped_by_spring_forward_fires_once_right_after_the_gap() -> None:
    # Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    s = schedule("30 2 * * *", timezone="Europe/Berlin")
    found = slots(s, utc(2026, 3, 28, 12), 3)
    assert found == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    assert [s.local(t).strftime("%d %H:%M") for t in found] == ["29 03:00", "30 02:30", "31 02:30"]
    # and looking back from later that day, 03:00 is the newest slot
    assert s.latest_at(utc(2026, 3, 29, 9)) == utc(2026, 3, 29, 1)


def test_a_time_repeated_by_fall_back_fires_once() -> None:
    # Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    s = schedule("30 2 * * *", timezone="Europe/Berlin")
    assert slots(s, utc(2026, 10, 24, 12), 2) == [
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    # the second 02:30 (01:30 UTC) is not a slot: the newest slot then is the first one
    assert s.latest_at(utc(2026, 10, 25, 1, 45)) == utc(2026, 10, 25, 0, 30)


def test_hourly_slots_stay_an_hour_apart_across_dst() -> None:
    s = schedule("0 * * * *", timezone="Europe/Berlin")
    found = slots(s, utc(2026, 10, 24, 23, 30), 5)
    assert [b - a for a, b in itertools.pairwise(found)] == [timedelta(hours=1)] * 4


@pytest.mark.parametrize(
    ("cron", "timezone", "reason"),
    [
        ("* * *", "UTC", "is not valid"),
        ("61 * * * *", "UTC", "is not valid"),
        ("0 0 31 2 *", "UTC", "is not valid"),
        ("* * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_a_bad_declaration_is_one_line(cron: str, timezone: str, reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason) as raised:
        schedule(cron, timezone=timezone)
    assert "\n" not in str(raised.value)


def test_names_are_checked_and_unique_in_the_app() -> None:
    with pytest.raises(DefinitionError, match="schedule name 'Report!'"):
        schedule("* * * * *", name="Report!")
    with pytest.raises(DefinitionError, match="schedule names must be unique"):
        App("sched", schedules=[schedule("* * * * *"), schedule("0 * * * *")])


def test_the_app_registers_what_its_schedules_publish() -> None:
    app = App("sched", schedules=[schedule("* * * * *")])
    contract = app.registry.get("tests.report_due.v1")
    assert contract is not None and contract.model is ReportDue


def test_an_event_of_another_type_than_declared_is_refused() -> None:
    class Other(Event):
        message_type: ClassVar[str] = "tests.other.v1"

    s = Schedule("odd", "* * * * *", ReportDue, lambda slot: Other())  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="built a Other, not the ReportDue it declares"):
        s.build(utc(2026, 1, 1))


def test_the_event_id_is_derived_from_app_schedule_and_slot() -> None:
    slot = utc(2026, 1, 1, 2)
    same = slot_event_id("a", "report", slot)
    assert same == slot_event_id("a", "report", slot.astimezone(schedule("* * * * *").zone))
    assert len({same, slot_event_id("b", "report", slot), slot_event_id("a", "other", slot)}) == 3
    assert same != slot_event_id("a", "report", slot + timedelta(seconds=1))


# -- the plans --------------------------------------------------------------------------


def test_start_up_without_a_missed_slot_fires_nothing() -> None:
    s = schedule("0 * * * *", catch_up=True)
    plan = plan_start(s, utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 30))
    assert (plan.fire, plan.after, plan.missed) == (None, utc(2026, 1, 1, 10, 30), False)


def test_start_up_catches_up_the_most_recent_missed_slot_once() -> None:
    s = schedule("0 * * * *", catch_up=True)
    # fired 10:00, down until 13:30: 11:00, 12:00 and 13:00 were missed
    plan = plan_start(s, utc(2026, 1, 1, 10), utc(2026, 1, 1, 13, 30))
    assert (plan.fire, plan.missed) == (utc(2026, 1, 1, 13), True)
    assert plan.after == utc(2026, 1, 1, 13, 30)


def test_start_up_without_catch_up_skips_missed_slots() -> None:
    s = schedule("0 * * * *")
    plan = plan_start(s, utc(2026, 1, 1, 10), utc(2026, 1, 1, 13, 30))
    assert (plan.fire, plan.missed, plan.after) == (None, True, utc(2026, 1, 1, 13, 30))


def test_a_tick_fires_the_due_slot_late_or_not() -> None:
    s = schedule("0 * * * *")
    plan = plan_tick(s, utc(2026, 1, 1, 10, 30), utc(2026, 1, 1, 11, 0, 0, 400))
    assert (plan.fire, plan.after, plan.missed) == (utc(2026, 1, 1, 11), utc(2026, 1, 1, 11), False)
    assert plan_tick(s, utc(2026, 1, 1, 11), utc(2026, 1, 1, 11, 59)).fire is None


def test_a_tick_held_up_past_a_period_fires_only_the_newest_slot() -> None:
    s = schedule("0 * * * *")
    plan = plan_tick(s, utc(2026, 1, 1, 10, 30), utc(2026, 1, 1, 13, 5))
    assert (plan.fire, plan.missed) == (utc(2026, 1, 1, 13), True)


# -- the runner, on a clock moved by hand ------------------------------------------------


class Submitted:
    """The relay's side: rows handed over for publishing."""

    def __init__(self) -> None:
        self.rows: list[PendingPublish] = []

    def submit(self, rows: Sequence[PendingPublish]) -> None:
        self.rows += rows


def runner(
    store: InMemoryScheduleStore, clock: ManualClock, *schedules: Schedule[Any]
) -> tuple[ScheduleRunner, Submitted]:
    relay = Submitted()
    return (
        ScheduleRunner(
            "app", schedules, store, relay, clock, exchange="bus.events", source="urn:test"
        ),
        relay,
    )


async def run_until(runner_: ScheduleRunner, clock: ManualClock, end: datetime) -> None:
    """Advance the clock to each wake-up the runner asks for, ticking there, up to ``end``."""
    while (wake := runner_.next_wake()) is not None and wake <= end:
        clock.advance(wake - clock.now + timedelta(milliseconds=3))
        await runner_.tick()


async def test_each_slot_fires_once_with_its_event_in_the_outbox() -> None:
    clock = ManualClock(utc(2026, 1, 1, 12, 0, 0, 500))
    store = InMemoryScheduleStore(clock)
    first, relay = runner(store, clock, schedule("*/10 * * * * *"))
    assert await first.start_up() == []
    await run_until(first, clock, utc(2026, 1, 1, 12, 1))
    fired = sorted(store.firings)
    assert [slot for _, _, slot in fired] == [
        utc(2026, 1, 1, 12, 0, s) for s in (10, 20, 30, 40, 50)
    ] + [utc(2026, 1, 1, 12, 1)]
    assert [row.outbox_id for row in relay.rows] == [1, 2, 3, 4, 5, 6]
    message = relay.rows[0].message
    assert message.message_id == slot_event_id("app", "report", utc(2026, 1, 1, 12, 0, 10))
    assert (message.exchange, message.routing_key) == ("bus.events", "tests.report_due.v1")
    assert json.loads(message.body) == {"slot": "2026-01-01T12:00:10+00:00"}
    assert message.headers["ce-time"].startswith("2026-01-01T12:00:10")
    [state] = await store.schedule_states("app")
    assert (state.last_slot, state.next_slot) == (
        utc(2026, 1, 1, 12, 1),
        utc(2026, 1, 1, 12, 1, 10),
    )


async def test_two_runners_on_one_store_fire_each_slot_once() -> None:
    clock = ManualClock(utc(2026, 1, 1, 12, 0, 0, 500))
    store = InMemoryScheduleStore(clock)
    one, relay_one = runner(store, clock, schedule("* * * * * *"))
    two, relay_two = runner(store, clock, schedule("* * * * * *"))
    await one.start_up()
    await two.start_up()
    for _ in range(30):
        clock.advance(timedelta(seconds=1))
        await one.tick()
        await two.tick()
    assert len(store.firings) == 30
    assert len(relay_one.rows) == 30 and relay_two.rows == []  # one always came first
    ids = {row.message.message_id for row in relay_one.rows}
    assert len(ids) == 30


async def test_a_restart_after_downtime_catches_up_one_slot_or_none() -> None:
    clock = ManualClock(utc(2026, 1, 1, 9, 59, 30))
    store = InMemoryScheduleStore(clock)
    hourly = [schedule("0 * * * *", catch_up=True, name="caught"), schedule("0 * * * *")]
    before, _ = runner(store, clock, *hourly)
    await before.start_up()
    await run_until(before, clock, utc(2026, 1, 1, 10, 30))  # fires 10:00, then stops
    clock.advance(utc(2026, 1, 1, 13, 20) - clock.now)  # down: 11:00, 12:00 and 13:00 missed
    after, relay = runner(store, clock, *hourly)
    caught = await after.start_up()
    assert [(f.schedule, f.slot, f.caught_up) for f in caught] == [
        ("caught", utc(2026, 1, 1, 13), True)
    ]
    assert [r.message.message_id for r in relay.rows] == [
        slot_event_id("app", "caught", utc(2026, 1, 1, 13))
    ]
    await run_until(after, clock, utc(2026, 1, 1, 14, 30))
    fired = sorted((name, slot.hour) for _, name, slot in store.firings)
    assert fired == [("caught", 10), ("caught", 13), ("caught", 14), ("report", 10), ("report", 14)]


async def test_a_new_schedule_has_missed_nothing() -> None:
    clock = ManualClock(utc(2026, 1, 1, 13, 20))
    store = InMemoryScheduleStore(clock)
    first, _ = runner(store, clock, schedule("0 * * * *", catch_up=True))
    assert await first.start_up() == []
    assert first.next_wake() == utc(2026, 1, 1, 14)


async def test_a_schedule_known_but_never_fired_catches_up_since_it_became_known() -> None:
    clock = ManualClock(utc(2026, 1, 1, 10, 30))
    store = InMemoryScheduleStore(clock)
    first, _ = runner(store, clock, schedule("0 * * * *", catch_up=True))
    await first.start_up()  # known from 10:30, stopped before 11:00
    clock.advance(timedelta(hours=1))
    again, _ = runner(store, clock, schedule("0 * * * *", catch_up=True))
    assert [f.slot for f in await again.start_up()] == [utc(2026, 1, 1, 11)]


async def test_a_slot_older_than_the_last_fired_never_fires() -> None:
    clock = ManualClock(utc(2026, 1, 1, 12, 0, 0, 500))
    store = InMemoryScheduleStore(clock)
    ahead, _ = runner(store, clock, schedule("* * * * * *"))
    behind, relay = runner(store, clock, schedule("* * * * * *"))
    await ahead.start_up()
    await behind.start_up()
    clock.advance(timedelta(seconds=1))
    await behind.tick()  # fires 12:00:01 ...
    clock.advance(timedelta(seconds=1))
    await ahead.tick()  # ... which the other one skips as it fires 12:00:02
    assert sorted(slot.second for _, _, slot in store.firings) == [1, 2]
    assert len(relay.rows) == 1


async def test_an_event_that_fails_to_build_skips_its_slot() -> None:
    calls: list[datetime] = []

    def flaky(slot: datetime) -> ReportDue:
        calls.append(slot)
        if len(calls) == 1:
            raise ValueError("no report today")
        return report(slot)

    clock = ManualClock(utc(2026, 1, 1, 12, 0, 0, 500))
    store = InMemoryScheduleStore(clock)
    first, _relay = runner(store, clock, Schedule("flaky", "* * * * * *", ReportDue, flaky))
    await first.start_up()
    await run_until(first, clock, utc(2026, 1, 1, 12, 0, 3))
    assert [slot.second for _, _, slot in sorted(store.firings)] == [2, 3]
    assert len(calls) == 3


class FlakyStore(InMemoryScheduleStore):
    """The in-memory store, unreachable while ``down``."""

    down = False

    async def fire(self, *args: Any, **kwargs: Any) -> PendingPublish | None:
        if self.down:
            raise StoreUnavailableError("Postgres is away")
        return await super().fire(*args, **kwargs)


async def test_a_slot_whose_claim_failed_fires_when_the_store_is_back() -> None:
    clock = ManualClock(utc(2026, 1, 1, 9, 30))
    store = FlakyStore(clock)
    hourly, _ = runner(store, clock, schedule("0 * * * *"), schedule("30 * * * *", name="half"))
    await hourly.start_up()
    store.down = True
    clock.advance(timedelta(minutes=30, seconds=1))
    assert await hourly.tick() == []
    store.down = False
    clock.advance(timedelta(seconds=20))
    assert [(f.schedule, f.slot) for f in await hourly.tick()] == [("report", utc(2026, 1, 1, 10))]
    # down across a whole period: the newest slot fires when it is back, the older is skipped
    store.down = True
    clock.advance(utc(2026, 1, 1, 10, 30, 2) - clock.now)
    assert await hourly.tick() == []
    clock.advance(timedelta(hours=1))
    assert await hourly.tick() == []
    store.down = False
    clock.advance(timedelta(minutes=1))
    fired = [(f.schedule, f.slot) for f in await hourly.tick()]
    assert fired == [("report", utc(2026, 1, 1, 11)), ("half", utc(2026, 1, 1, 11, 30))]
    assert utc(2026, 1, 1, 10, 30) not in {slot for _, _, slot in store.firings}
