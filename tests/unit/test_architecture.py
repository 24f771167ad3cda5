"""The direction of imports, checked so it cannot rot.

core/ is pure: no I/O libraries and nothing from the engine's edges. contracts/ and sagas/
see only the core (and pydantic); the example adapters use the adapter kit, not the runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IO_LIBRARIES = {"aio_pika", "aiormq", "asyncpg", "opentelemetry", "httpx", "fastapi", "uvicorn"}
ENGINE_EDGES = {
    "bus_orchestrator.store",
    "bus_orchestrator.transport",
    "bus_orchestrator.runtime",
    "bus_orchestrator.adapters",
    "bus_orchestrator.api",
    "bus_orchestrator.cli",
    "bus_orchestrator.demo",
}


def imports_of(folder: str) -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((path.name, node.module))
    return found


def violations(folder: str, forbidden: set[str]) -> list[str]:
    return [
        f"{file}: {module}"
        for file, module in imports_of(folder)
        if any(module == f or module.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("bus_orchestrator/core", IO_LIBRARIES | ENGINE_EDGES | {"contracts", "sagas", "adapters"}),
        ("contracts", IO_LIBRARIES | ENGINE_EDGES | {"sagas", "adapters"}),
        ("sagas", IO_LIBRARIES | ENGINE_EDGES | {"adapters"}),
        ("adapters", {"bus_orchestrator.runtime", "bus_orchestrator.api", "sagas"}),
        # the whole engine, not only its core: a team's app is loaded by reference
        ("bus_orchestrator", {"contracts", "sagas", "adapters", "example"}),
    ],
)
def test_imports_point_inwards(folder: str, forbidden: set[str]) -> None:
    assert (ROOT / folder).is_dir()
    assert violations(folder, forbidden) == []


def test_the_check_sees_imports() -> None:
    """Guard against a check that passes because it reads nothing."""
    modules = {module for _, module in imports_of("bus_orchestrator/core")}
    assert "pydantic" in modules and "bus_orchestrator.core.state" in modules
