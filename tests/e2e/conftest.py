"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.processes import Processes


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    """Commands started as processes; whatever a test leaves running is killed."""
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        await procs.kill_all()
