"""The README's "Testing your saga" runs as written: its code blocks are the files of a
test suite, run by pytest in a process of its own (so the README cannot rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n# (?P<name>[\w.]+\.py)\n(?P<code>.*?)```", re.DOTALL)


def readme_files() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Testing your saga\n", 1)[1].split("\n## ", 1)[0]
    return {m["name"]: m["code"] for m in BLOCK.finditer(section)}


def test_the_readme_test_of_a_saga_passes(tmp_path: Path) -> None:
    files = readme_files()
    assert sorted(files) == ["conftest.py", "test_order_to_cash.py"]
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    test_lines = [line for line in files["test_order_to_cash.py"].splitlines() if line.strip()]
    assert len(test_lines) <= 32  # a short, complete test is the point of the section
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
