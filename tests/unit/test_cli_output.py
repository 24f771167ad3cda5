"""`sagas show|list` output: one JSON shape per command, tsv, and tables of 80 columns."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from bus_orchestrator.app import App
from bus_orchestrator.cli import app
from bus_orchestrator.config import Settings
from bus_orchestrator.core import Command, Event, Reply, SagaDefinition, Step
from bus_orchestrator.store.memory import InMemorySagaStore
from bus_orchestrator.testing import SagaHarness


class Signed(Event):
    message_type: ClassVar[str] = "tests.output.signed.v1"
    contract_id: str


class File(Command):
    message_type: ClassVar[str] = "tests.output.file.v1"
    contract_id: str


class Filed(Reply):
    message_type: ClassVar[str] = "tests.output.filed.v1"


class Contract(BaseModel):
    contract_id: str


def _saga(name: str) -> SagaDefinition[Any]:
    return SagaDefinition(
        name=name,
        data_model=Contract,
        started_by=Signed,
        correlate=lambda e: e.contract_id,
        initial_data=lambda e: Contract(contract_id=e.contract_id),
        steps=(
            Step(
                name="file",
                command=lambda d: File(contract_id=d.contract_id),
                sends=File,
                succeeds_on=(Filed,),
            ),
        ),
    )


APP = App("output", sagas=[_saga("archiving"), _saga("billing_with_a_rather_long_saga_name")])
"""Two sagas started by one event: they share its correlation id."""


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI on an in-memory store holding the sagas of two signed contracts."""
    harness = SagaHarness(APP)

    async def start() -> None:
        for contract in ("k-1", "k-2"):
            await harness.publish(Signed(contract_id=contract))
        await harness.run_until_idle()

    asyncio.run(start())
    store: InMemorySagaStore = harness.store

    @asynccontextmanager
    async def open_store(settings: Settings, pool_size: int = 2) -> AsyncIterator[Any]:
        yield store

    monkeypatch.setattr("bus_orchestrator.store.session.open_store", open_store)
    return CliRunner(env={"BUS_APP": f"{__name__}:APP", "COLUMNS": "80"})


def test_show_of_a_shared_correlation_id_is_an_error_listing_the_candidates(
    runner: CliRunner,
) -> None:
    for extra in ([], ["--json"], ["--output", "tsv"]):
        result = runner.invoke(app, ["sagas", "show", "k-1", *extra])
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith("'k-1' is the correlation id of 2 sagas: archiving/k-1 (")
        assert "billing_with_a_rather_long_saga_name/k-1 (" in line
        assert line.endswith("show one by its saga id or as TYPE/CORRELATION_ID")


def test_show_by_type_and_correlation_id_is_one_object(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sagas", "show", "archiving/k-1", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert isinstance(view, dict)
    assert (view["saga_type"], view["correlation_id"]) == ("archiving", "k-1")
    by_id = runner.invoke(app, ["sagas", "show", view["saga_id"], "--output", "json"])
    assert json.loads(by_id.stdout) == view


def test_list_json_is_a_list_and_tsv_a_header_and_a_line_per_saga(runner: CliRunner) -> None:
    listed = json.loads(runner.invoke(app, ["sagas", "list", "-o", "json"]).stdout)
    assert isinstance(listed, list) and len(listed) == 4
    lines = runner.invoke(app, ["sagas", "list", "--output", "tsv"]).stdout.splitlines()
    assert lines[0].split("\t") == [
        "saga_id",
        "saga_type",
        "correlation_id",
        "status",
        "created_at",
        "updated_at",
        "failure",
    ]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == [v["saga_id"] for v in listed]
    assert all(len(r) == 7 and r[3] == "running" and r[6] == "" for r in rows)
    shown = runner.invoke(app, ["sagas", "show", "archiving/k-2", "-o", "tsv"]).stdout
    assert shown.splitlines()[0] == lines[0] and len(shown.splitlines()) == 2


def test_the_list_table_fits_80_columns_without_colour_or_boxes(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sagas", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SAGA", "STATUS", "UPDATED", "FAILURE"]
    assert len(lines) == 5
    assert all(len(line) <= 80 for line in lines)
    assert "\x1b" not in result.stdout and "│" not in result.stdout
    assert any(line.startswith("archiving/k-1 ") for line in lines)


def test_json_and_another_output_disagree(runner: CliRunner) -> None:
    result = runner.invoke(app, ["sagas", "list", "--json", "--output", "tsv"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "--json and --output tsv disagree: give one of them"
