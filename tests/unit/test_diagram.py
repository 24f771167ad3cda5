"""`bus-orchestrator sagas diagram`: a definition drawn as a Mermaid flowchart."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bus_orchestrator.cli import app
from bus_orchestrator.core import END, SagaDefinition, Step
from bus_orchestrator.diagram import diagram
from bus_orchestrator.errors import DefinitionError
from example import create_onboarding_app
from sagas import order_to_cash
from tests.unit.flowchart import parse
from tests.unit.test_branches import SAGA as BRANCHING
from tests.unit.test_branches import Review

README = Path(__file__).resolve().parents[2] / "README.md"
runner = CliRunner(env={"BUS_APP": "example:create_app"})


def test_the_example_shows_every_step_command_compensation_and_edge() -> None:
    chart = parse(diagram(order_to_cash.build()))
    nodes, edges = chart.nodes, set(chart.edges)
    assert nodes["start"] == "orders.order_placed.v1"
    assert nodes["step_reserve_stock"] == "reserve_stock<br/>inventory.reserve_stock.v1"
    assert nodes["step_charge_payment"] == "charge_payment<br/>payments.charge_payment.v1"
    assert nodes["step_create_shipment"] == "create_shipment<br/>shipping.create_shipment.v1"
    assert nodes["undo_charge_payment"] == "undo charge_payment<br/>payments.refund_payment.v1"
    assert nodes["undo_reserve_stock"] == "undo reserve_stock<br/>inventory.release_stock.v1"
    assert nodes["reaction_0"] == "orders.order_cancelled.v1"
    assert nodes["cancel"] == "saga.order_to_cash.cancel_requested.v1"
    assert "undo_create_shipment" not in nodes  # no compensation declared
    assert edges == {
        ("start", "-->", "", "step_reserve_stock"),
        # forward, on success
        ("step_reserve_stock", "-->", "inventory.stock_reserved.v1", "step_charge_payment"),
        ("step_charge_payment", "-->", "payments.payment_charged.v1", "step_create_shipment"),
        ("step_create_shipment", "-->", "shipping.shipment_created.v1", "completed"),
        # a failure undoes the steps before; a timeout the step itself too
        ("step_reserve_stock", "-->", "inventory.stock_unavailable.v1", "compensated"),
        ("step_reserve_stock", "-->", "timeout 30s, 2 attempts", "undo_reserve_stock"),
        ("step_charge_payment", "-->", "payments.payment_declined.v1", "undo_reserve_stock"),
        ("step_charge_payment", "-->", "timeout 30s, 2 attempts", "undo_charge_payment"),
        ("step_create_shipment", "-->", "shipping.shipment_rejected.v1", "undo_charge_payment"),
        # create_shipment has no compensation: its timeout undoes the payment first
        ("step_create_shipment", "-->", "timeout 30s, 2 attempts", "undo_charge_payment"),
        # compensations, dashed, in reverse order
        ("undo_charge_payment", "-.->", "payments.payment_refunded.v1", "undo_reserve_stock"),
        ("undo_reserve_stock", "-.->", "inventory.stock_released.v1", "compensated"),
        ("undo_charge_payment", "-.->", "timeout 30s, 3 attempts", "failed"),
        ("undo_reserve_stock", "-.->", "timeout 30s, 3 attempts", "failed"),
        # the cancellation may compensate whatever was done
        ("reaction_0", "-.->", "may compensate", "compensation"),
        # and so does the saga's own cancel event
        ("cancel", "-.->", "compensates", "compensation"),
    }


def test_declared_branches_are_drawn_and_an_undeclared_one_shows_its_default() -> None:
    edges = set(parse(diagram(BRANCHING)).edges)
    assert ("step_score", "-->", "tests.scored.v1 default", "step_review") in edges

    score = dataclasses.replace(BRANCHING.steps[0], branches=("review", "welcome", END))
    declared = dataclasses.replace(BRANCHING, steps=(score, *BRANCHING.steps[1:]))
    assert parse(diagram(declared)).edges_from("step_score") == {
        ("tests.scored.v1", "step_review"),
        ("tests.scored.v1", "step_welcome"),
        ("tests.scored.v1", "completed"),
        ("timeout 5s, 2 attempts", "compensated"),  # nothing to undo
    }
    # no compensation anywhere: no subgraph, and the reaction leads to the end
    text = diagram(declared)
    assert "subgraph" not in text
    assert '    reaction_0 -.->|"may compensate"| compensated' in text
    assert '    cancel -.->|"compensates"| compensated' in text


def test_branches_must_name_steps_and_need_a_next() -> None:
    score = BRANCHING.steps[0]
    with pytest.raises(DefinitionError, match=r"branches to unknown steps \['nope'\]"):
        dataclasses.replace(
            BRANCHING,
            steps=(dataclasses.replace(score, branches=("nope",)), *BRANCHING.steps[1:]),
        )
    lone = Step(
        name="review",
        command=lambda d: Review(applicant=d.applicant),
        succeeds_on=BRANCHING.steps[1].succeeds_on,
        branches=("welcome",),
    )
    with pytest.raises(DefinitionError, match="declares branches but has no next"):
        dataclasses.replace(BRANCHING, steps=(score, lone, BRANCHING.steps[2]))


def test_the_cli_prints_the_diagram_of_the_newest_version_or_the_one_asked() -> None:
    result = runner.invoke(app, ["sagas", "diagram", "order_to_cash"])
    assert result.exit_code == 0, result.output
    assert result.output == diagram(order_to_cash.build())
    asked = runner.invoke(app, ["sagas", "diagram", "order_to_cash", "--version", "1"])
    assert asked.exit_code == 0 and asked.output == result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "app 'order-to-cash' has no saga 'nope' (it has: order_to_cash)"),
        (["order_to_cash", "--version", "2"], "saga 'order_to_cash' has no version 2 (it has: 1)"),
    ],
)
def test_an_unknown_saga_or_version_is_a_one_line_error(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["sagas", "diagram", *args])
    assert result.exit_code == 1
    assert result.output.strip() == message


@pytest.mark.parametrize(
    ("name", "definition", "reference"),
    [
        ("order_to_cash", lambda: order_to_cash.build(), "example:create_app"),
        ("onboarding", lambda: create_onboarding_app().sagas[0], "example:create_onboarding_app"),
    ],
)
def test_the_readme_shows_the_examples_current_diagrams(
    name: str, definition: Callable[[], SagaDefinition[Any, Any]], reference: str
) -> None:
    readme = README.read_text()
    found = re.search(rf"<!-- sagas diagram {name}:.*?-->\n```mermaid\n(.*?)```", readme, re.S)
    assert found, f"README.md lost its {name} diagram"
    assert found[1] == diagram(definition()), (
        f"README.md's {name} diagram is stale: paste the output of "
        f"`bus-orchestrator sagas diagram {name} --app {reference}`"
    )
