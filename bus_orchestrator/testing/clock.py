"""A clock a test moves by hand: nothing in the harness reads the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """A ``ports.Clock`` that stands still until ``advance`` moves it."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        if start.tzinfo is None:
            raise ValueError("the clock's start must be timezone-aware")
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by ``delta`` (never back); returns the new time."""
        if delta < timedelta(0):
            raise ValueError("time does not run backwards")
        self.now += delta
        return self.now
