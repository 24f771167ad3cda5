"""A step's reply handlers are checked by mypy against its success types: mypy --strict
runs on ``tests/typecheck/reply_handlers.py``, whose lines that must not pass say so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

SNIPPETS = Path(__file__).parents[1] / "typecheck" / "reply_handlers.py"
MARK = re.compile(r"#\s*error:\s*([\w-]+)\s*$")
REPORTED = re.compile(r"^[^:]+:(\d+): error: .*\[([\w-]+)\]$")
CONFIG = "[mypy]\nstrict = True\npython_version = 3.11\nplugins = pydantic.mypy\n"


def _expected() -> set[tuple[int, str]]:
    lines = SNIPPETS.read_text().splitlines()
    return {(n, m.group(1)) for n, line in enumerate(lines, 1) if (m := MARK.search(line))}


def test_mypy_checks_reply_handlers_against_the_success_types(tmp_path: Path) -> None:
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG)
    out, err, status = api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            "--hide-error-context",
            "--no-pretty",
            str(SNIPPETS),
        ]
    )
    reported = set()
    for line in out.splitlines():
        found = REPORTED.match(line)
        if found is None:
            pytest.fail(f"mypy said what this test cannot read: {line}\n{err}")
        reported.add((int(found.group(1)), found.group(2)))
    expected = _expected()
    assert len(expected) >= 6  # the marks are found
    assert reported == expected, out
    assert status == 1
