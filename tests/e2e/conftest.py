"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bus_orchestrator.adapters import Adapter
from bus_orchestrator.adapters.runner import run_adapters
from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.e2e.processes import Processes
from tests.integration.harness import migrated


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    """Commands started as processes; whatever a test leaves running is killed."""
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        await procs.kill_all()


@pytest.fixture
async def schema(settings: Settings, db_schema: str) -> str:
    await migrated(settings)
    return db_schema


class Adapters:
    """Example adapters running in the background until the test ends."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runs: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(self, adapters: Sequence[Adapter]) -> None:
        stop = asyncio.Event()
        self.runs.append((stop, asyncio.create_task(run_adapters(self.settings, adapters, stop))))

    async def stop(self) -> None:
        for stop, task in self.runs:
            stop.set()
            await task


@pytest.fixture
async def running_adapters(
    settings: Settings, schema: str, bus: TestBus
) -> AsyncIterator[Adapters]:
    adapters = Adapters(settings)
    try:
        yield adapters
    finally:
        await adapters.stop()
