"""``bus-orchestrator new DIR``: a project for a new team, whose tests pass at once.

The project is a package of its own (named after the folder) with contracts, a saga,
adapters over fakes, the application object, and tests that run the saga in memory with
``bus_orchestrator.testing``. The files come from ``template/``, filled in with
``string.Template``.
"""

from __future__ import annotations

import keyword
import re
from importlib.resources import files
from pathlib import Path
from string import Template

from bus_orchestrator.errors import DefinitionError

FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "{package}/__init__.py": "package_init.py.tmpl",
    "{package}/contracts.py": "contracts.py.tmpl",
    "{package}/sagas.py": "sagas.py.tmpl",
    "{package}/adapters.py": "adapters.py.tmpl",
    "{package}/app.py": "app.py.tmpl",
    "conftest.py": "conftest.py.tmpl",
    "tests/__init__.py": "empty.tmpl",
    "tests/test_onboarding.py": "test_onboarding.py.tmpl",
}
_PACKAGE = re.compile(r"^[a-z][a-z0-9_]*$")


def package_name(target: Path) -> str:
    """The Python package a project folder gets: its name, lower-case, '-' as '_'."""
    name = target.resolve().name.lower().replace("-", "_")
    if not _PACKAGE.match(name) or keyword.iskeyword(name) or len(name) > 40:
        raise DefinitionError(
            f"{target.name!r} does not make a package name: use lower-case letters, digits, "
            "'-' or '_', starting with a letter"
        )
    return name


def scaffold(target: Path) -> list[Path]:
    """Write a new project into ``target`` (absent, or an empty folder); the files written."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DefinitionError(f"{target} exists and is not an empty folder")
    package = package_name(target)
    values = {
        "package": package,
        "app_name": package.replace("_", "-"),
        "dist_name": package.replace("_", "-"),
    }
    folder = files("bus_orchestrator.scaffold").joinpath("template")
    written = []
    for relative, template in FILES.items():
        path = target / relative.format(package=package)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = Template(folder.joinpath(template).read_text(encoding="utf-8"))
        path.write_text(text.substitute(values), encoding="utf-8")
        written.append(path)
    return written
