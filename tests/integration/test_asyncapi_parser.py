"""The committed AsyncAPI document passes the reference parser, ``@asyncapi/parser`` 3.

The parser validates the document against the AsyncAPI 3.0 schema, the AMQP bindings'
schemas and its own rules (operation messages belong to the operation's channel, ...). It
is installed from npm into ``.cache/asyncapi-parser`` (git-ignored) on first use.
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

from contracts import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "contracts" / "asyncapi.yaml"
SCRIPT = ROOT / "tests" / "asyncapi" / "validate.mjs"
CACHE = ROOT / ".cache" / "asyncapi-parser"
PACKAGE = "@asyncapi/parser@3"
INSTALL_TIMEOUT = 150
ERROR, WARNING = 0, 1  # Spectral severities; 2 and 3 are information and hints
EXPECTED_OPERATIONS = 32
"""coordinator 11 receive + 8 send (with the saga's cancel request and its 3 end events),
inventory 2 + 3, payments 2 + 3, shipping 1 + 2."""


def _install(npm: str) -> Path:
    """``node_modules`` holding the parser, installed once per cache folder."""
    CACHE.mkdir(parents=True, exist_ok=True)
    marker = CACHE / "installed"  # written last: a half-done install is redone
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel runs wait for the first one's install
        if not marker.is_file():
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
                        PACKAGE,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=INSTALL_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"npm install {PACKAGE} took over {INSTALL_TIMEOUT}s")
            if done.returncode != 0:
                # Not a skip: CI has the registry, and a silent skip would hide the check.
                pytest.fail(f"npm install {PACKAGE} failed ({done.returncode}):\n{done.stderr}")
            marker.write_text(PACKAGE + "\n")
    return CACHE / "node_modules"


@pytest.fixture(scope="module")
def parser_modules() -> Iterator[Path]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run @asyncapi/parser (install Node.js >= 18)")
    yield _install(npm)


def parse(node_modules: Path, document: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(  # noqa: S603 - fixed arguments
        [node, str(SCRIPT), str(node_modules), str(document)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"validate.mjs failed:\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def described(diagnostics: list[dict[str, Any]]) -> str:
    return "\n".join(f"  [{d['code']}] {d['path']}: {d['message']}" for d in diagnostics)


@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
def test_committed_document_passes_the_asyncapi_parser(parser_modules: Path) -> None:
    result = parse(parser_modules, DOCUMENT)

    errors = [d for d in result["diagnostics"] if d["severity"] == ERROR]
    warnings = [d for d in result["diagnostics"] if d["severity"] == WARNING]
    assert not errors, (
        f"{DOCUMENT.name}: {len(errors)} errors\n{described(errors)}\n"
        f"warnings:\n{described(warnings)}"
    )
    if warnings:  # reported, not fatal: parser upgrades add advisory rules
        print(f"{DOCUMENT.name}: {len(warnings)} warnings\n{described(warnings)}")
    types = len(list(REGISTRY))
    assert result["channels"] == types
    assert result["messages"] == types
    assert result["operations"] == EXPECTED_OPERATIONS


@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
def test_the_parser_reports_a_broken_binding(parser_modules: Path, tmp_path: Path) -> None:
    """Guard against a check that passes because it validates nothing."""
    broken = tmp_path / "asyncapi.yaml"
    text = DOCUMENT.read_text()
    assert "deliveryMode: 2" in text
    broken.write_text(text.replace("deliveryMode: 2", "deliveryMode: 7", 1))

    result = parse(parser_modules, broken)

    errors = [d for d in result["diagnostics"] if d["severity"] == ERROR]
    assert any("deliveryMode" in d["path"] for d in errors), described(result["diagnostics"])
    assert result["channels"] is None
