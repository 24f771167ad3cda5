"""``bus-orchestrator new``: a team's project, outside this repository, whose tests pass at
once with the harness and whose app runs with ``--app`` on the real broker and database."""

from __future__ import annotations

import asyncio
import compileall
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bus_orchestrator.config import Settings
from tests.conftest import TestBus
from tests.e2e.processes import Processes, cli, wait_for_consumers

pytestmark = pytest.mark.e2e

APP = "acme_onboarding.app:app"


@pytest.fixture
async def project(tmp_path: Path, settings: Settings) -> Path:
    target = tmp_path / "acme-onboarding"
    code, out, err = await cli(settings, "new", str(target))
    assert code == 0, err
    assert "bus-orchestrator run --app acme_onboarding.app:app" in out
    return target


def run_in(project: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the test's own fixed commands
        [sys.executable, "-m", *command],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_new_project_tests_pass_at_once_and_lint_clean(project: Path) -> None:
    assert sorted(p.name for p in (project / "acme_onboarding").iterdir()) == [
        "__init__.py",
        "adapters.py",
        "app.py",
        "contracts.py",
        "sagas.py",
    ]
    tests = await asyncio.to_thread(run_in, project, "pytest", "-q", "-p", "no:cacheprovider")
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "4 passed" in tests.stdout
    lint = await asyncio.to_thread(run_in, project, "ruff", "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr


async def test_the_new_project_runs_with_app_on_the_real_services(
    project: Path, settings: Settings, db_schema: str, bus: TestBus, processes: Processes
) -> None:
    env = {"BUS_APP": APP}
    queues = tuple(f"acme-onboarding.{q}" for q in ("coordinator", "adapter.crm", "adapter.mail"))
    bus.queues += [f"{settings.exchange_prefix}bus.{q}" for q in queues]  # removed after
    assert (await cli(settings, "migrate", cwd=project, **env))[0] == 0
    await processes.start(settings, "run", cwd=project, **env)
    await processes.start(settings, "adapters", cwd=project, **env)
    await wait_for_consumers(bus.connection, settings, queues)
    for customer, email in (("c-1", "ann@example.com"), ("c-2", "bounce@example.com")):
        data = json.dumps({"customer_id": customer, "email": email})
        code, _, err = await cli(
            settings,
            "publish",
            "acme_onboarding.customer_signed_up.v1",
            "--data",
            data,
            "--correlation-id",
            customer,
            cwd=project,
            **env,
        )
        assert code == 0, err
    wanted = {"c-1": "completed", "c-2": "compensated"}
    seen: dict[str, str] = {}
    for _ in range(150):
        for customer in wanted:
            code, out, _ = await cli(
                settings, "sagas", "show", customer, "--json", cwd=project, **env
            )
            if code == 0:
                seen[customer] = json.loads(out)["status"]
        if seen == wanted:
            break
        await asyncio.sleep(0.2)
    assert seen == wanted


async def test_new_refuses_a_folder_that_is_not_empty(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("mine")
    code, _, err = await cli(settings, "new", str(tmp_path / "taken"))
    assert code == 2 and "not an empty folder" in err
    code, _, err = await cli(settings, "new", str(tmp_path / "9lives"))
    assert code == 2 and "package name" in err


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*")
    }


async def test_contracts_check_works_from_an_installed_package_and_writes_nothing_there(
    project: Path, settings: Settings, tmp_path: Path
) -> None:
    env = {"BUS_APP": APP}
    code, _, err = await cli(settings, "contracts", "export", cwd=project, **env)
    assert code == 0, err
    # Installed as pip would: the package alone, compiled, in a folder on the path; the
    # check runs in a folder of its own, far from the project and its contracts/.
    site = tmp_path / "site-packages"
    shutil.copytree(project / "acme_onboarding", site / "acme_onboarding")
    compileall.compile_dir(site, quiet=1)
    before = _tree(site)
    elsewhere = tmp_path / "ci"
    elsewhere.mkdir()
    installed = {**env, "PYTHONPATH": str(site)}

    code, out, err = await cli(
        settings,
        "contracts",
        "check",
        "--against",
        str(project / "contracts" / "schemas"),
        cwd=elsewhere,
        **installed,
    )
    assert (code, out.strip()) == (0, "No contract changes."), err
    code, out, err = await cli(
        settings, "contracts", "check", "--against", str(elsewhere), cwd=elsewhere, **installed
    )
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "holds no schemas" in err
    assert _tree(site) == before
    assert list(elsewhere.iterdir()) == []
