"""The built wheel installs the engine only: no generic top-level names such as
``contracts``, ``sagas`` or ``adapters`` that would shadow a team's own packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_the_wheel_holds_the_engine_and_nothing_else(tmp_path: Path) -> None:
    subprocess.run(  # noqa: S603 - the test's own fixed command
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=280,
    )
    [wheel] = tmp_path.glob("bus_orchestrator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in top_level if t.endswith(".dist-info")}
    assert top_level - dist_info == {"bus_orchestrator"}
    # and what the engine needs at run time is in it
    assert "bus_orchestrator/store/migrations/0001_initial.sql" in names
    assert "bus_orchestrator/py.typed" in names
    assert "bus_orchestrator/testing/pytest_plugin.py" in names  # the public test harness
