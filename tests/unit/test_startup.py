"""``startup.until_started``: retries what may pass, says so once per attempt, obeys stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.errors import SchemaNotMigratedError, StoreUnavailableError
from bus_orchestrator.startup import until_started

SETTINGS = Settings(database_url="postgresql://root@db.example:5432/test")


class Attempts:
    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.started = 0
        self.undone = 0

    async def start(self) -> None:
        self.started += 1
        if self.failures:
            raise self.failures.pop(0)

    async def undo(self) -> None:
        self.undone += 1


def refused() -> StoreUnavailableError:
    error = StoreUnavailableError("Postgres unavailable")
    error.__cause__ = ConnectionRefusedError(111, "refused")
    return error


async def test_it_retries_an_unavailable_store_saying_so_once_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts = Attempts([refused(), refused()])
    with caplog.at_level(logging.WARNING, logger="bus_orchestrator.startup"):
        started = await until_started(
            attempts.start,
            attempts.undo,
            settings=SETTINGS,
            stop=asyncio.Event(),
            first_wait=0.01,
        )
    assert started is True
    assert (attempts.started, attempts.undone) == (3, 2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert all(
        line.startswith("waiting for Postgres at db.example:5432: connection refused; retrying in ")
        for line in lines
    )


async def test_an_error_that_waiting_cannot_fix_is_raised_at_once() -> None:
    attempts = Attempts([SchemaNotMigratedError("run migrate")])
    with pytest.raises(SchemaNotMigratedError):
        await until_started(attempts.start, attempts.undo, settings=SETTINGS, stop=asyncio.Event())
    assert (attempts.started, attempts.undone) == (1, 1)


async def test_stop_ends_an_attempt_that_hangs() -> None:
    undone = asyncio.Event()
    stop = asyncio.Event()

    async def hang() -> None:
        stop.set()  # SIGTERM arrives while the connection attempt hangs
        await asyncio.Event().wait()

    async def undo() -> None:
        undone.set()

    started = await asyncio.wait_for(
        until_started(hang, undo, settings=SETTINGS, stop=stop), timeout=30
    )
    assert started is False
    assert undone.is_set()


async def test_stop_during_the_backoff_ends_the_wait() -> None:
    stop = asyncio.Event()
    attempts = Attempts([refused()])

    async def undo() -> None:
        await attempts.undo()
        stop.set()  # SIGTERM arrives after the first attempt failed, during the backoff

    started = await asyncio.wait_for(
        until_started(attempts.start, undo, settings=SETTINGS, stop=stop, first_wait=3600),
        timeout=30,
    )
    assert started is False
    assert attempts.started == 1
