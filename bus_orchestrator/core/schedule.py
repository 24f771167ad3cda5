"""Schedules: events an app publishes by the clock (cron expressions in a time zone).

A ``Schedule`` names a cron expression, its time zone, and the event it publishes at each
of its *slots* (the instants the expression matches). Starting a saga by the clock is
publishing its start event::

    Schedule(
        "nightly-reconciliation",
        "0 2 * * *",                        # 02:00 every day,
        timezone="Europe/Berlin",           # Berlin time
        publishes=ReconciliationDue,
        event=lambda slot: ReconciliationDue(day=slot.date().isoformat()),
    )

Expressions have five fields (minute, hour, day of month, month, day of week) or six, the
first being the second (``*/5 * * * * *``: every five seconds). They are evaluated by
``cronsim``, which follows Debian's cron: a five-field expression at a fixed time of day
whose time a DST change skips fires once at the first instant after the gap (``30 2 * * *``
at 03:00 on the spring-forward day), and once, not twice, when the hour repeats. A six-field
expression matches wall-clock times as they occur, with no such adjustment.

Everything here is pure: slot arithmetic takes the current time as an argument.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from bus_orchestrator.core.messages import Event, MessageKind
from bus_orchestrator.core.state import ID_NAMESPACE
from bus_orchestrator.errors import DefinitionError

SCHEDULE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_PROBE = datetime(2000, 1, 1, tzinfo=UTC)

E = TypeVar("E", bound=Event)


@dataclass(frozen=True, eq=False)
class Schedule(Generic[E]):
    """Publish ``event(slot)`` at every slot of ``cron`` in ``timezone``.

    Each slot fires once, however many coordinators of the app run. A slot that passes
    while none runs is *missed*: with ``catch_up`` the coordinator that starts next fires
    the most recent missed slot, once (not once per missed slot); without, missed slots are
    skipped and the schedule goes on with the next one.
    """

    name: str
    """Lower-case letters, digits, '-' and '_'; unique in the app, stable across deploys
    (the record of which slots fired is kept under it)."""
    cron: str
    publishes: type[E]
    """The event type published (shown by ``GET /schedules``, part of the app's contracts)."""
    event: Callable[[datetime], E]
    """Builds the event of a slot, given the slot's time (aware, in ``timezone``)."""
    timezone: str = "UTC"
    """An IANA time zone name (``Europe/Berlin``), in which the expression is read."""
    catch_up: bool = False
    zone: ZoneInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not SCHEDULE_NAME.match(self.name):
            raise DefinitionError(
                f"schedule name {self.name!r} must be lower-case letters, digits, '-' or '_', "
                "starting with a letter (at most 63)"
            )
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise DefinitionError(
                f"schedule {self.name!r}: unknown time zone {self.timezone!r} "
                "(use an IANA name such as 'Europe/Berlin' or 'UTC')"
            ) from exc
        object.__setattr__(self, "zone", zone)
        if not isinstance(self.publishes, type) or not issubclass(self.publishes, Event):
            raise DefinitionError(f"schedule {self.name!r}: publishes must be an Event model")
        if self.publishes.kind is not MessageKind.EVENT:  # pragma: no cover - Event's ClassVar
            raise DefinitionError(f"schedule {self.name!r}: publishes must be an event")
        try:
            self.next_after(_PROBE)
        except CronSimError as exc:
            raise DefinitionError(
                f"schedule {self.name!r}: cron expression {self.cron!r} is not valid ({exc}); "
                "five fields (minute hour day month weekday) or six (second first)"
            ) from exc
        except StopIteration as exc:
            raise DefinitionError(
                f"schedule {self.name!r}: cron expression {self.cron!r} never matches"
            ) from exc

    # -- slot arithmetic (times in and out are aware; out in UTC) ---------------------

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after ``moment``.

        Raises ``StopIteration`` when the expression matches nothing in the next 50 years."""
        local = moment.astimezone(self.zone)
        return _utc(next(CronSim(self.cron, local)))

    def latest_at(self, moment: datetime) -> datetime | None:
        """The last slot at or before ``moment`` (``None`` when none in the past 50 years)."""
        local = moment.astimezone(self.zone)
        # cronsim steps back from the whole second; a fraction of a second is the first step
        # back, so a slot exactly at ``moment`` counts (hence the microsecond added).
        if local.microsecond == 0:
            local = local.replace(microsecond=1)
        try:
            return _utc(next(CronSim(self.cron, local, reverse=True)))
        except StopIteration:
            return None

    def local(self, slot: datetime) -> datetime:
        """``slot`` in the schedule's time zone (what ``event`` is given)."""
        return slot.astimezone(self.zone)

    def build(self, slot: datetime) -> E:
        """The event of ``slot``; ``DefinitionError`` if ``event`` returns another type."""
        made = self.event(self.local(slot))
        if not isinstance(made, self.publishes):
            raise DefinitionError(
                f"schedule {self.name!r} built a {type(made).__name__}, "
                f"not the {self.publishes.__name__} it declares"
            )
        return made


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def slot_event_id(app: str, schedule: str, slot: datetime) -> str:
    """The id of the event a slot publishes: derived from the app, the schedule and the
    slot, so a slot published twice (by two processes, or a relay's retry) is the same
    message to every consumer."""
    instant = slot.astimezone(UTC).isoformat()
    return str(uuid.uuid5(ID_NAMESPACE, f"schedule:{app}:{schedule}:{instant}"))


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do about one schedule at one moment: fire ``fire`` (or nothing), skipping
    ``missed`` older slots, then wait for ``after`` to pass."""

    fire: datetime | None
    after: datetime
    """The newest moment dealt with: the next slot to fire is the first one after it."""
    missed: bool = False
    """Slots older than ``fire`` (or all due ones, when ``fire`` is ``None``) were skipped."""


def plan_start(schedule: Schedule[Any], base: datetime, now: datetime) -> Plan:
    """At a coordinator's start-up: ``base`` is the newest slot fired (or, for a schedule
    that never fired, when it was first registered). Slots in ``(base, now]`` were missed
    while no coordinator ran: with ``catch_up`` the newest of them fires, once; else none."""
    newest = schedule.latest_at(now)
    after = max(base, now)
    if newest is None or newest <= base:
        return Plan(None, after)
    if schedule.catch_up:
        return Plan(newest, after, missed=schedule.next_after(base) < newest)
    return Plan(None, after, missed=True)


def plan_tick(schedule: Schedule[Any], after: datetime, now: datetime) -> Plan:
    """While running: the newest slot in ``(after, now]`` fires, late or not. Older ones in
    there (the process was held up past a whole period: a long pause, Postgres away) are
    skipped rather than fired in a burst, so at most one slot fires late."""
    newest = schedule.latest_at(now)
    if newest is None or newest <= after:
        return Plan(None, after)
    return Plan(newest, newest, missed=schedule.next_after(after) < newest)
