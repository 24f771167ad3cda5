"""An app of schedules alone, for the schedule tests (in process, and as ``--app
tests.e2e.schedule_app:create_app`` for ``bus-orchestrator run`` processes).

Its two schedules share one cron expression (``TEST_SCHEDULE_CRON``, default every
second): ``caught`` catches up a missed slot at start-up, ``skipped`` does not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from bus_orchestrator.app import App
from bus_orchestrator.core.messages import Event
from bus_orchestrator.core.schedule import Schedule

NAME = "sched-test"
EVERY_SECOND = "* * * * * *"


class Ticked(Event):
    message_type: ClassVar[str] = "tests.schedule_ticked.v1"
    schedule: str
    slot: str


def ticked(name: str) -> Callable[[datetime], Ticked]:
    return lambda slot: Ticked(schedule=name, slot=slot.isoformat())


def schedules(cron: str = EVERY_SECOND) -> list[Schedule[Ticked]]:
    return [
        Schedule("caught", cron, Ticked, ticked("caught"), catch_up=True),
        Schedule("skipped", cron, Ticked, ticked("skipped"), timezone="Europe/Berlin"),
    ]


def create_app() -> App:
    return App(NAME, schedules=schedules(os.environ.get("TEST_SCHEDULE_CRON", EVERY_SECOND)))
