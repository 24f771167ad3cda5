"""`sagas diagram` output passes Mermaid's own parser, and Mermaid reads it as we meant.

Mermaid 11's flowchart parser runs headless under Node, with jsdom standing in for the
browser's DOM (nothing is rendered, so no browser is needed). It is installed from npm into
``.cache/mermaid-parser`` (git-ignored) on first use. Beyond "it parses", the nodes, shapes,
edges and subgraph members Mermaid finds must be those ``tests/unit/flowchart.py`` reads,
so that the unit tests' assertions hold for what a reader of the diagram sees.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus_orchestrator.core import SagaDefinition
from bus_orchestrator.diagram import diagram
from example import create_onboarding_app
from sagas import order_to_cash
from tests.e2e.payouts import payout_saga
from tests.unit import test_diagram_language as language
from tests.unit.flowchart import Flowchart, parse
from tests.unit.test_branches import SAGA as BRANCHING

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "mermaid" / "parse.mjs"
CACHE = ROOT / ".cache" / "mermaid-parser"
PACKAGES = ("mermaid@11", "jsdom@29")
INSTALL_TIMEOUT = 150
STROKES = {"normal": "-->", "dotted": "-.->"}

DEFINITIONS: dict[str, SagaDefinition[Any, Any]] = {
    "order_to_cash": order_to_cash.build(),
    "onboarding": create_onboarding_app().sagas[0],
    "identity_verification": create_onboarding_app().sagas[1],
    "branching": BRANCHING,
    "retrying": language.RETRYING,
    "only_transient": language.ONLY_TRANSIENT,
    "waiting": language.WAITING,
    "first_wait": language.FIRST_WAIT,
    "child": language.CHILD,
    "plain_child": language.PLAIN_CHILD,
    "parallel": language.PARALLEL,
    "undone_by_one": language.UNDONE_BY_ONE,
    "nothing_to_undo": language.NOTHING_TO_UNDO,
    "locked": language.LOCKED,
    "everything": language.EVERYTHING,
    "suspending": payout_saga(),
}


def _install(npm: str) -> Path:
    """``node_modules`` holding Mermaid and jsdom, installed once per cache folder."""
    CACHE.mkdir(parents=True, exist_ok=True)
    marker = CACHE / "installed"  # written last: a half-done install is redone
    wanted = " ".join(PACKAGES) + "\n"
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel runs wait for the first one's install
        if not marker.is_file() or marker.read_text() != wanted:
            try:
                done = subprocess.run(  # noqa: S603 - fixed arguments
                    [
                        npm,
                        "install",
                        "--no-audit",
                        "--no-fund",
                        "--ignore-scripts",
                        "--prefix",
                        str(CACHE),
                        *PACKAGES,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"npm install {' '.join(PACKAGES)} took over {INSTALL_TIMEOUT}s")
            if done.returncode != 0:
                # Not a skip: CI has the registry, and a silent skip would hide the check.
                pytest.fail(
                    f"npm install {' '.join(PACKAGES)} failed ({done.returncode}):\n{done.stderr}"
                )
            marker.write_text(wanted)
    return CACHE / "node_modules"


@pytest.fixture(scope="module")
def mermaid_modules() -> Iterator[Path]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run Mermaid's parser (install Node.js >= 20)")
    yield _install(npm)


def mermaid_read(node_modules: Path, texts: list[str]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(  # noqa: S603 - fixed arguments
        [node, str(SCRIPT), str(node_modules)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"parse.mjs failed:\n{done.stderr}"
    results: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(results) == len(texts)
    return results


def as_mermaid_sees_it(chart: Flowchart) -> dict[str, Any]:
    """Our reading of a chart, in the form of parse.mjs's (Mermaid writes ``<br>``)."""

    def text(label: str) -> str:
        return label.replace("<br/>", "<br>")

    return {
        "diagram": "flowchart-v2",
        "nodes": {
            node: {"shape": chart.shapes[node], "label": text(label)}
            for node, label in chart.nodes.items()
        },
        "edges": [
            [source, stroke, text(label), target]
            for source, arrow, label, target in chart.edges
            for stroke in (s for s, a in STROKES.items() if a == arrow)
        ],
        "subgraphs": {
            subgraph: {"title": title, "members": chart.members[subgraph]}
            for subgraph, title in chart.subgraphs.items()
        },
    }


@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
def test_every_construct_parses_and_mermaid_reads_what_we_meant(mermaid_modules: Path) -> None:
    texts = {name: diagram(definition) for name, definition in DEFINITIONS.items()}
    results = mermaid_read(mermaid_modules, list(texts.values()))
    for (name, text), result in zip(texts.items(), results, strict=True):
        assert "error" not in result, f"{name}: Mermaid cannot parse it:\n{result['error']}"
        assert result == as_mermaid_sees_it(parse(text)), name


@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
def test_the_parser_reports_a_broken_diagram(mermaid_modules: Path) -> None:
    """Guard against a check that passes because it parses nothing."""
    text = diagram(language.EVERYTHING)
    unbalanced = text.replace('fork_checks{{"checks: all start"}}', 'fork_checks{{"checks"}')
    reserved = text.replace("step_signed", "end")  # a node may not be called end

    whole, broken, clash = mermaid_read(mermaid_modules, [text, unbalanced, reserved])

    assert "error" not in whole
    assert "Parse error" in broken["error"]
    assert "Parse error" in clash["error"]
