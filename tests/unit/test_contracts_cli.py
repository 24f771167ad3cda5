"""`bus-orchestrator contracts export|check` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bus_orchestrator.cli import app

runner = CliRunner(env={"BUS_APP": "example:create_app"})


def export(to: Path) -> None:
    result = runner.invoke(app, ["contracts", "export", "--out", str(to)])
    assert result.exit_code == 0, result.output
    assert (to / "asyncapi.yaml").is_file()


def test_check_against_an_identical_snapshot_passes(tmp_path: Path) -> None:
    export(tmp_path)
    result = runner.invoke(app, ["contracts", "check", "--against", str(tmp_path / "schemas")])
    assert result.exit_code == 0, result.output
    assert "No contract changes" in result.output


def test_check_fails_on_a_breaking_change_and_names_it(tmp_path: Path) -> None:
    export(tmp_path)
    # The baseline had a field the current contract no longer has: a removed field.
    path = tmp_path / "schemas" / "payments.charge_payment.v1.json"
    schema = json.loads(path.read_text())
    schema["properties"]["installments"] = {"type": "integer"}
    path.write_text(json.dumps(schema))
    result = runner.invoke(
        app, ["contracts", "check", "--against", str(tmp_path / "schemas"), "--json"]
    )
    assert result.exit_code == 1, result.output
    found = json.loads(result.output)
    assert found["breaking"] == 1
    [change] = found["changes"]
    assert (change["message_type"], change["path"], change["kind"]) == (
        "payments.charge_payment.v1",
        "installments",
        "field_removed",
    )


def test_check_against_an_unknown_ref_is_a_clear_error() -> None:
    result = runner.invoke(app, ["contracts", "check", "--against", "no-such-ref-x1"])
    assert result.exit_code == 2


def test_without_an_app_the_command_says_how_to_name_one() -> None:
    result = CliRunner(env={"BUS_APP": None}).invoke(app, ["contracts", "export"])
    assert result.exit_code == 2
    assert "--app module:attribute (or BUS_APP)" in result.output


def test_check_against_a_baseline_without_schemas_fails_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("no schemas here")
    result = runner.invoke(app, ["contracts", "check", "--against", str(empty)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{empty} holds no schemas (*.json): point --against at a folder or git ref with the "
        "schemas `bus-orchestrator contracts export` writes"
    ]
