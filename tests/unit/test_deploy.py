"""deploy/ cannot be built here (no Docker engine): check what can be checked statically."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from bus_orchestrator.app import load_app
from bus_orchestrator.cli import app as cli

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_context() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copied = []
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, _ = shlex.split(line)[1:]
            copied += sources
    assert "example.py" in copied and "bus_orchestrator" in copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source


def test_the_image_names_an_app_that_loads() -> None:
    [reference] = re.findall(r"^ENV BUS_APP=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert load_app(reference).name == "order-to-cash"


def test_compose_runs_commands_the_cli_has() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    commands = {c.name or c.callback.__name__ for c in cli.registered_commands}  # type: ignore[union-attr]
    checked = []
    for name, service in compose["services"].items():
        if "command" in service and service.get("image", "").startswith("bus-orchestrator"):
            assert service["command"][0] in commands, name
            checked.append(service["command"][0])
    assert sorted(checked) == ["adapters", "migrate", "run"]
