"""Fixtures of the fault suite: its prerequisites, the services it breaks, its summary table.

On CI (``CI=true``) a missing prerequisite fails the test: a fault test skipped on a fresh
machine guards nothing. Elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bus_orchestrator.config import Settings
from bus_orchestrator.store.migrate import migrate
from tests.conftest import TestBus
from tests.faults.fleet import Fleet
from tests.faults.ledger import LEDGER_DDL
from tests.faults.services import LocalServices, missing_prerequisites
from tests.faults.summary import STASH, Row, table

SUMMARY_FILE = Path(".cache", "fault-summary.md")
"""Where the summary table is written too, under the rootdir (``.cache/`` is gitignored)."""


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def unmet(reason: str) -> None:
    """Fail on CI, skip elsewhere."""
    if on_ci():
        pytest.fail(f"fault suite prerequisite missing on CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fault_services(amqp_url: str, database_url: str) -> LocalServices:
    """The local RabbitMQ node and Postgres cluster that the test URLs name."""
    if missing := missing_prerequisites():
        unmet("; ".join(missing))
    services = LocalServices.from_urls(amqp_url, database_url)
    if (why := services.check()) is not None:
        unmet(why)
    return services


@pytest.fixture
async def ledger_schema(settings: Settings, db_schema: str) -> str:
    """This test's schema, migrated, with the fake systems' ledger."""
    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.database_schema}
    )
    try:
        await migrate(conn, settings.database_schema)
        await conn.execute(LEDGER_DDL)
    finally:
        await conn.close()
    return db_schema


@pytest.fixture
async def fleet(
    settings: Settings,
    fault_services: LocalServices,
    ledger_schema: str,
    bus: TestBus,
    tmp_path: Path,
) -> AsyncIterator[Fleet]:
    """This test's processes; stopped (or killed) before its queues and schema go, and the
    services mended whatever the test did to them."""
    processes = Fleet(settings, tmp_path)
    try:
        yield processes
    finally:
        try:
            fault_services.mend()
        finally:
            await processes.stop_all()


@pytest.fixture
def summary(request: pytest.FixtureRequest) -> Row:
    """This test's row of the summary table; the test fills it in as it counts."""
    row = Row(test=request.node.name.removeprefix("test_"))
    request.config.stash.setdefault(STASH, []).append(row)
    return row


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    rows = config.stash.get(STASH, [])
    if not rows:
        return
    text = table(rows)
    terminalreporter.section("fault suite summary")
    terminalreporter.write_line(text)
    path = config.rootpath / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    terminalreporter.write_line(f"(written to {path})")
